"""The ASGI lifespan, which Django's ASGI handler ignores: the server's start and stop.

With `REDIS_URL`, startup says when that Redis does not answer (and starts anyway). On
embedded defaults (`SCHEDULER_IN_PROCESS`, on without REDIS_URL) the in-process
scheduler (secretary/ticker.py) starts when the server starts and stops when it stops.
Kept apart from `companion.asgi`, whose import sets Django up: tests drive it directly.
"""

import logging
from typing import Any

from django.conf import settings

logger = logging.getLogger("companion")


class Lifespan:
    """Answers the ASGI lifespan protocol around `app`; every other scope goes to `app`."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.ticker: Any = None  # the SchedulerTicker, while the server runs one

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                try:
                    self.startup()
                except Exception as exc:
                    logger.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def startup(self) -> None:
        from companion.health import redis_startup_check

        redis_startup_check()
        if not settings.SCHEDULER_IN_PROCESS:
            return
        from llm.registry import provider_get
        from secretary.ticker import SchedulerTicker

        self.ticker = SchedulerTicker(provider_get=provider_get)
        self.ticker.start()

    async def shutdown(self) -> None:
        if self.ticker is not None:
            await self.ticker.stop()
            self.ticker = None
