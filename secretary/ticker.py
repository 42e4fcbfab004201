"""The in-process scheduler of embedded defaults: reminders and check-ins without Celery beat.

Without `REDIS_URL` there is no beat and no worker, yet `make run` alone must deliver a
reminder within 5 s. The ASGI application (companion/asgi.py) starts a `SchedulerTicker`
when the server starts (the ASGI lifespan) and stops it when it stops: an asyncio task on
the server's own event loop, which runs the same services the Celery tasks run,
`reminders_deliver_due` every `SCHEDULER_TICK_SECONDS` (1) and `proactive_sweep` every
`PROACTIVE_SWEEP_SECONDS` (60). Being in the server process matters: the embedded channel
layer is per process, and only from here does `message.created` reach the sockets.

Several server processes on one SQLite file would each run a ticker: harmless (claims are
exactly-once), only wasted. With `REDIS_URL`, `SCHEDULER_IN_PROCESS` defaults to off and
beat does the work. Tests never start it, unless one asks (it is started by the lifespan
only).
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable

from django.conf import settings

from llm.base import LLMProvider

logger = logging.getLogger("companion.secretary")

STOP_TIMEOUT = 10.0  # a delivery under way gets this long to finish on shutdown


class SchedulerTicker:
    """Runs the delivery and the sweep periodically until `stop()`."""

    def __init__(
        self,
        *,
        provider_get: Callable[[], LLMProvider],
        tick: float | None = None,
        sweep_every: float | None = None,
    ) -> None:
        self._provider_get = provider_get
        self.tick = tick if tick is not None else float(getattr(settings, "SCHEDULER_TICK_SECONDS", 1.0))
        self.sweep_every = (
            sweep_every if sweep_every is not None else float(getattr(settings, "PROACTIVE_SWEEP_SECONDS", 60.0))
        )
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="scheduler-ticker")

    async def stop(self) -> None:
        """Let the run under way finish (bounded by STOP_TIMEOUT), then end."""
        self._stopping.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=STOP_TIMEOUT)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        from secretary.delivery import reminders_deliver_due
        from secretary.proactive import proactive_sweep

        loop = asyncio.get_running_loop()
        provider = self._provider_get()
        next_sweep = loop.time() + self.sweep_every
        while not self._stopping.is_set():
            try:
                await reminders_deliver_due(provider=provider)
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + self.sweep_every
                    await proactive_sweep(provider=provider)
            except Exception:
                logger.exception("scheduler tick failed; trying again next tick")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.tick)
