"""Conversation writes, and the turn orchestrator every interface runs.

A turn: validate, store the user message (idempotent on `client_id`), route the mode and
store the decision, build the context, stream from the provider, store the assistant
message with its outcome, schedule memory work. The websocket, SSE, batch REST and the
terminal chat all call `turn_run`; they differ only in the `emit` they pass.

Database work runs in short sync units behind `database_sync_to_async`: `_turn_prepare`
(checks, routing, the prompt), `_turn_store` (the writes, while the model call is already
under way) and `_turn_finish`; the token stream in between touches neither the database nor
the cache.
"""

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from accounts.models import Profile
from accounts.selectors import intimate_block_reason
from avatars.models import Avatar
from companion.db import CompiledQuery
from companion.errors import Conflict, DomainError, InvalidInput, NotFound, Throttled
from conversations.context import ContextBudget, HistoryItem, context_build
from conversations.events import (
    ErrorEvent,
    MessageCreated,
    ModeChanged,
    ReplyEnd,
    ReplyStart,
    Token,
    TurnEvent,
)
from conversations.intents import RouteDecision, RouterSettings, route_message
from conversations.models import Conversation, Message, Role, Status
from conversations.modes import Mode
from conversations.selectors import AvatarForTurn, avatar_for_turn, message_dict
from llm.base import ChatMessage, CompletionParams, LLMProvider, StreamEnd, StreamEvent, TextDelta
from llm.errors import LLMError
from llm.fallbacks import fallback_line_pick
from llm.prompts import PromptContext, post_history_prompt, system_prompt_for_mode
from llm.tokens import count_tokens
from memory.selectors import SummaryForPrompt, memory_list_for_prompt
from memory.services import conversation_memory_schedule

logger = logging.getLogger("companion.turns")

EventSink = Callable[[TurnEvent], Awaitable[None]]

CLIENT_ID_MAX = 64
MODEL_NAME_MAX = 100
FACTS_IN_PROMPT = 30
MODE_CHOICES = {Mode.SECRETARY.value, Mode.INTIMATE.value}


class TurnError(Exception):
    """Why a reply ended badly when the model was not the cause; shaped like `LLMError` for the client."""

    code: ClassVar[str] = "turn_error"
    retryable: ClassVar[bool] = False
    user_message: ClassVar[str] = "The reply could not be finished."


class StoreFailed(TurnError):
    code = "store_failed"
    retryable = True
    user_message = "The reply could not be saved; please send your message again."


class Busy(DomainError):
    code = "busy"
    status_code = 409
    retryable = True


# --- Conversations -------------------------------------------------------------------------


def _greeting_pick(avatar: Avatar, *, user_name: str) -> str:
    greetings = [g for g in [avatar.first_message, *avatar.alternate_greetings] if isinstance(g, str) and g.strip()]
    if not greetings:
        return ""
    # Card greetings use {{user}} and {{char}} placeholders (SillyTavern convention).
    return random.choice(greetings).replace("{{user}}", user_name).replace("{{char}}", avatar.name)


def _profile_of(user: User) -> Profile:
    try:
        return user.profile
    except Profile.DoesNotExist:
        profile, _ = Profile.objects.get_or_create(user=user)
        return profile


def conversation_create(*, user: User, avatar_id: int) -> Conversation:
    """A new conversation, opened by the avatar's greeting in the avatar's default mode (when allowed)."""
    from avatars.selectors import avatar_get_visible

    avatar = avatar_get_visible(user=user, avatar_id=avatar_id)
    profile = _profile_of(user)
    mode = avatar.default_mode
    if mode == Mode.INTIMATE and intimate_block_reason(profile=profile, avatar_allows=avatar.intimate_allowed):
        mode = Mode.SECRETARY
    with transaction.atomic():
        conversation = Conversation.objects.create(user=user, avatar=avatar, mode=mode, title=avatar.name)
        greeting = _greeting_pick(avatar, user_name=profile.display_name or user.username)
        if greeting:
            Message.objects.create(
                conversation=conversation, role=Role.ASSISTANT, content=greeting, mode=mode, finish_reason="greeting"
            )
            conversation.message_count = 1
            conversation.last_message_at = timezone.now()
            conversation.save(update_fields=["message_count", "last_message_at"])
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    conversation.delete()


def conversation_mode_set(
    *, user: User, conversation: Conversation, mode: str | None, mode_locked: bool | None
) -> ModeChanged | None:
    """A user's explicit choice: `mode` locks it (unless `mode_locked` says otherwise), "auto" releases the lock.

    Returns the mode event to send, or None when nothing changed. Intimate mode is refused
    with a `forbidden` error naming the reason when the gate is closed.
    """
    previous, previous_lock = conversation.mode, conversation.mode_locked
    if mode == "auto":
        new_mode, new_lock = previous, False if mode_locked is None else mode_locked
    elif mode is not None:
        if mode not in MODE_CHOICES:
            raise InvalidInput("mode must be secretary, intimate or auto.", field="mode")
        new_mode, new_lock = mode, True if mode_locked is None else mode_locked
    else:
        new_mode, new_lock = previous, previous_lock if mode_locked is None else mode_locked

    if new_mode == Mode.INTIMATE:
        reason = intimate_block_reason(profile=_profile_of(user), avatar_allows=conversation.avatar.intimate_allowed)
        if reason:
            raise IntimateBlocked(reason)

    if (new_mode, new_lock) == (previous, previous_lock):
        return None
    Conversation.objects.filter(pk=conversation.pk).update(mode=new_mode, mode_locked=new_lock)
    conversation.mode, conversation.mode_locked = new_mode, new_lock
    return ModeChanged(mode=new_mode, previous=previous, source="user", locked=new_lock)


class IntimateBlocked(DomainError):
    code = "intimate_blocked"
    status_code = 403

    def __init__(self, reason: str) -> None:
        messages = {
            "avatar_disallows": "This avatar does not offer intimate mode.",
            "adult_required": "Intimate mode is for adults: confirm your age in your profile first.",
            "opt_in_required": "Intimate mode is off: turn it on in your profile first.",
        }
        super().__init__(messages.get(reason, "Intimate mode is not available."), field="mode")
        self.reason = reason

    def as_dict(self) -> dict[str, object]:
        return {**super().as_dict(), "reason": self.reason}


# --- The turn -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TurnRequest:
    content: str
    client_id: str | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass(slots=True)
class TurnResult:
    user_message: dict[str, Any]
    assistant_message: dict[str, Any] | None
    mode: str
    mode_event: dict[str, Any] | None
    duplicate: bool = False


@dataclass(slots=True)
class PreparedTurn:
    conversation_id: int
    user_id: int
    avatar_id: int
    mode: str
    user_message: dict[str, Any]
    mode_event: ModeChanged | None
    assistant_id: int | None = None
    assistant: Message | None = None  # the "streaming" row, finished in place when the reply ends
    duplicate_reply: dict[str, Any] | None = None
    messages: list[ChatMessage] = field(default_factory=list)
    prompt_tokens: int = 0
    params: CompletionParams | None = None
    fallback_lines: list[str] = field(default_factory=list)
    last_fallback: str | None = None
    lock_key: str = ""
    # What `_turn_store` writes once the prompt is built (None for a repeated client_id).
    request: TurnRequest | None = None
    decision: RouteDecision | None = None
    mode_locked: bool = False
    created_at: datetime | None = None
    # The model call, sent as soon as the prompt was built, before the turn's writes.
    stream: "StreamStarted | None" = None


@dataclass(slots=True)
class _Outcome:
    text: str
    status: str
    finish_reason: str
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_ms: int | None
    duration_ms: int
    error: LLMError | TurnError | None = None


def turn_request_validate(request: TurnRequest) -> TurnRequest:
    content = request.content.strip() if isinstance(request.content, str) else ""
    if not content:
        raise InvalidInput("content must not be empty.", field="content")
    if len(content) > settings.MESSAGE_MAX_CHARS:
        raise InvalidInput(f"content is longer than {settings.MESSAGE_MAX_CHARS} characters.", field="content")
    if request.client_id is not None and not (0 < len(request.client_id) <= CLIENT_ID_MAX):
        raise InvalidInput(f"client_id must be 1 to {CLIENT_ID_MAX} characters.", field="client_id")
    if request.model is not None:
        allowed = getattr(settings, "LLM_ALLOWED_MODELS", [])
        if not (0 < len(request.model) <= MODEL_NAME_MAX) or (allowed and request.model not in allowed):
            raise InvalidInput("model is not one this server offers.", field="model")
    if request.temperature is not None and not (0.0 <= request.temperature <= 2.0):
        raise InvalidInput("temperature must be between 0 and 2.", field="temperature")
    if request.max_tokens is not None and not (1 <= request.max_tokens <= settings.LLM_MAX_TOKENS_LIMIT):
        raise InvalidInput(f"max_tokens must be between 1 and {settings.LLM_MAX_TOKENS_LIMIT}.", field="max_tokens")
    return TurnRequest(content, request.client_id, request.model, request.temperature, request.max_tokens)


def _turn_lock_key(conversation_id: int) -> str:
    return f"turn-lock:{conversation_id}"


def _message_rate_check(user_id: int) -> None:
    limit: int = getattr(settings, "MESSAGE_RATE_PER_MINUTE", 30)
    window = int(time.time() // 60)
    key = f"msg-rate:{user_id}:{window}"
    cache.add(key, 0, timeout=70)
    if cache.incr(key) > limit:
        raise Throttled(f"Too many messages: at most {limit} a minute.", retry_after=60 - int(time.time() % 60))


def _route(
    conversation: "TurnConversation", avatar: AvatarForTurn, profile: Profile, content: str
) -> tuple[RouteDecision, ModeChanged | None]:
    block = intimate_block_reason(profile=profile, avatar_allows=avatar.intimate_allowed)
    bank = avatar.bank
    current = conversation.mode
    gate_event: ModeChanged | None = None
    if current == Mode.INTIMATE and block:
        # The gate closed since the last turn (opt-in withdrawn, avatar changed): leave intimate mode.
        current = Mode.SECRETARY
        gate_event = ModeChanged(
            mode=current, previous=Mode.INTIMATE, source="gate", blocked=Mode.INTIMATE, blocked_reason=block
        )
    decision = route_message(
        content,
        current_mode=current,
        locked=conversation.mode_locked,
        bank=bank,
        intimate_block=block,
        settings=RouterSettings.from_django_settings(),
    )
    locked = conversation.mode_locked if decision.lock is None else decision.lock
    if decision.switch or decision.blocked or locked != conversation.mode_locked:
        event = ModeChanged(
            mode=decision.mode,
            previous=conversation.mode,
            source=decision.source,
            matched=decision.matched,
            score=round(decision.score, 1),
            blocked=decision.blocked,
            blocked_reason=decision.blocked_reason,
            locked=locked,
        )
        return decision, event
    return decision, gate_event


def _turn_prepare(*, user_id: int, conversation_id: int, request: TurnRequest) -> PreparedTurn:
    """Check the turn may run, route it and build its prompt. Writes nothing: `_turn_store` does."""
    conversation = _turn_conversation_get(user_id=user_id, conversation_id=conversation_id)

    if request.client_id is not None:
        existing = Message.objects.filter(
            conversation_id=conversation_id, client_id=request.client_id, role=Role.USER
        ).first()
        if existing is not None:
            return _duplicate_prepared(conversation, existing)

    _message_rate_check(user_id)
    lock_key = _turn_locks_acquire(user_id=user_id, conversation_id=conversation_id)
    try:
        avatar = avatar_for_turn(avatar_id=conversation.avatar_id, version=conversation.avatar_version)
        return _turn_prompt_build(conversation, avatar, request, lock_key)
    except BaseException:
        _turn_locks_release(user_id=user_id, lock_key=lock_key)
        raise


def _turn_locks_acquire(*, user_id: int, conversation_id: int) -> str:
    """One reply at a time per conversation, and at most REPLIES_CONCURRENT_PER_USER per user.

    Both live in the cache (Redis across processes) with a TTL, so a crashed process cannot
    hold them for longer than TURN_LOCK_SECONDS.
    """
    lock_key = _turn_lock_key(conversation_id)
    lock_seconds: int = getattr(settings, "TURN_LOCK_SECONDS", 300)
    if not cache.add(lock_key, 1, timeout=lock_seconds):
        raise Busy("A reply is still being generated in this conversation; wait for it or stop it.")
    replies_key = _user_replies_key(user_id)
    cache.add(replies_key, 0, timeout=lock_seconds)
    limit: int = getattr(settings, "REPLIES_CONCURRENT_PER_USER", 3)
    if cache.incr(replies_key) > limit:
        _turn_locks_release(user_id=user_id, lock_key=lock_key)
        raise Throttled(f"At most {limit} replies can be generated at once; wait for one to finish.", retry_after=5)
    return lock_key


def _turn_locks_release(*, user_id: int, lock_key: str) -> None:
    cache.delete(lock_key)
    with contextlib.suppress(ValueError):  # the counter expired meanwhile: nothing to give back
        cache.decr(_user_replies_key(user_id))


def _user_replies_key(user_id: int) -> str:
    return f"user-replies:{user_id}"


def _duplicate_prepared(conversation: "TurnConversation | Conversation", existing: Message) -> PreparedTurn:
    reply = Message.objects.filter(reply_to_id=existing.pk).order_by("id").first()
    return PreparedTurn(
        conversation_id=conversation.pk,
        user_id=conversation.user_id,
        avatar_id=conversation.avatar_id,
        mode=conversation.mode,
        user_message={**message_dict(existing), "duplicate": True},
        mode_event=None,
        assistant_id=reply.pk if reply else None,
        duplicate_reply=message_dict(reply) if reply else None,
    )


def _turn_prompt_build(
    conversation: "TurnConversation", avatar: AvatarForTurn, request: TurnRequest, lock_key: str
) -> PreparedTurn:
    profile = conversation.profile
    decision, mode_event = _route(conversation, avatar, profile, request.content)
    now = timezone.now()
    summary = conversation.summary
    # We hold the conversation's lock: no message can be stored in it until this turn's are.
    history = _history_load(conversation.pk, after_id=summary.covers_until if summary else 0)
    facts = memory_list_for_prompt(
        user_id=conversation.user_id, avatar_id=conversation.avatar_id, limit=FACTS_IN_PROMPT
    )
    prompt_context = PromptContext(
        persona=avatar.persona,
        user_display_name=profile.display_name or conversation.username,
        facts=facts,
        now=now,
    )
    built = context_build(
        system_prompt=system_prompt_for_mode(decision.mode, prompt_context),
        summary=summary.text if summary else None,
        history=[HistoryItem(role=m.role, content=m.content) for m in history],
        user_message=request.content,
        post_history_instructions=post_history_prompt(prompt_context),
        budget=ContextBudget.from_django_settings(),
    )
    last_fallback = next((m.content for m in reversed(history) if m.status == Status.FALLBACK), None)
    return PreparedTurn(
        conversation_id=conversation.pk,
        user_id=conversation.user_id,
        avatar_id=avatar.id,
        mode=decision.mode,
        user_message={},
        mode_event=mode_event,
        messages=built.messages,
        prompt_tokens=built.prompt_tokens,
        params=CompletionParams(model=request.model, temperature=request.temperature, max_tokens=request.max_tokens),
        fallback_lines=list(avatar.fallback_lines),
        last_fallback=last_fallback,
        lock_key=lock_key,
        request=request,
        decision=decision,
        mode_locked=conversation.mode_locked if decision.lock is None else decision.lock,
        created_at=now,
    )


@dataclass(frozen=True, slots=True)
class TurnConversation:
    """What a turn reads of its conversation, its user and the summary: one query, compiled once."""

    pk: int
    user_id: int
    avatar_id: int
    avatar_version: Any  # the avatar's updated_at: the key of its per-version cache
    mode: str
    mode_locked: bool
    username: str
    profile: Profile  # unsaved: read-only here
    summary: SummaryForPrompt | None


def _turn_conversation_get(*, user_id: int, conversation_id: int) -> TurnConversation:
    rows = _TURN_CONVERSATION.rows(user_id=user_id, conversation_id=conversation_id)
    if not rows:
        raise NotFound("Conversation not found.")
    row = rows[0]
    pk, owner_id, avatar_id, avatar_version, mode, mode_locked, username = row[:7]
    profile_id, display_name, adult_confirmed_at, intimate_opt_in, summary_text, covers_until = row[7:]
    if profile_id is None:  # no profile row yet (a user made outside the API)
        profile, _ = Profile.objects.get_or_create(user_id=owner_id)
    else:
        profile = Profile(
            pk=profile_id,
            user_id=owner_id,
            display_name=display_name,
            adult_confirmed_at=adult_confirmed_at,
            intimate_opt_in=intimate_opt_in,
        )
    return TurnConversation(
        pk=pk,
        user_id=owner_id,
        avatar_id=avatar_id,
        avatar_version=avatar_version,
        mode=mode,
        mode_locked=mode_locked,
        username=username,
        profile=profile,
        summary=SummaryForPrompt(text=summary_text, covers_until=covers_until) if summary_text is not None else None,
    )


def _turn_conversation_query(*, user_id: int, conversation_id: int) -> QuerySet[Conversation, Any]:
    return Conversation.objects.filter(pk=conversation_id, user_id=user_id).values_list(
        "id",
        "user_id",
        "avatar_id",
        "avatar__updated_at",
        "mode",
        "mode_locked",
        "user__username",
        "user__profile__id",
        "user__profile__display_name",
        "user__profile__adult_confirmed_at",
        "user__profile__intimate_opt_in",
        "summary__text",
        "summary__covers_until_id",
    )


# Read on every turn before the model is called: compiled once (companion/db.py).
_TURN_CONVERSATION = CompiledQuery(_turn_conversation_query, arguments=("user_id", "conversation_id"))


def _turn_store(prepared: PreparedTurn) -> PreparedTurn:
    """Store the user message, the reply's "streaming" row and the conversation's mode, in one transaction.

    Releases the turn's locks if nothing is stored. When the same `client_id` raced in from
    another socket, the first one stored wins and the duplicate's turn is returned instead.
    """
    request, decision = prepared.request, prepared.decision
    assert request is not None
    assert decision is not None
    conversation_id = prepared.conversation_id
    try:
        with transaction.atomic():
            # A turn that died mid-stream leaves its reply "streaming"; we hold the lock, so any such row is stale.
            Message.objects.filter(conversation_id=conversation_id, status=Status.STREAMING).update(
                status=Status.FAILED, error_code="interrupted", finish_reason="error"
            )
            user_message = Message.objects.create(
                conversation_id=conversation_id,
                role=Role.USER,
                content=request.content,
                mode=decision.mode,
                client_id=request.client_id,
                route=decision.as_dict(),
            )
            assistant = Message.objects.create(
                conversation_id=conversation_id,
                role=Role.ASSISTANT,
                content="",
                mode=decision.mode,
                status=Status.STREAMING,
                reply_to=user_message,
            )
            Conversation.objects.filter(pk=conversation_id).update(
                mode=decision.mode,
                mode_locked=prepared.mode_locked,
                message_count=F("message_count") + 2,
                last_message_at=prepared.created_at,
                updated_at=prepared.created_at,
            )
    except IntegrityError as exc:
        _turn_locks_release(user_id=prepared.user_id, lock_key=prepared.lock_key)
        existing = Message.objects.filter(conversation_id=conversation_id, client_id=request.client_id).first()
        if existing is None:
            raise Conflict("The message could not be stored; try again.") from exc
        return _duplicate_prepared(Conversation.objects.get(pk=conversation_id), existing)
    except BaseException:
        _turn_locks_release(user_id=prepared.user_id, lock_key=prepared.lock_key)
        raise
    prepared.user_message = message_dict(user_message)
    prepared.assistant, prepared.assistant_id = assistant, assistant.pk
    return prepared


@dataclass(frozen=True, slots=True)
class HistoryRow:
    role: str
    content: str
    status: str


def _history_load(conversation_id: int, *, after_id: int) -> list[HistoryRow]:
    """The newest messages the summary does not cover, oldest first: one query, bounded by the context budget."""
    budget = ContextBudget.from_django_settings()
    rows = _HISTORY.rows(shape=budget.max_pairs * 2 + 2, conversation_id=conversation_id, after_id=after_id)
    rows.reverse()
    return [HistoryRow(*row) for row in rows]


def _history_query(*, conversation_id: int, after_id: int, shape: int) -> QuerySet[Message, Any]:
    return (
        Message.objects.filter(conversation_id=conversation_id, pk__gt=after_id)
        .exclude(status=Status.STREAMING)
        .order_by("-id")
        .values_list("role", "content", "status")[:shape]
    )


# Read on every turn before the model is called: compiled once (companion/db.py).
_HISTORY = CompiledQuery(_history_query, arguments=("conversation_id", "after_id"))


def _turn_finish(prepared: PreparedTurn, outcome: _Outcome) -> dict[str, Any]:
    """Store the reply's outcome on its row (one UPDATE) and release the turn's locks."""
    assistant = prepared.assistant
    assert assistant is not None
    try:
        assistant.content = outcome.text
        assistant.status = outcome.status
        assistant.finish_reason = outcome.finish_reason[:32]
        assistant.model = outcome.model[:200]
        assistant.prompt_tokens = outcome.prompt_tokens
        assistant.completion_tokens = outcome.completion_tokens
        assistant.ttft_ms = outcome.ttft_ms
        assistant.duration_ms = outcome.duration_ms
        assistant.error_code = outcome.error.code if outcome.error else ""
        assistant.save(update_fields=FINISHED_FIELDS)
        return message_dict(assistant)
    finally:
        _turn_locks_release(user_id=prepared.user_id, lock_key=prepared.lock_key)


FINISHED_FIELDS = [
    "content",
    "status",
    "finish_reason",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "ttft_ms",
    "duration_ms",
    "error_code",
]


# A reply's store gets a thread of its own: reply.end (and so a stop) waits for it, and in the
# one thread all other database work shares it queued behind other turns' prepares and stores.
_FINISH_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turn-finish")


def _memory_schedule(prepared: PreparedTurn) -> None:
    conversation_memory_schedule(conversation_id=prepared.conversation_id, message_id=prepared.user_message["id"])


async def _emit_safely(emit: EventSink, event: TurnEvent, broken: list[bool]) -> None:
    """Deliver an event; a failing sink (socket gone, channel layer down) must not stop the turn being stored."""
    if broken[0]:
        return
    try:
        await emit(event)
    except Exception:
        broken[0] = True
        logger.warning("event sink failed; the turn goes on and is stored", exc_info=True)


async def turn_prepare(
    *, user_id: int, conversation_id: int, request: TurnRequest, provider: LLMProvider | None = None
) -> PreparedTurn:
    """Validate, route the mode, build the context and store the user message.

    Every refusal (validation, not found, busy, throttled) is raised here, before anything
    is stored or streamed, so each interface can answer it in its own way (HTTP 4xx, an
    error frame, a CLI message).

    With `provider`, the model call goes out as soon as the prompt is built and the turn's
    writes run while it is under way, so they overlap the model's own latency instead of
    adding to the time to first token. The user message is still stored before this returns
    (so before `message.created`); if storing fails, the call is closed.
    """
    request = turn_request_validate(request)
    prepared = await database_sync_to_async(_turn_prepare)(
        user_id=user_id, conversation_id=conversation_id, request=request
    )
    if prepared.request is None:
        return prepared  # a repeated client_id: nothing to store, no model to call
    stream = _stream_start(provider, prepared) if provider is not None else None
    try:
        stored = await database_sync_to_async(_turn_store)(prepared)
    except BaseException:
        if stream is not None:
            await stream.aclose()
        raise
    if stream is not None and stored.assistant is None:
        await stream.aclose()  # the same client_id won a race: that turn is the reply
        stream = None
    stored.stream = stream
    return stored


def _stream_start(provider: LLMProvider, prepared: PreparedTurn) -> "StreamStarted | None":
    try:
        stream = provider.stream(prepared.messages, params=prepared.params)
    except LLMError:
        return None  # a refused parameter: `turn_execute` meets it again and answers it as always
    return StreamStarted(stream)


class StreamStarted:
    """A provider stream whose request is already on its way: its first event is being fetched.

    Iterating it gives that first event, then the rest; `aclose()` stops the fetch and closes
    the stream (and with it the upstream response).
    """

    def __init__(self, stream: AsyncIterator[StreamEvent]) -> None:
        self.started = time.perf_counter()
        self._stream = stream
        self._first: asyncio.Task[StreamEvent] | None = asyncio.ensure_future(self._first_fetch())

    async def _first_fetch(self) -> StreamEvent:
        return await anext(self._stream)

    def __aiter__(self) -> "StreamStarted":
        return self

    async def __anext__(self) -> StreamEvent:
        if self._first is not None:
            # Cancelling the task awaiting this cancels the fetch too: the stream is not left running.
            first, self._first = self._first, None
            return await first
        return await anext(self._stream)

    async def aclose(self) -> None:
        if self._first is not None:
            first, self._first = self._first, None
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()


async def turn_execute(
    prepared: PreparedTurn, *, provider: LLMProvider, emit: EventSink, cancel: asyncio.Event | None = None
) -> TurnResult:
    """Stream the reply of a prepared turn, store it, and emit the events in contract order."""
    broken = [False]
    await _emit_safely(emit, MessageCreated(prepared.user_message), broken)

    if not prepared.lock_key or prepared.assistant_id is None:
        # A repeated client_id: nothing new is stored and no model is called.
        if prepared.duplicate_reply is not None:
            await _emit_safely(emit, _reply_end_from_dict(prepared.duplicate_reply), broken)
        return TurnResult(prepared.user_message, prepared.duplicate_reply, prepared.mode, None, duplicate=True)

    if prepared.mode_event is not None:
        await _emit_safely(emit, prepared.mode_event, broken)
    await _emit_safely(emit, ReplyStart(message_id=prepared.assistant_id, mode=prepared.mode), broken)

    outcome = await _turn_stream(prepared, provider, emit, cancel or asyncio.Event(), broken)
    # The reply is stored even if this task is being cancelled (client gone): shield the write.
    try:
        finish = database_sync_to_async(_turn_finish, thread_sensitive=False, executor=_FINISH_EXECUTOR)
        assistant = await asyncio.shield(finish(prepared, outcome))
    except Exception:
        # The database failed us: the client still gets its reply.end, saying it was not kept.
        logger.exception("storing the reply failed", extra={"data": {"message_id": prepared.assistant_id}})
        outcome.status, outcome.error = Status.FAILED, StoreFailed("the reply could not be stored")
        assistant = {}
    await _emit_safely(
        emit,
        ReplyEnd(
            message_id=prepared.assistant_id,
            status=outcome.status,
            finish_reason=outcome.finish_reason,
            content=outcome.text,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            message=assistant,
            error=_error_dict(outcome.error) if outcome.error else None,
        ),
        broken,
    )
    if outcome.error is not None and outcome.status == Status.FAILED:
        await _emit_safely(
            emit,
            ErrorEvent(code=outcome.error.code, message=outcome.error.user_message, retryable=outcome.error.retryable),
            broken,
        )
    if assistant:
        # After reply.end, not before: the client's stop or reply must not wait on memory bookkeeping.
        # And off the one thread every turn's database work shares (thread_sensitive=False): its
        # reads would otherwise hold up the next turn's prepare and other turns' stores.
        try:
            await database_sync_to_async(_memory_schedule, thread_sensitive=False)(prepared)
        except Exception:
            logger.exception("scheduling memory work failed; the beat sweep catches up")
    return TurnResult(
        prepared.user_message,
        assistant,
        prepared.mode,
        prepared.mode_event.frame() if prepared.mode_event else None,
    )


async def turn_run(
    *,
    user_id: int,
    conversation_id: int,
    request: TurnRequest,
    provider: LLMProvider,
    emit: EventSink,
    cancel: asyncio.Event | None = None,
) -> TurnResult:
    """One whole turn: `turn_prepare` then `turn_execute`."""
    prepared = await turn_prepare(user_id=user_id, conversation_id=conversation_id, request=request, provider=provider)
    return await turn_execute(prepared, provider=provider, emit=emit, cancel=cancel)


def _error_dict(error: LLMError | TurnError) -> dict[str, Any]:
    return {"code": error.code, "message": error.user_message, "retryable": error.retryable}


def _reply_end_from_dict(reply: dict[str, Any]) -> ReplyEnd:
    usage = reply.get("usage") or {}
    return ReplyEnd(
        message_id=reply["id"],
        status=reply["status"],
        finish_reason=reply.get("finish_reason") or "",
        content=reply["content"],
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        message=reply,
    )


async def _turn_stream(
    prepared: PreparedTurn, provider: LLMProvider, emit: EventSink, cancel: asyncio.Event, broken: list[bool]
) -> _Outcome:
    assert prepared.assistant_id is not None
    message_id = prepared.assistant_id
    parts: list[str] = []
    end: list[StreamEnd] = []
    first_token_at: list[float] = []
    started = prepared.stream.started if prepared.stream is not None else time.perf_counter()

    async def consume() -> None:
        stream = (
            prepared.stream
            if prepared.stream is not None
            else provider.stream(prepared.messages, params=prepared.params)
        )
        try:
            seq = 0
            async for event in stream:
                if isinstance(event, TextDelta):
                    if not event.text:
                        continue
                    if not first_token_at:
                        first_token_at.append(time.perf_counter())
                    parts.append(event.text)
                    await _emit_safely(emit, Token(message_id=message_id, seq=seq, delta=event.text), broken)
                    seq += 1
                else:
                    end.append(event)
        finally:
            # Closing the iterator closes the upstream HTTP response, so the model stops generating.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    consumer = asyncio.ensure_future(consume())
    stopper = asyncio.ensure_future(cancel.wait())
    error: LLMError | None = None
    cancelled = False
    try:
        await asyncio.wait({consumer, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not consumer.done():
            cancelled = True
            consumer.cancel()
        try:
            await consumer
        except asyncio.CancelledError:
            cancelled = True
        except LLMError as exc:
            error = exc
        except Exception as exc:  # a provider broke its contract: treat it as unavailable, never a 500
            logger.exception("provider raised an untyped error")
            from llm.errors import Unavailable

            error = Unavailable(type(exc).__name__)
    except asyncio.CancelledError:
        # Our own task is being cancelled (the SSE client went away): stop upstream, keep what we have.
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        cancelled = True
    finally:
        stopper.cancel()

    duration_ms = int((time.perf_counter() - started) * 1000)
    ttft_ms = int((first_token_at[0] - started) * 1000) if first_token_at else None
    text = "".join(parts)
    model = end[0].model if end else (prepared.params.model if prepared.params and prepared.params.model else "")
    model = model or provider.default_model

    if cancelled:
        return _Outcome(
            text, Status.CANCELLED, "cancelled", model, prepared.prompt_tokens, count_tokens(text), ttft_ms, duration_ms
        )
    if error is None and end:
        usage = end[0].usage
        return _Outcome(
            text,
            Status.COMPLETE,
            end[0].finish_reason,
            model,
            usage.prompt_tokens,
            usage.completion_tokens,
            ttft_ms,
            duration_ms,
        )
    if error is None:
        from llm.errors import StreamIncomplete

        error = StreamIncomplete("stream ended without a finish reason")
    if parts:
        # Tokens already reached the user: keep them, say why it stopped.
        return _Outcome(
            text, Status.FAILED, "error", model, prepared.prompt_tokens, count_tokens(text), ttft_ms, duration_ms, error
        )
    line = _fallback_text(prepared, error)
    await _emit_safely(emit, Token(message_id=message_id, seq=0, delta=line), broken)
    return _Outcome(line, Status.FALLBACK, "error", model, prepared.prompt_tokens, 0, None, duration_ms, error)


def _fallback_text(prepared: PreparedTurn, error: LLMError) -> str:
    from llm.errors import NotConfigured

    if isinstance(error, NotConfigured):
        return NotConfigured.user_message
    return fallback_line_pick(lines=prepared.fallback_lines, last=prepared.last_fallback)


def turn_run_sync(**kwargs: Any) -> TurnResult:
    """`turn_run` for sync callers (management commands)."""
    from asgiref.sync import async_to_sync

    return async_to_sync(turn_run)(**kwargs)


__all__ = [
    "Busy",
    "EventSink",
    "IntimateBlocked",
    "PreparedTurn",
    "TurnRequest",
    "TurnResult",
    "conversation_create",
    "conversation_delete",
    "conversation_mode_set",
    "turn_execute",
    "turn_prepare",
    "turn_run",
    "turn_run_sync",
]
