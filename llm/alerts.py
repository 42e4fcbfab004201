"""Operator alerts: a provider incident is mailed to `ADMINS` once, and shown in the admin.

Two incidents are watched:

- `auth`: the provider rejects our key (401, `llm_auth`) or the key may not use the model
  (403, `llm_permission`). Every call fails until an operator acts. It ends with the next call
  that succeeds.
- `breaker`: the circuit breaker stays open, i.e. the probe sent after `LLM_BREAKER_RESET_SECONDS`
  failed and opened it again. It ends when a probe closes it.

"Once per incident" holds across processes: the incident's cache key (Redis with
`REDIS_URL`) is taken with `cache.add`, and only the process that takes it mails. The key
expires after `LLM_ALERT_REPEAT_SECONDS`, so an incident still going on then is mailed again;
the process that saw an incident end deletes it. Mail goes out on a thread of its own: a
slow SMTP server never holds up a reply. Nothing is logged or mailed with a key or a message.
"""

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.mail import mail_admins
from django.utils import timezone

logger = logging.getLogger("companion.llm")

AUTH = "auth"
BREAKER = "breaker"
INCIDENTS: dict[str, str] = {
    AUTH: "The language model provider rejects our API key, or the key may not use the model.",
    BREAKER: "The language model provider keeps failing: the circuit breaker stays open.",
}
_AUTH_OUTCOMES = frozenset({"llm_auth", "llm_permission"})

_known: set[str] = set()  # incidents this process saw open: the ones it closes when they end
_lock = threading.Lock()
_mailer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-alerts")


def call_outcome_observe(*, provider: str, model: str, outcome: str) -> None:
    """Called for every metered call (llm/usage.py `call_log`)."""
    if outcome in _AUTH_OUTCOMES:
        incident_open(AUTH, details={"provider": provider, "model": model, "error": outcome})
    elif outcome == "ok":
        incident_close(AUTH)


def breaker_transition_observe(*, provider: str, transition: str, failures: int) -> None:
    """Called by the circuit breaker (outside its lock): "reopened" after a failed probe, "closed"."""
    if transition == "reopened":
        incident_open(BREAKER, details={"provider": provider, "failures": failures})
    elif transition == "closed":
        incident_close(BREAKER)


def incident_open(kind: str, *, details: dict[str, Any]) -> bool:
    """Note the incident; mail it if no process has yet. True when this call sent the mail."""
    with _lock:
        _known.add(kind)
    timeout = int(getattr(settings, "LLM_ALERT_REPEAT_SECONDS", 6 * 3600))
    try:
        fresh = cache.add(_key(kind), timezone.now().isoformat(), timeout=timeout)
    except Exception:  # the cache (Redis) is down: better one mail per process than none
        logger.warning("llm.alert cache unavailable", exc_info=True)
        fresh = True
    if not fresh:
        return False
    logger.warning("llm.alert", extra={"data": {"incident": kind, **details}})
    lines = [INCIDENTS[kind], "", *(f"{name}: {value}" for name, value in details.items())]
    lines += ["", "Provider health is on the admin index page. `python manage.py llm_check` tells what to fix."]
    _mailer.submit(_mail_send, f"Language model: {kind} incident", "\n".join(lines))
    return True


def incident_close(kind: str) -> None:
    with _lock:
        if kind not in _known:
            return
        _known.discard(kind)
    try:
        cache.delete(_key(kind))
    except Exception:
        logger.warning("llm.alert cache unavailable", exc_info=True)
        return
    logger.warning("llm.alert.resolved", extra={"data": {"incident": kind}})


def incidents_open() -> dict[str, str]:
    """The incidents open now (any process), each with when it was first mailed (ISO 8601)."""
    try:
        found = cache.get_many([_key(kind) for kind in INCIDENTS])
    except Exception:
        return {}
    return {kind: str(found[_key(kind)]) for kind in INCIDENTS if _key(kind) in found}


def alerts_wait(*, timeout: float = 10.0) -> bool:
    """Wait until the mail queued so far is sent (tests); False on timeout."""
    try:
        _mailer.submit(lambda: None).result(timeout=timeout)
    except FutureTimeout:
        return False
    return True


def alerts_forget() -> None:
    """Forget what this process knows of incidents (tests; the cache is cleared separately)."""
    with _lock:
        _known.clear()


def _mail_send(subject: str, body: str) -> None:
    try:
        mail_admins(subject, body, fail_silently=False)
    except Exception:
        logger.warning("llm.alert mail failed", exc_info=True)


def _key(kind: str) -> str:
    return f"llm-alert:{kind}"
