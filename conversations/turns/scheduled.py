"""A scheduled turn: a message the avatar writes first (a reminder falling due, a check-in).

`turn_start` hands a `ScheduledMessage` here; nothing else calls this module.

    scheduled_turn_start(message)
      1. scheduled_plan_make      (database)   the conversation (NotFound for another user's),
                                               the avatar's voice, the mode, facts, summary,
                                               the last lines: the prompt
      2. a task of its own -> RunningTurn, returned at once
           scheduled_text_write                one short `complete` call, bounded by
                                               SCHEDULED_MODEL_TIMEOUT; the fallback text if
                                               the model fails or is not configured
           scheduled_message_store (database)  the assistant message, `message.commit(id)`
                                               and the conversation's counters in ONE
                                               transaction; commit False: nothing is stored
           message.created                     every socket of the conversation (+ listener)
           push_send                           the push hook, on a thread of its own

Its cost is the message's `cost_usd` and counts on the user's day; a user over their daily
quota gets the fallback text, written without a model call (a reminder is still delivered).

Unlike a user's turn it takes no lock on the conversation: it streams nothing, so there is
no reply a stop or a resume could reach, and a user's turn running meanwhile is unaffected
(its reply row was stored first; this message lands after it by id). Holding the lock would
only make a user's message "busy" for the length of a model call they did not ask for.
Exactly-once is the caller's `commit`, checked inside the storing transaction.

Its database work runs on a thread of its own ("turn-scheduled"), never the user turns'
"turn-begin": a backlog of reminders must not delay anyone's time to first token.
"""

import asyncio
import contextvars
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from conversations.models import Conversation, Message, Role, Status
from conversations.selectors import avatar_for_turn, message_dict
from conversations.turns.events import MessageCreated
from conversations.turns.prepare import message_list_for_prompt, turn_conversation_get
from conversations.turns.request import ScheduledMessage
from conversations.turns.run import RunningTurn, TurnResult, turn_emitter
from conversations.turns.stream import EventSink
from core.push import PushPayload, push_send
from core.timezones import zone_or_utc
from llm.base import ChatMessage, CompletionParams, LLMProvider
from llm.catalog import call_cost_usd, model_choose
from llm.prompts import PromptContext
from llm.prompts.scheduled import scheduled_messages_build
from llm.quotas import quota_exhausted, usage_day_add, user_day
from memory.selectors import memory_list_for_prompt

logger = logging.getLogger("companion.turns")

FACTS_IN_PROMPT = 30
HISTORY_LINES = 6  # the last lines of the conversation, for the tone; the summary has the rest
MAX_TOKENS = 200
FINISH_FALLBACK = "fallback"  # `finish_reason` of a message stored with the fallback text


@dataclass(frozen=True, slots=True)
class ScheduledPlan:
    message: ScheduledMessage
    mode: str
    prompt: tuple[ChatMessage, ...]
    model: str | None = None  # the avatar's model, or LLM_MODELS' default; None: the provider's own
    zone_name: str = "UTC"
    over_quota: bool = False  # the user's daily quota, or the avatar's on them, is spent: the fallback, no model call
    avatar_id: int | None = None  # counted on the user's day with it, when it has limits


@dataclass(frozen=True, slots=True)
class WrittenText:
    text: str
    model: str = ""
    finish_reason: str = FINISH_FALLBACK
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    duration_ms: int | None = None
    priced_as: str = ""  # the model id the call asked for: the price table's key


async def scheduled_turn_start(
    *,
    user_id: int,
    conversation_id: int,
    message: ScheduledMessage,
    provider: LLMProvider,
    listener: EventSink | None,
) -> RunningTurn:
    """Read and plan (refusals raised here, before anything is stored), then run the rest in a
    task of its own; its `result()` holds the stored message, or None when `commit` refused."""
    if (user_id, conversation_id) != (message.user_id, message.conversation_id):
        raise ValueError("turn_start's user_id and conversation_id must be the scheduled message's own")
    plan = await _on_scheduled_thread(scheduled_plan_make, message)
    running = RunningTurn(conversation_id=conversation_id)
    emit = turn_emitter(conversation_id, listener)
    # A context of its own, as a user's turn (run.py): it outlives a caller that goes away.
    running.task = asyncio.get_running_loop().create_task(
        _scheduled_run(plan, provider, emit), context=contextvars.Context()
    )
    return running


def scheduled_plan_make(message: ScheduledMessage) -> ScheduledPlan:
    """The prompt of a scheduled message, in the avatar's voice and the conversation's mode."""
    conversation = turn_conversation_get(user_id=message.user_id, conversation_id=message.conversation_id)
    avatar = avatar_for_turn(avatar_id=conversation.avatar_id, version=conversation.avatar_version)
    summary = conversation.summary
    history = message_list_for_prompt(conversation_id=conversation.pk, after_id=summary.covers_until if summary else 0)
    context = PromptContext(
        persona=avatar.persona,
        user_display_name=conversation.profile.display_name or conversation.username,
        summary=summary.text if summary else None,
        facts=memory_list_for_prompt(
            user_id=conversation.user_id, avatar_id=conversation.avatar_id, limit=FACTS_IN_PROMPT
        ),
        now=timezone.now(),
        timezone_name=conversation.profile.timezone,
    )
    prompt = scheduled_messages_build(
        context,
        mode=conversation.mode,
        kind=message.origin,
        brief=message.brief,
        history=[(row.role, row.content) for row in history[-HISTORY_LINES:]],
    )
    return ScheduledPlan(
        message=message,
        mode=conversation.mode,
        prompt=tuple(prompt),
        model=model_choose(requested=None, avatar_default=avatar.default_model),
        zone_name=conversation.profile.timezone,
        over_quota=quota_exhausted(user_id=message.user_id, avatar_id=avatar.id, avatar_limits=avatar.quota),
        avatar_id=conversation.avatar_id,
    )


async def scheduled_text_write(provider: LLMProvider, plan: ScheduledPlan) -> WrittenText:
    """The model's short message, or the fallback when it fails, is slow or is not configured."""
    fallback = WrittenText(text=plan.message.fallback)
    if not provider.configured or plan.over_quota:
        return fallback
    timeout = float(getattr(settings, "SCHEDULED_MODEL_TIMEOUT", 5.0))
    started = asyncio.get_running_loop().time()
    try:
        completion = await asyncio.wait_for(
            provider.complete(plan.prompt, params=CompletionParams(model=plan.model, max_tokens=MAX_TOKENS)),
            timeout=timeout,
        )
    except Exception as exc:  # the model is never a reason not to deliver: any failure means the fallback
        logger.warning(
            "scheduled message falls back",
            extra={
                "data": {
                    "origin": plan.message.origin,
                    "conversation_id": plan.message.conversation_id,
                    "error": getattr(exc, "code", type(exc).__name__),
                }
            },
        )
        return fallback
    text = completion.text.strip()
    if not text:
        return fallback
    return WrittenText(
        text=text,
        model=completion.model,
        finish_reason=completion.finish_reason,
        prompt_tokens=completion.usage.prompt_tokens,
        completion_tokens=completion.usage.completion_tokens,
        duration_ms=int((asyncio.get_running_loop().time() - started) * 1000),
        priced_as=plan.model or provider.default_model,
    )


class _CommitRefused(Exception):
    """The caller's claim was no longer valid: roll the message back."""


def scheduled_message_store(plan: ScheduledPlan, written: WrittenText) -> dict[str, Any] | None:
    """Store the message, spend the caller's claim (`commit`) and count it, in one transaction.

    None when `commit` refused (the reminder was cancelled, the user wrote first, the account
    was erased): nothing was stored, but a model call made for it still counts (`usage_day_add`).
    """
    message = plan.message
    now = timezone.now()
    cost = (
        call_cost_usd(
            model=written.priced_as, prompt_tokens=written.prompt_tokens, completion_tokens=written.completion_tokens
        )
        if written.priced_as
        else None
    )
    try:
        with transaction.atomic():
            stored = Message.objects.create(
                conversation_id=message.conversation_id,
                role=Role.ASSISTANT,
                content=written.text,
                mode=plan.mode,
                status=Status.COMPLETE,
                origin=message.origin,
                reminder_id=message.reminder_id,
                late=message.late,
                model=written.model[:200],
                finish_reason=written.finish_reason[:32],
                prompt_tokens=written.prompt_tokens,
                completion_tokens=written.completion_tokens,
                duration_ms=written.duration_ms,
                cost_usd=cost,
            )
            # Before the counters: a check-in's commit compares the conversation's last_message_at.
            if not message.commit(stored.pk):
                raise _CommitRefused
            Conversation.objects.filter(pk=message.conversation_id).update(
                message_count=F("message_count") + 1, last_message_at=now, updated_at=now
            )
    except _CommitRefused:
        stored = None
    if cost is not None:  # the model was called: what it cost counts even if the message was refused
        usage_day_add(
            user_id=message.user_id,
            day=user_day(zone=zone_or_utc(plan.zone_name), now=now),
            tokens=(written.prompt_tokens or 0) + (written.completion_tokens or 0),
            cost_usd=cost,
            avatar_id=plan.avatar_id,
            model=written.priced_as,
        )
    return message_dict(stored) if stored is not None else None


async def _scheduled_run(plan: ScheduledPlan, provider: LLMProvider, emit: EventSink) -> TurnResult:
    written = await scheduled_text_write(provider, plan)
    stored = await asyncio.shield(_on_scheduled_thread(scheduled_message_store, plan, written))
    if stored is not None:
        await emit(MessageCreated(stored))
        message = plan.message
        push_send(
            PushPayload.of(
                user_id=message.user_id,
                conversation_id=message.conversation_id,
                message_id=stored["id"],
                origin=message.origin,
                text=stored["content"],
            )
        )
    return TurnResult(user_message={}, assistant_message=stored, mode=plan.mode, mode_event=None)


_SCHEDULED_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turn-scheduled")

_T = TypeVar("_T")


async def _on_scheduled_thread(function: Callable[..., _T], *args: Any) -> _T:
    call = database_sync_to_async(function, thread_sensitive=False, executor=_SCHEDULED_EXECUTOR)
    result: _T = await call(*args)
    return result
