"""Sending Celery tasks: to the broker, or, without one, to a single in-process background thread.

Without `REDIS_URL` (CELERY_TASK_ALWAYS_EAGER) there is no worker: `task_enqueue` runs the
tasks on one in-process background thread, never in the caller's thread, so the
websocket's event loop (and the single thread behind `database_sync_to_async`) never waits
for a model. That thread also does the retries, after the pause the task asks for (Celery's
own eager retries would run at once, nested): a task raises `Retry(when=...)`, which
Celery's eager tracer records as a retry (INFO), not a failure (an ERROR with a
traceback), and the thread runs it again after that pause, up to the task's `max_retries`.
There is no beat either; the work beat would sweep up waits for its next occasion.
"""

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any

from celery import Task, states
from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger("core.background")

IN_PROCESS_THREAD_NAME = "companion-tasks"

_in_process = ThreadPoolExecutor(max_workers=1, thread_name_prefix=IN_PROCESS_THREAD_NAME)
_in_process_stopping = threading.Event()


def task_enqueue(task: Task[Any, Any], **kwargs: int) -> None:
    """Send `task` with keyword arguments; never runs it in the caller's thread.

    With a broker: `apply_async`, on the queue named by the setting the task's
    `queue_setting` option names (`MEMORY_TASK_QUEUE` for the memory tasks), when that
    setting is set; read on each send. Without one (CELERY_TASK_ALWAYS_EAGER): on the single
    in-process background thread, one task after another, so SQLite sees one background
    writer and a burst of turns cannot start a burst of model calls.
    """
    if task.app.conf.task_always_eager:
        _in_process.submit(_run_in_process, task, kwargs)
        return
    options: dict[str, Any] = {}
    queue_setting = getattr(task, "queue_setting", None)
    queue = getattr(settings, queue_setting, None) if queue_setting else None
    if queue:
        options["queue"] = queue
    # Fail fast when Redis is away: the caller is a turn that is already stored, and the sweep catches up.
    task.apply_async(
        kwargs=kwargs,
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        **options,
    )


def _run_in_process(task: Task[Any, Any], kwargs: dict[str, int]) -> None:
    # This thread keeps its own database connection; close it when it is old, as Django does per request.
    close_old_connections()
    try:
        retries_max = task.max_retries or 0
        for attempt in range(retries_max + 1):
            if _in_process_stopping.is_set():
                return  # the process is exiting: the beat sweep or the next turn picks this work up again
            # Done, given up (the task logged it) or failed (Celery logged the error): nothing more to do.
            result = task.apply(kwargs=kwargs, retries=attempt, throw=False)
            if result.state != states.RETRY or attempt == retries_max:
                return
            # A pause on this thread holds up only the background work queued behind it, never a turn.
            _in_process_stopping.wait(_retry_pause(result.result))
    except Exception:
        logger.exception("in-process task crashed", extra={"data": {"task": task.name, **kwargs}})
    finally:
        close_old_connections()


def _retry_pause(retry: object) -> float:
    """Seconds until the `Retry`'s `when` (a datetime or a number of seconds); none without one."""
    when = getattr(retry, "when", None)
    if isinstance(when, datetime):
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    if isinstance(when, int | float):
        return max(0.0, float(when))
    return 0.0


def in_process_tasks_wait(*, timeout: float = 30.0) -> bool:
    """Wait until the in-process thread has run everything queued so far; False on timeout.

    For tests and for commands that exit right after a turn (the terminal chat).
    """
    if threading.current_thread().name.startswith(IN_PROCESS_THREAD_NAME):
        return True  # called from a task itself: waiting on our own queue would never end
    try:
        _in_process.submit(lambda: None).result(timeout=timeout)
    except FutureTimeout:
        return False
    return True


def in_process_tasks_stop() -> None:
    """Drop queued in-process work and retries (a command that is exiting); a running attempt completes."""
    _in_process_stopping.set()
