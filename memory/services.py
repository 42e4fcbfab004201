"""Long-term memory, the writes: the rolling summary of older messages and the facts remembered about a user.

Services write (`summary_update`, `memory_extract`, `memory_update`, `memory_delete`,
`summary_sweep`, `conversation_memory_schedule`); `memory.selectors` reads (`summary_is_due`,
`summary_get_for_prompt`, `memory_list`, `memory_list_for_prompt`). Services that call the
model take the provider as an argument; `memory.tasks` passes the configured one.

The model is never called inside a transaction. Each write re-checks under a lock what it
read before the call:

- A summary is one row per conversation (`Summary.conversation` is one-to-one). Its write
  locks the conversation row (`select_for_update`: a row lock on PostgreSQL; on SQLite the
  settings make every transaction IMMEDIATE, so it holds the database write lock) and only
  ever moves `covers_until` forward: a second or stale run stores nothing. Its text is
  self-contained (the previous summary it read plus every message after it), so whichever
  run stores last-but-furthest is correct.
- Facts of one user are written under a lock on the user's row, so two extractions (two
  conversations, two workers) cannot both create the same key.

Settings are read on each call (`memory.config`).

Every model call is recorded as an `llm.UsageRecord` (kind, tokens, cost, how it ended) and
counted on the user's day; a user over their daily quota gets no background call at all.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from rapidfuzz import fuzz, process, utils

from accounts.models import Profile
from conversations.models import SAFETY_CRISIS, Conversation, Message, Role
from core import background
from core.errors import InvalidInput
from core.logging import exception_data
from core.outage import OUTAGE_ERRORS
from llm.base import ChatMessage, Completion, CompletionParams, LLMProvider
from llm.errors import LLMError, Unavailable
from llm.models import UsageKind
from llm.prompts.memory import (
    KNOWN_FACTS_MAX,
    MESSAGE_MAX_CHARS,
    ExtractedFact,
    KnownFact,
    OutputRejected,
    TranscriptLine,
    facts_parse,
    facts_prompt,
    facts_worth_extracting,
    summary_check,
    summary_prompt,
)
from llm.quotas import quota_exhausted, usage_record_add, usage_record_outcome_set
from llm.tokens import count_tokens
from memory import tasks
from memory.config import MemorySettings
from memory.models import MEMORY_TEXT_MAX, Memory, Summary
from memory.selectors import (
    COUNTED_STATUSES,
    memory_extraction_is_worthwhile,
    memory_get_owned,
    memory_list_for_prompt,
    reply_get_before,
    summary_candidates,
    summary_covered_until,
    summary_is_due,
)

logger = logging.getLogger("companion.memory")

SUMMARY_BATCH_MAX_MESSAGES = 400  # rows read for one summary, whatever their size
SUMMARY_ENQUEUE_GUARD_SECONDS = 240  # a queued run from one summary state; after this a lost one is queued again
FACTS_MAX_TOKENS = 400


# --- scheduling --------------------------------------------------------------------------------


def conversation_memory_schedule(*, conversation_id: int, message_id: int, facts: bool = True) -> None:
    """Queue the background memory work of a stored turn; returns at once.

    Call it after the turn is stored, in or out of a transaction, with the id of the turn's
    user message. When the transaction commits: fact extraction for that message when
    `memory_extraction_is_worthwhile` (most small talk is not), and summarisation when
    `summary_is_due` (`facts=False`: the summary only, for a reply regenerated to a message
    whose facts were already read). With Redis the tasks go to the Celery worker; without it they run on
    the in-process background thread (`core.background.task_enqueue`), never in the
    caller's thread, so a caller inside `database_sync_to_async` never holds up the event
    loop's database thread. A failure to enqueue is logged, never raised: the turn is
    already stored, and the beat sweep (or the next turn) catches a summary that was lost.
    """

    def memory_enqueue() -> None:  # a named function: Django logs a robust callback's __qualname__ on failure
        _memory_enqueue(conversation_id=conversation_id, message_id=message_id, facts=facts)

    transaction.on_commit(memory_enqueue, robust=True)


def _memory_enqueue(*, conversation_id: int, message_id: int, facts: bool = True) -> None:
    try:
        if facts and memory_extraction_is_worthwhile(message_id=message_id):
            background.task_enqueue(tasks.extract_memories, message_id=message_id)
        if _summary_due_and_claimed(conversation_id):
            background.task_enqueue(tasks.summarize_conversation, conversation_id=conversation_id)
    except OUTAGE_ERRORS:
        # Redis (the broker, the cache) is away. The summary is caught up by the beat sweep; this
        # message's fact extraction is not retried (its words still reach the summary).
        logger.warning(
            "memory work not queued: Redis does not answer; the summary sweep catches up",
            extra={"data": {"conversation_id": conversation_id, "message_id": message_id}},
        )


def _summary_due_and_claimed(conversation_id: int) -> bool:
    """Due, and no run from the same summary state was queued lately (each later turn would queue another).

    The claim is keyed by what the summary covers now, so once a run stores a summary the
    next one can be queued at once; a run that was lost is queued again after the guard.
    """
    covered = summary_covered_until(conversation_id=conversation_id)
    if not summary_is_due(conversation_id=conversation_id, covered_until=covered):
        return False
    key = f"memory:summary-queued:{conversation_id}:{covered}"
    return bool(cache.add(key, 1, timeout=SUMMARY_ENQUEUE_GUARD_SECONDS))


def summary_discard_covering(*, conversation_id: int, message_ids: Sequence[int]) -> bool:
    """Drop the conversation's summary if it covers any of `message_ids` (forgotten, replaced or
    swapped for another alternative), and queue its rebuild when the transaction commits.

    The summary's text is self-contained and cannot be edited: one that read a message the
    user took back is rebuilt from the messages that remain. Returns whether it was dropped.
    """
    if not message_ids:
        return False
    dropped, _ = Summary.objects.filter(conversation_id=conversation_id, covers_until_id__gte=min(message_ids)).delete()
    if dropped:

        def summary_rebuild_enqueue() -> None:
            background.task_enqueue(tasks.summarize_conversation, conversation_id=conversation_id)

        transaction.on_commit(summary_rebuild_enqueue, robust=True)
    return bool(dropped)


def summary_sweep(*, limit: int = 500) -> int:
    """Queue summarisation for recently active conversations that are due; returns how many were queued.

    Run by beat every few minutes: it catches conversations whose enqueue was lost (a
    broker hiccup, a deploy between commit and send). Conversations quiet for longer than
    `SUMMARY_SWEEP_LOOKBACK_HOURS` wait for their next turn, which checks again.
    """
    config = MemorySettings.from_django_settings()
    since = timezone.now() - config.sweep_lookback
    # A cheap over-estimate in one query (it ignores the exact window), then the exact check.
    uncovered = Count(
        "messages",
        filter=Q(
            messages__status__in=COUNTED_STATUSES,
            messages__content__gt="",
            messages__id__gt=Coalesce(F("summary__covers_until"), Value(0)),
        ),
    )
    rough = list(
        Conversation.objects.filter(last_message_at__gte=since)
        .annotate(uncovered=uncovered)
        .filter(uncovered__gt=config.keep_recent + config.trigger_messages)
        .order_by("last_message_at")
        .values_list("id", flat=True)[:limit]
    )
    queued = 0
    for conversation_id in rough:
        if _summary_due_and_claimed(conversation_id):
            background.task_enqueue(tasks.summarize_conversation, conversation_id=conversation_id)
            queued += 1
    return queued


# --- the rolling summary -----------------------------------------------------------------------


def summary_update(*, conversation_id: int, provider: LLMProvider) -> Summary | None:
    """Fold the uncovered older messages into the conversation's summary, when due.

    Returns the stored summary, or None when nothing was due, the provider has nothing to
    call, or another run already stored a summary that covers as much. A summary that
    fails `llm.prompts.memory.summary_check` raises `OutputRejected` (retryable) and is not
    stored: the previous one stays. LLM errors propagate (`llm.errors`, with `.retryable`).
    """
    if not provider.configured:
        return None
    config = MemorySettings.from_django_settings()
    plan = _summary_plan(conversation_id, config=config)
    if plan is None:
        return None
    if quota_exhausted(user_id=plan.user_id):
        logger.info("summary skipped: daily quota spent", extra={"data": {"conversation_id": conversation_id}})
        return None
    messages = summary_prompt(
        character_name=plan.character_name,
        user_name=plan.user_name,
        previous_summary=plan.previous_text,
        pinned_facts=plan.pinned_facts,
        lines=plan.lines,
        max_tokens=config.summary_max_tokens,
    )
    completion, record_id = _complete(
        provider,
        messages,
        CompletionParams(model=config.summary_model, temperature=0.2, max_tokens=config.summary_max_tokens),
        call=BackgroundCall(
            kind=UsageKind.SUMMARY,
            subject=f"conversation:{conversation_id}",
            user_id=plan.user_id,
            avatar_id=plan.avatar_id,
            conversation_id=conversation_id,
        ),
    )
    if record_id is None:
        logger.info("summary dropped: the account was erased", extra={"data": {"conversation_id": conversation_id}})
        return None
    try:
        text = summary_check(
            completion.text, finish_reason=completion.finish_reason, max_tokens=config.summary_max_tokens
        )
    except OutputRejected as exc:
        usage_record_outcome_set(record_id=record_id, outcome=exc.code, reason=exc.reason)
        # INFO: the task retries; only its last failure is a WARNING (memory.tasks).
        logger.info(
            "summary rejected",
            extra={
                "data": {"conversation_id": conversation_id, "reason": exc.reason, "covers_until": plan.covers_until}
            },
        )
        raise
    return _summary_store(plan, text=text, model=completion.model)


@dataclass(frozen=True)
class _SummaryPlan:
    conversation_id: int
    previous_text: str | None
    previous_until: int
    covers_until: int
    lines: tuple[TranscriptLine, ...]
    pinned_facts: tuple[str, ...]
    character_name: str
    user_name: str
    user_id: int = 0
    avatar_id: int = 0


def _summary_plan(conversation_id: int, *, config: MemorySettings) -> _SummaryPlan | None:
    conversation = Conversation.objects.select_related("avatar", "user").filter(pk=conversation_id).first()
    if conversation is None:
        return None
    previous = Summary.objects.filter(conversation_id=conversation_id).values_list("text", "covers_until_id").first()
    previous_text, previous_until = previous if previous is not None else (None, 0)
    candidates = summary_candidates(conversation_id=conversation_id, after_id=previous_until, config=config)
    if candidates[: config.trigger_messages + 1].count() <= config.trigger_messages:
        return None
    user_name = _user_name(conversation.user)
    speakers: dict[str, str] = {Role.USER.value: user_name, Role.ASSISTANT.value: conversation.avatar.name}
    lines: list[TranscriptLine] = []
    covers_until = previous_until
    budget = config.summary_input_max_tokens
    # Oldest first, within the input budget; what does not fit waits for the next run.
    for message in candidates.only("id", "role", "content")[:SUMMARY_BATCH_MAX_MESSAGES]:
        cost = count_tokens(message.content[:MESSAGE_MAX_CHARS]) + 4
        if lines and cost > budget:
            break
        budget -= cost
        lines.append(TranscriptLine(speaker=speakers.get(message.role, message.role), text=message.content))
        covers_until = message.pk
    pinned = memory_list_for_prompt(
        user_id=conversation.user_id, avatar_id=conversation.avatar_id, limit=200, pinned_only=True
    )
    return _SummaryPlan(
        conversation_id=conversation_id,
        user_id=conversation.user_id,
        avatar_id=conversation.avatar_id,
        previous_text=previous_text,
        previous_until=previous_until,
        covers_until=covers_until,
        lines=tuple(lines),
        pinned_facts=pinned,
        character_name=conversation.avatar.name,
        user_name=user_name,
    )


def _summary_store(plan: _SummaryPlan, *, text: str, model: str) -> Summary | None:
    with transaction.atomic():
        locked = list(
            Conversation.objects.select_for_update().filter(pk=plan.conversation_id).values_list("id", flat=True)
        )
        if not locked:
            return None  # deleted while the model was writing
        stored_until = (
            Summary.objects.filter(conversation_id=plan.conversation_id)
            .values_list("covers_until_id", flat=True)
            .first()
        )
        if stored_until is not None and stored_until >= plan.covers_until:
            logger.info(
                "summary already covers this run",
                extra={"data": {"conversation_id": plan.conversation_id, "covers_until": stored_until}},
            )
            return None
        summary, _ = Summary.objects.update_or_create(
            conversation_id=plan.conversation_id,
            defaults={"text": text, "covers_until_id": plan.covers_until, "model": model[:200]},
        )
    logger.info(
        "summary stored",
        extra={
            "data": {
                "conversation_id": plan.conversation_id,
                "covers_until": plan.covers_until,
                "previous_until": plan.previous_until,
                "messages": len(plan.lines),
            }
        },
    )
    return summary


def _user_name(user: User) -> str:
    display_name = Profile.objects.filter(user_id=user.pk).values_list("display_name", flat=True).first()
    return display_name or user.get_username()


@dataclass(frozen=True)
class BackgroundCall:
    """Whom a background call is for, and about what: its `UsageRecord`'s fields."""

    kind: UsageKind
    subject: str  # "conversation:3", "message:12": a task that gives up marks its last record by it
    user_id: int
    avatar_id: int
    conversation_id: int


def _complete(
    provider: LLMProvider, messages: list[ChatMessage], params: CompletionParams, *, call: BackgroundCall
) -> tuple[Completion, int | None]:
    """The completion and the id of its `UsageRecord`; a failed call is recorded with its error code.

    The id is None when the user's account was erased while the model wrote: the call is
    counted without them (`usage_record_add`), and the caller stores nothing of its answer."""
    priced_as = params.model or provider.default_model
    record = partial(
        usage_record_add,
        user_id=call.user_id,
        avatar_id=call.avatar_id,
        conversation_id=call.conversation_id,
        kind=call.kind,
        subject=call.subject,
        model=priced_as,
    )
    try:
        # Services are sync (a Celery worker, the in-process thread); the Protocol is async.
        completion = async_to_sync(provider.complete)(messages, params=params)
    except LLMError as exc:
        record(prompt_tokens=0, completion_tokens=0, outcome=exc.code)
        raise
    except Exception as exc:
        # A provider broke its contract: unavailable, as in a turn. Its text may quote the prompt,
        # so it is logged by type and place only, and not chained to the error the task sees.
        logger.error("provider raised an untyped error", extra={"data": exception_data(exc)})
        unavailable = Unavailable(type(exc).__name__)
        record(prompt_tokens=0, completion_tokens=0, outcome=unavailable.code)
        raise unavailable from None
    usage = completion.usage
    return completion, record(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)


# --- remembered facts --------------------------------------------------------------------------


def memory_extract(*, message_id: int, provider: LLMProvider) -> list[Memory]:
    """Remember the durable facts in one user message; returns the facts created or changed.

    A fact with a known key, or a text close to a known one (rapidfuzz, `MEMORY_DEDUP_SCORE`),
    updates that fact (text and source message) instead of adding one; a pinned fact is
    never rewritten. At `MEMORY_MAX_FACTS` for the user and avatar, the least recently
    updated unpinned fact makes room. Running it twice for a message changes nothing more.
    Output that is not the JSON asked for raises `OutputRejected` and stores nothing. A
    message that fails `memory_extraction_is_worthwhile` ("ok", a question to the companion,
    a message flagged as a crisis) calls no model.
    """
    if not provider.configured:
        return []
    message = Message.objects.select_related("conversation__avatar", "conversation__user").filter(pk=message_id).first()
    if message is None or message.role != Role.USER or message.safety == SAFETY_CRISIS:
        return []
    previous_reply = reply_get_before(message=message)
    if not facts_worth_extracting(message.content, previous_reply=previous_reply):
        return []
    config = MemorySettings.from_django_settings()
    conversation = message.conversation
    user_id, avatar_id = conversation.user_id, conversation.avatar_id
    if quota_exhausted(user_id=user_id):
        logger.info("facts skipped: daily quota spent", extra={"data": {"message_id": message_id}})
        return []
    known = [
        KnownFact(key=key, text=text, pinned=pinned)
        for key, text, pinned in Memory.objects.filter(user_id=user_id, avatar_id=avatar_id)
        .order_by("-pinned", "-updated_at", "-id")
        .values_list("key", "text", "pinned")[:KNOWN_FACTS_MAX]
    ]
    messages = facts_prompt(
        character_name=conversation.avatar.name,
        user_name=_user_name(conversation.user),
        known_facts=known,
        previous_reply=previous_reply,
        message=message.content,
    )
    completion, record_id = _complete(
        provider,
        messages,
        CompletionParams(model=config.summary_model, temperature=0.0, max_tokens=FACTS_MAX_TOKENS),
        call=BackgroundCall(
            kind=UsageKind.FACTS,
            subject=f"message:{message_id}",
            user_id=user_id,
            avatar_id=avatar_id,
            conversation_id=conversation.pk,
        ),
    )
    if record_id is None:
        logger.info("facts dropped: the account was erased", extra={"data": {"message_id": message_id}})
        return []
    try:
        if completion.finish_reason == "length":
            raise OutputRejected("truncated", "the facts were cut off at the token limit")
        facts = facts_parse(completion.text)
    except OutputRejected as exc:
        usage_record_outcome_set(record_id=record_id, outcome=exc.code, reason=exc.reason)
        # INFO: the task retries; only its last failure is a WARNING (memory.tasks).
        logger.info("facts rejected", extra={"data": {"message_id": message_id, "reason": exc.reason}})
        raise
    if not facts:
        return []
    return _facts_store(user_id=user_id, avatar_id=avatar_id, message_id=message.pk, facts=facts, config=config)


def _facts_store(
    *, user_id: int, avatar_id: int, message_id: int, facts: Sequence[ExtractedFact], config: MemorySettings
) -> list[Memory]:
    changed: list[Memory] = []
    with transaction.atomic():
        list(get_user_model().objects.select_for_update().filter(pk=user_id).values_list("pk", flat=True))
        existing = {m.key: m for m in Memory.objects.filter(user_id=user_id, avatar_id=avatar_id)}
        for fact in facts:
            target = existing.get(fact.key) or _near_duplicate(fact.text, existing, score=config.dedup_score)
            if target is not None:
                if target.pinned or target.text == fact.text:
                    continue
                target.text = fact.text
                target.source_message_id = message_id
                target.save(update_fields=["text", "source_message", "updated_at"])
                changed.append(target)
                continue
            if len(existing) >= config.facts_max:
                evicted = _least_recent_unpinned(existing)
                if evicted is None:
                    logger.info("no room for a new fact: every one is pinned", extra={"data": {"user_id": user_id}})
                    continue
                del existing[evicted.key]
                evicted.delete()
            memory = Memory.objects.create(
                user_id=user_id, avatar_id=avatar_id, key=fact.key, text=fact.text, source_message_id=message_id
            )
            existing[memory.key] = memory
            changed.append(memory)
    return changed


def _near_duplicate(text: str, existing: dict[str, Memory], *, score: float) -> Memory | None:
    if not existing:
        return None
    match = process.extractOne(
        text,
        {key: memory.text for key, memory in existing.items()},
        scorer=fuzz.token_sort_ratio,
        processor=utils.default_process,
        score_cutoff=score,
    )
    return existing[match[2]] if match is not None else None


def _least_recent_unpinned(existing: dict[str, Memory]) -> Memory | None:
    unpinned = [memory for memory in existing.values() if not memory.pinned]
    return min(unpinned, key=lambda memory: (memory.updated_at, memory.pk)) if unpinned else None


def memory_update(*, user: User, memory_id: int, text: str | None = None, pinned: bool | None = None) -> Memory:
    """Correct or pin one of the user's facts. Another user's fact is `NotFound`."""
    memory = memory_get_owned(user=user, memory_id=memory_id)
    fields: list[str] = []
    if text is not None:
        cleaned = text.strip()
        if not cleaned:
            raise InvalidInput("A memory cannot be empty.", field="text")
        if len(cleaned) > MEMORY_TEXT_MAX:
            raise InvalidInput(f"A memory has at most {MEMORY_TEXT_MAX} characters.", field="text")
        memory.text = cleaned
        fields.append("text")
    if pinned is not None:
        memory.pinned = pinned
        fields.append("pinned")
    if fields:
        memory.save(update_fields=[*fields, "updated_at"])
    return memory


def memory_delete(*, user: User, memory_id: int) -> None:
    """Forget one of the user's facts. Another user's fact is `NotFound`."""
    memory_get_owned(user=user, memory_id=memory_id).delete()
