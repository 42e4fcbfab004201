"""`/healthz` (the process serves) and `/readyz` (each part it depends on answers).

For an orchestrator's probes and an operator's first look: `/readyz` names each configured
part (the database; with `REDIS_URL` also Redis, the channel layer and the Celery broker)
with its state and how long it took to answer, 200 when all answer, 503 naming what is
down. Each check has a short timeout; no check writes anything but a ping.
"""

import asyncio
import logging
import time
from collections.abc import Callable

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from core.outage import url_redacted

logger = logging.getLogger("companion")

CHECK_TIMEOUT_SECONDS = 2.0


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks = {name: _check_run(check) for name, check in readiness_checks().items()}
    down = sorted(name for name, result in checks.items() if not result["ok"])
    return JsonResponse(
        {"status": "down" if down else "ok", "down": down, "checks": checks}, status=503 if down else 200
    )


def readiness_checks() -> dict[str, Callable[[], None]]:
    """The parts this configuration depends on, each with a check that raises when it does not answer."""
    checks: dict[str, Callable[[], None]] = {"database": _database_check}
    if settings.REDIS_URL:
        checks.update({"redis": _redis_check, "channel_layer": _channel_layer_check, "celery_broker": _broker_check})
    else:
        checks["channel_layer"] = _channel_layer_check
    return checks


def _check_run(check: Callable[[], None]) -> dict[str, object]:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:
        # The exception's type says what failed; its text may hold a URL with a password.
        return {"ok": False, "error": type(exc).__name__, "ms": _ms_since(started)}
    return {"ok": True, "ms": _ms_since(started)}


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _database_check() -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _redis_check() -> None:
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=CHECK_TIMEOUT_SECONDS, socket_timeout=CHECK_TIMEOUT_SECONDS
    )
    try:
        client.ping()
    finally:
        client.close()


def _channel_layer_check() -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")

    async def send() -> None:
        # A message to a channel nobody reads: it expires on its own (the layer's expiry).
        await asyncio.wait_for(
            layer.send(await layer.new_channel("readyz."), {"type": "readyz"}), CHECK_TIMEOUT_SECONDS
        )

    async_to_sync(send)()


def _broker_check() -> None:
    from companion.celery import app

    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=int(CHECK_TIMEOUT_SECONDS))


def redis_startup_check() -> bool:
    """At startup, say (an ERROR on the log, stderr) when the configured Redis does not answer.

    The server starts anyway: requests that need Redis answer 503 `unavailable` until it
    does, and everything recovers without a restart. Returns whether it answered.
    """
    if not settings.REDIS_URL:
        return True
    try:
        _redis_check()
    except Exception as exc:
        # The URL without its password; the error's type, not its text (which may hold the URL).
        logger.error(
            "Redis at %s is unreachable (%s): starting anyway; requests that need it answer 503 "
            "`unavailable` and /readyz names it until it answers",
            url_redacted(settings.REDIS_URL),
            type(exc).__name__,
        )
        return False
    return True
