"""Background work of memory (Celery tasks): the rolling summary and remembered facts.

Tasks are interfaces: they take ids, re-fetch, and call one service of `memory.services`
with the configured provider (`llm.registry.provider_get`). The service is imported inside
the task: `memory.services` imports this module to send the tasks.

- Names are explicit, so moving this module never strands queued messages. They still
  read "conversations.*", from when these tasks lived in conversations/tasks.py: messages
  already queued (and beat's schedule, companion/beat.py) know them by these names, so
  they stay.
- `summarize_conversation` and `extract_memories` are idempotent (a summary only moves
  forward; a fact is matched by key), so they run with `acks_late` and
  `reject_on_worker_lost`: a worker killed mid-task leaves the message to be delivered
  again. With the prefork pool the parent sees the child die and requeues at once; when the
  whole worker dies, Redis restores unacknowledged messages after the broker's
  `visibility_timeout` (kombu's default is an hour; it must stay above the longest
  retry countdown below, or a waiting retry is delivered twice).
- Retries: only for LLM errors whose `.retryable` is true (rate limits, timeouts, an
  answer that failed our checks), with exponential backoff and full jitter, at most
  `RETRY_MAX` times; an answer that failed our checks (`OutputRejected`: a model that does not
  answer JSON) only `REJECTED_RETRY_MAX` time, since the same model tends to fail the same way
  and each attempt is paid for. A terminal error (no key, model not found), or a retryable one on the
  last attempt, is an expected outcome, not a crash: the task ends normally (its message
  is acknowledged) with one WARNING line, "memory task gave up", carrying the task, the
  error code, the check's reason and the ids, never a traceback or any message text.
- Time limits: each task's soft limit raises inside it, the hard limit kills it; both sit
  under the project-wide CELERY_TASK_SOFT_TIME_LIMIT / CELERY_TASK_TIME_LIMIT.

Without `REDIS_URL` (CELERY_TASK_ALWAYS_EAGER) there is no worker: `core.background`
runs the same tasks on one in-process background thread, retrying after the short pauses of
`IN_PROCESS_RETRY_DELAYS`. There is no beat either; each later turn checks again whether a
summary is due.
"""

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Retry
from celery.utils.time import get_exponential_backoff_interval

from core import background
from llm.base import LLMProvider
from llm.errors import LLMError
from llm.prompts.memory import OutputRejected
from memory.selectors import summary_is_due

logger = logging.getLogger("companion.memory")

RETRY_MAX = 3
REJECTED_RETRY_MAX = 1  # an answer that failed our checks: one more try, then give up and say why
RETRY_BACKOFF_SECONDS = 10  # 10, 20, 40 s (full jitter: anywhere up to those)
RETRY_BACKOFF_MAX_SECONDS = 300
IN_PROCESS_RETRY_DELAYS: tuple[float, ...] = (2.0, 4.0, 8.0)  # one per retry, RETRY_MAX of them

# Tasks that call the model; each adds its own limits (the soft one raises in the task, the hard one kills it).
_LLM_TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "max_retries": RETRY_MAX,
    "ignore_result": True,
    "queue_setting": "MEMORY_TASK_QUEUE",  # core.background.task_enqueue sends them there when it is set
}


def provider_for_tasks() -> LLMProvider:
    """The configured provider, imported late: the registry reads settings and builds clients."""
    from llm.registry import provider_get

    return provider_get()


# The names keep their "conversations." prefix: queued messages and beat know the tasks by them (see above).
@shared_task(name="conversations.summarize_conversation", soft_time_limit=90, time_limit=120, **_LLM_TASK_OPTIONS)
def summarize_conversation(self: Task[Any, Any], conversation_id: int) -> int | None:
    """Summarise the conversation when due; returns the id of the last message the summary now covers."""
    from memory.services import summary_update

    try:
        summary = summary_update(conversation_id=conversation_id, provider=provider_for_tasks())
    except LLMError as exc:
        _retry_or_give_up(self, exc, conversation_id=conversation_id)
        return None
    if summary is None:
        return None
    # One run reads a bounded batch; a long backlog continues at once rather than waiting for a turn.
    if summary_is_due(conversation_id=conversation_id):
        background.task_enqueue(summarize_conversation, conversation_id=conversation_id)
    return summary.covers_until_id


@shared_task(name="conversations.extract_memories", soft_time_limit=60, time_limit=90, **_LLM_TASK_OPTIONS)
def extract_memories(self: Task[Any, Any], message_id: int) -> list[int]:
    """Remember the durable facts of one user message; returns the ids of the facts created or changed."""
    from memory.services import memory_extract

    try:
        memories = memory_extract(message_id=message_id, provider=provider_for_tasks())
    except LLMError as exc:
        _retry_or_give_up(self, exc, message_id=message_id)
        return []
    return [memory.pk for memory in memories]


@shared_task(name="conversations.summarize_sweep", soft_time_limit=60, time_limit=90, ignore_result=True)
def summarize_sweep() -> int:
    """Beat, every few minutes: queue the summaries whose enqueue was lost; returns how many."""
    from memory.services import summary_sweep

    return summary_sweep()


def _retry_or_give_up(task: Task[Any, Any], exc: LLMError, **ids: int) -> None:
    """Raise the task's retry for a retryable error; log one WARNING and return for a terminal
    one, or when the retries are spent."""
    retries = task.request.retries or 0
    retries_max = REJECTED_RETRY_MAX if isinstance(exc, OutputRejected) else RETRY_MAX
    if not exc.retryable or retries >= retries_max:
        _give_up_record(task, exc, **ids)
        logger.warning(
            "memory task gave up",
            extra={
                "data": {
                    "task": task.name,
                    "code": exc.code,
                    "reason": exc.reason if isinstance(exc, OutputRejected) else None,
                    "retryable": exc.retryable,
                    "attempts": retries + 1,
                    **ids,
                }
            },
        )
        return
    if task.request.is_eager:
        # No broker to hold a delayed retry (Celery's eager retry runs at once, nested): the
        # in-process runner sees the RETRY state and tries again itself after a pause.
        logger.info(
            "memory task will retry in process",
            extra={"data": {"task": task.name, "code": exc.code, "retries": retries, **ids}},
        )
        raise Retry(exc=exc, when=datetime.now(UTC) + timedelta(seconds=IN_PROCESS_RETRY_DELAYS[retries]))
    countdown = get_exponential_backoff_interval(
        factor=RETRY_BACKOFF_SECONDS,
        retries=task.request.retries,
        maximum=RETRY_BACKOFF_MAX_SECONDS,
        full_jitter=True,
    )
    if exc.retry_after:
        countdown = max(countdown, min(int(exc.retry_after), RETRY_BACKOFF_MAX_SECONDS))
    logger.info(
        "memory task will retry",
        extra={
            "data": {
                "task": task.name,
                "code": exc.code,
                "retries": task.request.retries,
                "countdown": countdown,
                **ids,
            }
        },
    )
    raise task.retry(exc=exc, countdown=countdown)


def _give_up_record(task: Task[Any, Any], exc: LLMError, **ids: int) -> None:
    """Mark the job's last recorded call as the one the task gave up after, with why."""
    from llm.models import UsageKind
    from llm.quotas import usage_record_give_up

    if "message_id" in ids:
        kind, subject = UsageKind.FACTS, f"message:{ids['message_id']}"
    else:
        kind, subject = UsageKind.SUMMARY, f"conversation:{ids.get('conversation_id')}"
    reason = exc.reason if isinstance(exc, OutputRejected) else ""
    try:
        usage_record_give_up(kind=kind, subject=subject, outcome=exc.code, reason=reason)
    except Exception:  # the database may be why the task failed: the WARNING line still says it
        logger.warning("recording a memory task's give-up failed", exc_info=True)
