"""The door: `turn_start`, which every interface calls, and the task that runs a started turn.

    turn_start(user_id, conversation_id, message, provider, listener)
      1. turn_request_parse(message)              request.py   refused here: InvalidInput
      2. _turn_prepare            (database)      prepare.py   NotFound, Throttled, Busy; reads,
                                                               routes, builds the prompt
      3. StartedStream                            stream.py    the model call goes out
      4. turn_messages_store      (database)      store.py     user message + reply row, while
                                                               the call is under way
      5. a task of its own: _turn_run -> RunningTurn, returned at once
           message.created, mode?, notice?,       events.py
           safety?, reply.start
           reply_stream: token...                 stream.py    until the end, an error or a stop
           reply_outcome_store    (its thread)    store.py     the reply's row, locks released
           reply.end, error?
           conversation_memory_schedule           memory work, after reply.end

A turn over the user's daily quota (`TurnPlan.quota`, decided in step 2) skips step 3: its
user message is stored alone, and the task sends `message.created` then an `error` frame
`quota_exceeded` (its `TurnResult.error`; the batch REST endpoint answers it with a 429).

Every other refusal is raised by `turn_start` itself, before anything is stored or streamed; each
interface answers it its own way (a 4xx, an error frame, a line in the terminal). Once
`turn_start` returns, the turn belongs to no interface: its events go to every socket of
the conversation (and to the caller's `listener`, if any), it listens for stop and resume
from any process, and if the client that asked goes away it still completes and is stored.
"""

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, TypeVar

from channels.db import database_sync_to_async

from conversations import realtime
from conversations.models import Status
from conversations.titles import conversation_title_schedule
from conversations.turns.events import (
    Action,
    AiNotice,
    ErrorEvent,
    MessageCreated,
    MessageUpdated,
    ReplyEnd,
    ReplyStart,
    SafetyAlert,
    TurnEvent,
)
from conversations.turns.locks import message_rate_check, turn_locks_acquire, turn_locks_release
from conversations.turns.prepare import (
    DuplicateTurn,
    TurnPlan,
    regenerate_target_get,
    turn_conversation_get,
    turn_duplicate_get,
    turn_plan_make,
)
from conversations.turns.request import (
    Regenerate,
    ScheduledMessage,
    TurnRequest,
    regenerate_check,
    turn_request_parse,
)
from conversations.turns.store import StoredTurn, reply_outcome_store, turn_messages_store
from conversations.turns.stream import (
    EventSink,
    ReplyOutcome,
    ReplyState,
    StartedStream,
    StoreFailed,
    ToolActor,
    reply_stream,
)
from core.errors import DomainError
from core.logging import exception_data
from images.services import chat_picture_for_message, picture_quota_refusal
from llm.base import ChatMessage, LLMProvider, ToolCall
from llm.prompts import AI_NOTICE
from llm.quotas import QuotaExceeded, quota_release
from memory.services import conversation_memory_schedule
from recall.services import recall_index_schedule
from secretary.tools import ToolOutcome, ToolRefused, tool_arguments_parse, tool_call_run

logger = logging.getLogger("companion.turns")


@dataclass(frozen=True, slots=True)
class TurnResult:
    user_message: dict[str, Any]
    assistant_message: dict[str, Any] | None
    mode: str
    mode_event: dict[str, Any] | None
    duplicate: bool = False
    error: DomainError | None = None  # a turn refused after its user message was stored (the quota)


@dataclass(slots=True)
class RunningTurn:
    """A started turn, as its caller holds it: set `cancel` to stop it, await `result()` for its end."""

    conversation_id: int
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    reply: ReplyState | None = None  # from reply.start on
    task: "asyncio.Task[TurnResult] | None" = None

    async def result(self) -> TurnResult:
        """The finished turn. Shielded: a caller that gives up waiting does not cancel the turn."""
        assert self.task is not None
        return await asyncio.shield(self.task)

    async def result_or_stop(self, stop: asyncio.Event) -> TurnResult:
        """The finished turn; setting `stop` meanwhile stops the reply, as a client's stop does."""
        assert self.task is not None
        waiter = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait({waiter, self.task}, return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                self.cancel.set()
            return await self.result()
        finally:
            waiter.cancel()

    def snapshot(self) -> dict[str, object] | None:
        """The reply so far, for a socket that resumes; None before reply.start."""
        return self.reply.snapshot() if self.reply is not None else None


async def turn_start(
    *,
    user_id: int,
    conversation_id: int,
    message: Mapping[str, Any] | ScheduledMessage | Regenerate,
    provider: LLMProvider,
    listener: EventSink | None = None,
) -> RunningTurn:
    """Check, prepare and store a user's message, start the reply, and return the running turn.

    `message` holds the fields of CONTRACT.md's message (`content`, `client_id`, `model`,
    `temperature`, `max_tokens`). Raises a `DomainError` for anything refused; nothing is
    stored then. A repeated `client_id` is not stored twice: the returned turn replays what
    the first one stored.

    A `ScheduledMessage` (server-side only: a reminder, a check-in) is the other kind of
    request this door takes: it runs `conversations.turns.scheduled` instead.
    """
    if isinstance(message, ScheduledMessage):
        # Imported here: scheduled.py builds on this module (RunningTurn, the emitter).
        from conversations.turns.scheduled import scheduled_turn_start

        return await scheduled_turn_start(
            user_id=user_id, conversation_id=conversation_id, message=message, provider=provider, listener=listener
        )
    request = regenerate_check(message) if isinstance(message, Regenerate) else turn_request_parse(message)
    # From here on, in a task of its own: a caller cancelled meanwhile (its client went away)
    # must not leave the conversation locked or a stored message without its reply. The turn
    # then runs on without it, as it would had the client left a moment later.
    begin = asyncio.get_running_loop().create_task(
        _turn_begin(user_id, conversation_id, request, provider, listener), context=contextvars.Context()
    )
    begin.add_done_callback(_exception_retrieve)
    return await asyncio.shield(begin)


async def _turn_begin(
    user_id: int,
    conversation_id: int,
    request: TurnRequest | Regenerate,
    provider: LLMProvider,
    listener: EventSink | None,
) -> "RunningTurn":
    prepared = await _on_begin_thread(
        _turn_prepare,
        user_id=user_id,
        conversation_id=conversation_id,
        request=request,
        tools_supported=bool(getattr(provider, "supports_tools", False)),
    )
    if isinstance(prepared, DuplicateTurn):
        return _duplicate_start(prepared, listener)
    plan = prepared
    refusal = plan.quota_refusal
    if refusal is not None and plan.regenerate is not None:
        # A regeneration over the quota stores nothing (its user message is already there): refused.
        await _on_begin_thread(_turn_begin_undo, plan)
        raise refusal
    if refusal is not None:
        # Over the daily quota: the user message is stored, no model is called (CONTRACT.md).
        stored_alone = await _on_begin_thread(_turn_store, plan, with_reply=False)
        if isinstance(stored_alone, DuplicateTurn):
            return _duplicate_start(stored_alone, listener)
        return _turn_task_start(conversation_id, listener, partial(_turn_refused, plan, stored_alone, refusal))
    # The model call goes out now; the writes below overlap its latency instead of adding to
    # the time to first token. The user message is still stored before message.created.
    try:
        params = replace(plan.request.params, model=plan.model, tools=plan.tools)
        stream = StartedStream(provider, plan.messages, params)
    except BaseException:
        await _on_begin_thread(_turn_begin_undo, plan)
        raise
    try:
        stored = await _on_begin_thread(_turn_store, plan)
    except BaseException:
        await _stream_close_quietly(stream)
        raise
    if isinstance(stored, DuplicateTurn):
        await _stream_close_quietly(stream)  # the same client_id won a race: that turn is the reply
        return _duplicate_start(stored, listener)
    default_model = getattr(provider, "default_model", "")
    return _turn_task_start(conversation_id, listener, partial(_turn_run, plan, stored, stream, default_model))


async def _stream_close_quietly(stream: StartedStream) -> None:
    # A failure to close must not hide why the turn did not start.
    try:
        await stream.aclose()
    except Exception:
        logger.warning("closing the model call of a turn that did not start failed", exc_info=True)


def _exception_retrieve(task: "asyncio.Task[RunningTurn]") -> None:
    # The caller that awaited it may be gone. A refusal (Busy, NotFound...) is its answer, not
    # an error to log; anything else (the database down) is.
    if task.cancelled():
        return
    error = task.exception()
    if error is not None and not isinstance(error, DomainError):
        logger.error("a turn could not start", extra={"data": exception_data(error)})


def turn_running(conversation_id: int) -> bool:
    """Whether this process runs a turn of the conversation now."""
    return conversation_id in _running


def turn_cancel_local(conversation_id: int) -> bool:
    """Stop the conversation's turn if this process runs it; False if it runs elsewhere (or nowhere)."""
    running = _running.get(conversation_id)
    if running is None:
        return False
    running.cancel.set()
    return True


# --- Preparing and storing (sync, on the database thread) ----------------------------------


def _turn_prepare(
    *, user_id: int, conversation_id: int, request: TurnRequest | Regenerate, tools_supported: bool
) -> TurnPlan | DuplicateTurn:
    conversation = turn_conversation_get(user_id=user_id, conversation_id=conversation_id)
    if isinstance(request, TurnRequest):
        duplicate = turn_duplicate_get(
            conversation_id=conversation.pk, mode=conversation.mode, client_id=request.client_id
        )
        if duplicate is not None:
            return duplicate
    # Locks first: a message refused as busy is not one the user sent, and does not count
    # toward the rate. The rate is checked while the locks are held, and frees them if it refuses.
    turn_locks_acquire(user_id=user_id, conversation_id=conversation_id)
    try:
        message_rate_check(user_id=user_id)
        if isinstance(request, Regenerate):
            # Read under the lock: no turn can store a newer message meanwhile.
            target = regenerate_target_get(conversation_id=conversation.pk, regenerate=request)
            return turn_plan_make(
                conversation=conversation,
                request=TurnRequest(content=target.content),
                tools_supported=tools_supported,
                regenerate=target,
            )
        return turn_plan_make(conversation=conversation, request=request, tools_supported=tools_supported)
    except BaseException:
        turn_locks_release(user_id=user_id, conversation_id=conversation_id)
        raise


def _turn_store(plan: TurnPlan, *, with_reply: bool = True) -> StoredTurn | DuplicateTurn:
    """Store the turn's messages; the locks (and the quota's reservation) are released when
    nothing new was stored, or when no reply will follow (`with_reply=False`)."""
    try:
        stored = turn_messages_store(plan, with_reply=with_reply)
    except BaseException:
        _turn_begin_undo(plan)
        raise
    if isinstance(stored, DuplicateTurn):
        _turn_begin_undo(plan)
    elif not with_reply:
        turn_locks_release(user_id=plan.user_id, conversation_id=plan.conversation_id)
    return stored


def _turn_begin_undo(plan: TurnPlan) -> None:
    """A prepared turn that will call no model: its locks and its quota reservation are given back."""
    turn_locks_release(user_id=plan.user_id, conversation_id=plan.conversation_id)
    quota_release(ticket=plan.quota_ticket)


def _turn_end(plan: TurnPlan, stored: StoredTurn, outcome: ReplyOutcome, priced_as: str) -> dict[str, Any]:
    try:
        return reply_outcome_store(stored=stored, outcome=outcome, plan=plan, priced_as=priced_as)
    finally:
        turn_locks_release(user_id=plan.user_id, conversation_id=plan.conversation_id)


def _memory_schedule(stored: StoredTurn, conversation_id: int) -> None:
    # A reply regenerated to the same words reads no new facts from them.
    facts = not stored.regenerated or stored.edited
    conversation_memory_schedule(conversation_id=conversation_id, message_id=stored.user_message["id"], facts=facts)
    recall_index_schedule(conversation_id=conversation_id)
    conversation_title_schedule(conversation_id=conversation_id)


# The turn's database work runs on two threads of its own, not on the one thread that
# `database_sync_to_async` shares with every view and consumer (docs/architecture.md, "Threads"):
# - "turn-begin" prepares and stores every turn. The door runs it in a task of its own, which
#   a view's thread (busy waiting for that view) could not serve, and which must finish even
#   when its caller is cancelled.
# - "turn-end" writes each reply's outcome: reply.end, and so a stop, waits for that write
#   alone, never behind other turns' prepares and stores.
_BEGIN_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turn-begin")
_END_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turn-end")

_T = TypeVar("_T")


async def _on_begin_thread(function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    call = database_sync_to_async(function, thread_sensitive=False, executor=_BEGIN_EXECUTOR)
    result: _T = await call(*args, **kwargs)
    return result


# --- Running (async, in a task of its own) -------------------------------------------------

_running: dict[int, RunningTurn] = {}


TurnBody = Callable[[RunningTurn, EventSink], Awaitable[TurnResult]]


def _turn_task_start(conversation_id: int, listener: EventSink | None, body: TurnBody) -> RunningTurn:
    running = RunningTurn(conversation_id=conversation_id)
    emit = turn_emitter(conversation_id, listener)

    async def run() -> TurnResult:
        # Listening before the first event: a client can only ask to stop or resume once it saw one.
        async with realtime.control_listening(conversation_id, on_stop=running.cancel.set, snapshot=running.snapshot):
            return await body(running, emit)

    _running[conversation_id] = running
    # A context of its own, not the caller's: a view runs inside Django's middleware
    # async_to_sync, whose thread executor quits when the view returns, and a task that
    # inherited it could not store its reply once the request is over.
    running.task = asyncio.get_running_loop().create_task(run(), context=contextvars.Context())

    def forget(_: object) -> None:
        if _running.get(conversation_id) is running:
            del _running[conversation_id]

    running.task.add_done_callback(forget)
    return running


def turn_emitter(conversation_id: int, listener: EventSink | None) -> EventSink:
    """Every event to the caller's listener and the conversation's sockets."""
    sinks: list[EventSink] = [realtime.conversation_event_sink(conversation_id)]
    if listener is not None:
        sinks.insert(0, listener)
    return _emitter_of(*sinks)


def _emitter_of(*sinks: EventSink) -> EventSink:
    """Each event to each sink. A failing sink (a socket gone, the channel layer down) is logged
    once and skipped: the turn goes on and is stored."""
    broken: set[int] = set()

    async def emit(event: TurnEvent) -> None:
        for index, sink in enumerate(sinks):
            if index in broken:
                continue
            try:
                await sink(event)
            except Exception:
                broken.add(index)
                logger.warning("event sink failed; the turn goes on and is stored", exc_info=True)

    return emit


def _duplicate_start(duplicate: DuplicateTurn, listener: EventSink | None) -> RunningTurn:
    """A repeated client_id: a task that answers with the first turn's messages. It is not the
    conversation's running turn (a stop or a resume goes to that one), and calls no model."""
    running = RunningTurn(conversation_id=duplicate.conversation_id)
    running.task = asyncio.get_running_loop().create_task(
        _duplicate_replay(duplicate, turn_emitter(duplicate.conversation_id, listener), listener),
        context=contextvars.Context(),
    )
    return running


async def _duplicate_replay(duplicate: DuplicateTurn, emit: EventSink, listener: EventSink | None) -> TurnResult:
    await emit(MessageCreated(duplicate.user_message))
    if duplicate.safety_alert is not None:
        # The client retried: the device that missed the crisis card gets it now. It is the same
        # referral, so the operator's counts are not incremented again.
        await emit(duplicate.safety_alert)
    reply = duplicate.reply
    if reply is not None and reply["status"] == Status.STREAMING:
        # The first turn is still streaming: its events reach every socket as they come. Its
        # end is this one's answer; the caller's own listener (SSE) gets that reply.end too.
        live = _running.get(duplicate.conversation_id)
        reply = (await live.result()).assistant_message if live is not None else None
        if reply and listener is not None:
            await _emitter_of(listener)(_reply_end_from_dict(reply))
    elif reply is not None:
        await emit(_reply_end_from_dict(reply))
    return TurnResult(duplicate.user_message, reply or None, duplicate.mode, None, duplicate=True)


async def _turn_run(
    plan: TurnPlan,
    stored: StoredTurn,
    stream: StartedStream,
    default_model: str,
    running: RunningTurn,
    emit: EventSink,
) -> TurnResult:
    reply_state = ReplyState(message_id=stored.reply_id, mode=plan.mode)
    try:
        if stored.edited:
            await emit(MessageUpdated(stored.user_message))
        elif not stored.regenerated:
            await emit(MessageCreated(stored.user_message))
        if plan.mode_event is not None:
            await emit(plan.mode_event)
        if plan.ai_notice:
            await emit(AiNotice(text=AI_NOTICE))
        if plan.crisis.crisis:
            # Numbers only in the log: never the message, nor the phrases it matched.
            logger.info(
                "crisis detected",
                extra={
                    "data": {
                        "conversation_id": plan.conversation_id,
                        "message_id": stored.user_message["id"],
                        "score": round(plan.crisis.score, 3),
                        "categories": sorted({m.category for m in plan.crisis.matches}),
                    }
                },
            )
            resources = tuple(resource.as_dict() for resource in plan.resources)
            await emit(SafetyAlert(message_id=stored.user_message["id"], resources=resources))
        running.reply = reply_state
        if stored.regenerated:
            alternatives = tuple(stored.reply["alternatives"])
            await emit(
                ReplyStart(stored.reply_id, plan.mode, reply_to=stored.user_message["id"], alternatives=alternatives)
            )
        else:
            await emit(ReplyStart(message_id=stored.reply_id, mode=plan.mode))
    except asyncio.CancelledError:
        # Cancelled before the reply began (the process is stopping): close the call, end the
        # reply's row as cancelled and free the locks, or they would outlive the turn.
        running.cancel.set()
    outcome = await reply_stream(
        plan=plan,
        stream=stream,
        reply=reply_state,
        cancel=running.cancel,
        emit=emit,
        default_model=default_model,
        act=_tool_actor(plan, stored, reply_state, emit) if plan.tools else None,
    )
    reply_state.ended = True  # a socket resuming from now on reads the stored reply
    # The reply is stored even if this task is being cancelled (client gone): shield the write.
    try:
        end = database_sync_to_async(_turn_end, thread_sensitive=False, executor=_END_EXECUTOR)
        reply: dict[str, Any] = await asyncio.shield(end(plan, stored, outcome, plan.model or default_model))
    except Exception:
        # The database failed us: the client still gets its reply.end, saying it was not kept.
        logger.exception("storing the reply failed", extra={"data": {"message_id": stored.reply_id}})
        outcome = replace(outcome, status=Status.FAILED, error=StoreFailed("the reply could not be stored"))
        reply = {}
    if outcome.closing is not None:
        # reply.end says the model stopped: the upstream response is closed before it is sent.
        await asyncio.gather(outcome.closing, return_exceptions=True)
    error = outcome.error
    await emit(
        ReplyEnd(
            message_id=stored.reply_id,
            status=outcome.status,
            finish_reason=outcome.finish_reason,
            content=outcome.text,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            message=reply,
            error={"code": error.code, "message": error.user_message, "retryable": error.retryable} if error else None,
        )
    )
    if error is not None and outcome.status == Status.FAILED:
        await emit(ErrorEvent(code=error.code, message=error.user_message, retryable=error.retryable))
    if reply and plan.picture is not None:
        await _picture_send(plan, stored, emit)
    if reply:
        # After reply.end, not before: the client's stop or reply must not wait on memory bookkeeping.
        # And off the one thread every turn's database work shares (thread_sensitive=False): its
        # reads would otherwise hold up the next turn's prepare and other turns' stores.
        try:
            await database_sync_to_async(_memory_schedule, thread_sensitive=False)(stored, plan.conversation_id)
        except Exception:
            logger.exception("scheduling memory work failed; the beat sweep catches up")
    return TurnResult(stored.user_message, reply, plan.mode, plan.mode_event.frame() if plan.mode_event else None)


async def _picture_send(plan: TurnPlan, stored: StoredTurn, emit: EventSink) -> None:
    """The picture the user asked for: a message of its own after the reply, made in the background."""
    try:
        picture, refusal = await _on_begin_thread(
            _picture_for_message, plan.user_id, plan.conversation_id, plan.picture or "", stored.user_message["id"]
        )
    except Exception as exc:  # the reply stands; its text may be quoted by the error, so not logged
        logger.error(
            "asking for a picture failed",
            extra={"data": {"message_id": stored.user_message["id"], **exception_data(exc)}},
        )
        return
    await emit(MessageCreated(picture))
    if refusal is not None:
        await emit(ErrorEvent(code=refusal.code, message=refusal.message, retry_after=refusal.retry_after))


def _picture_for_message(
    user_id: int, conversation_id: int, request_text: str, message_id: int
) -> tuple[dict[str, Any], QuotaExceeded | None]:
    picture = chat_picture_for_message(
        user_id=user_id, conversation_id=conversation_id, request_text=request_text, message_id=message_id
    )
    return picture, picture_quota_refusal(user_id=user_id, message=picture)


async def _turn_refused(
    plan: TurnPlan, stored: StoredTurn, refusal: QuotaExceeded, running: RunningTurn, emit: EventSink
) -> TurnResult:
    """A turn over the quota: its stored user message, then the error frame; no reply, no model call."""
    await emit(MessageCreated(stored.user_message))
    await emit(
        ErrorEvent(
            code=refusal.code, message=refusal.message, retryable=refusal.retryable, retry_after=refusal.retry_after
        )
    )
    return TurnResult(stored.user_message, None, plan.mode, None, error=refusal)


def _tool_actor(plan: TurnPlan, stored: StoredTurn, reply: ReplyState, emit: EventSink) -> ToolActor:
    """Runs a round's tool calls for this turn's user, one after another, each with its `action` frame."""
    offered = {tool.name for tool in plan.tools}

    async def act(calls: tuple[ToolCall, ...]) -> list[ChatMessage]:
        answers: list[ChatMessage] = []
        for call in calls:
            arguments: dict[str, Any] = {}
            try:
                arguments = tool_arguments_parse(call.arguments)
                if call.name not in offered:
                    raise ToolRefused("unknown_tool", f"There is no tool named {call.name[:64]!r}.")
                # The write is shielded: a stop (or a client gone) must not leave half an action.
                outcome = await asyncio.shield(
                    _on_begin_thread(
                        tool_call_run,
                        user_id=plan.user_id,
                        conversation_id=plan.conversation_id,
                        source_message_id=stored.user_message["id"],
                        name=call.name,
                        arguments=arguments,
                    )
                )
            except ToolRefused as refused:
                outcome = ToolOutcome(error={"code": refused.code, "message": refused.message})
            # Names and codes only in the log: never the arguments (they hold the user's words).
            logger.info(
                "tool called",
                extra={
                    "data": {
                        "message_id": stored.reply_id,
                        "tool": call.name[:64],
                        "error": (outcome.error or {}).get("code"),
                    }
                },
            )
            action = Action(
                message_id=stored.reply_id,
                name=call.name[:64],
                arguments=arguments,
                result=outcome.result,
                error=outcome.error,
            )
            reply.actions.append({k: v for k, v in action.frame().items() if k not in ("type", "message_id")})
            await emit(action)
            answers.append(ChatMessage(role="tool", content=outcome.for_model(), tool_call_id=call.id))
        return answers

    return act


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
