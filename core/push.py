"""Push notifications for messages the user did not ask for (a reminder, a check-in).

`push_send` is called once per such message, after it is committed and sent to the sockets.
It never blocks nor fails the delivery: the backend runs on a thread of its own, and any
error it raises is logged (numbers only, never the preview) and dropped.

`PUSH_BACKEND` (a dotted path to a callable taking a `PushPayload`) picks the backend;
the default, `core.push.push_nothing`, does nothing. `core.push.push_webhook` POSTs the
payload as JSON to `PUSH_WEBHOOK_URL`, signed with HMAC-SHA256 of the exact body under
`PUSH_WEBHOOK_SECRET`, in `X-Companion-Signature: sha256=<hex>`, with a timeout of
`PUSH_WEBHOOK_TIMEOUT` seconds. The receiver (a push gateway: APNs, FCM...) checks the
signature over the raw body before it trusts anything in it.
"""

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass

import httpx
from django.conf import settings
from django.utils.module_loading import import_string

logger = logging.getLogger("companion.push")

PREVIEW_MAX_CHARS = 120
SIGNATURE_HEADER = "X-Companion-Signature"

# One thread: a slow gateway delays later pushes, never a delivery or a turn.
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="push")


@dataclass(frozen=True, slots=True)
class PushPayload:
    user_id: int
    conversation_id: int
    message_id: int
    origin: str  # "reminder" | "proactive"
    preview: str  # the message's first characters

    @classmethod
    def of(cls, *, user_id: int, conversation_id: int, message_id: int, origin: str, text: str) -> "PushPayload":
        preview = " ".join(text.split())
        if len(preview) > PREVIEW_MAX_CHARS:
            preview = preview[: PREVIEW_MAX_CHARS - 1].rstrip() + "…"
        return cls(user_id, conversation_id, message_id, origin, preview)


PushBackend = Callable[[PushPayload], None]


def push_send(payload: PushPayload) -> "Future[None]":
    """Hand the payload to the configured backend on the push thread; returns at once."""
    return _executor.submit(_push_run, payload)


def push_nothing(payload: PushPayload) -> None:
    """The default backend: no push service configured."""


def push_webhook(payload: PushPayload) -> None:
    """POST the payload, signed, to PUSH_WEBHOOK_URL; raises on a failure (`push_send` logs it)."""
    url: str = getattr(settings, "PUSH_WEBHOOK_URL", "")
    if not url:
        return
    body = json.dumps(asdict(payload), separators=(",", ":"), ensure_ascii=False).encode()
    response = httpx.post(
        url,
        content=body,
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: push_signature(body)},
        timeout=float(getattr(settings, "PUSH_WEBHOOK_TIMEOUT", 3.0)),
    )
    response.raise_for_status()


def push_signature(body: bytes, *, secret: str | None = None) -> str:
    """`sha256=<hex>`: HMAC-SHA256 of the body under PUSH_WEBHOOK_SECRET."""
    key = (secret if secret is not None else getattr(settings, "PUSH_WEBHOOK_SECRET", "")).encode()
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def _push_run(payload: PushPayload) -> None:
    ids = {"user_id": payload.user_id, "message_id": payload.message_id, "origin": payload.origin}
    try:
        backend: PushBackend = import_string(getattr(settings, "PUSH_BACKEND", "core.push.push_nothing"))
        backend(payload)
    except Exception as exc:
        # Never the preview, nor the gateway's answer (it may echo the body).
        logger.warning("push failed", extra={"data": {**ids, "error": type(exc).__name__}})
