"""Fan-out of turn events to every socket of a conversation, through the channel layer.

One group per conversation (conversations belong to one user, so the group is exactly
"every socket of the same user on the same conversation"). With REDIS_URL the group spans
server processes.

A second, "control" group per conversation holds only the turn in flight: stop and resume
requests go there, so they reach the process running the turn even when none of the
conversation's sockets is on that process (the phone that asked dropped, or the turn came
in over SSE).
"""

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from conversations.events import ReplyStart, Token, TurnEvent
from conversations.services import EventSink, PreparedTurn, TurnResult, turn_execute
from llm.base import LLMProvider

logger = logging.getLogger("companion.ws")

GROUP_EVENT_TYPE = "turn.event"
STOP_TYPE = "turn.stop"
SNAPSHOT_REQUEST_TYPE = "turn.snapshot_request"
SNAPSHOT_TYPE = "turn.snapshot"
LISTEN_END_TYPE = "turn.listen_end"


def conversation_group_name(conversation_id: int) -> str:
    # Group names allow only ASCII letters, digits, '-', '_' and '.': build them from ids only.
    return f"conversation.{int(conversation_id)}"


def conversation_control_group_name(conversation_id: int) -> str:
    """The group of the turn in flight, wherever it runs: send stop and resume requests here."""
    return f"conversation.{int(conversation_id)}.control"


def conversation_event_sink(conversation_id: int) -> EventSink:
    """An `emit` that sends each event to every socket of the conversation."""
    layer = get_channel_layer()
    group = conversation_group_name(conversation_id)

    async def emit(event: TurnEvent) -> None:
        if layer is not None:
            await layer.group_send(group, {"type": GROUP_EVENT_TYPE, "frame": event.frame()})

    return emit


def conversation_event_broadcast(*, conversation_id: int, event: TurnEvent) -> None:
    """Send one event from sync code (a REST view)."""
    layer = get_channel_layer()
    if layer is not None:
        message: dict[str, Any] = {"type": GROUP_EVENT_TYPE, "frame": event.frame()}
        async_to_sync(layer.group_send)(conversation_group_name(conversation_id), message)


# --- Turns running in this process ----------------------------------------------------------
# A turn belongs to the process that started it. While it runs, it listens on the
# conversation's control group, so stop and resume requests from any process reach it.


@dataclass(slots=True)
class RunningTurn:
    conversation_id: int
    cancel: asyncio.Event
    message_id: int | None = None
    mode: str = ""
    deltas: list[str] = field(default_factory=list)
    task: "asyncio.Future[TurnResult] | None" = None

    def snapshot(self) -> dict[str, Any] | None:
        """The reply so far, for a socket that resumes: None before the reply exists."""
        if self.message_id is None:
            return None
        return {"message_id": self.message_id, "mode": self.mode, "deltas": list(self.deltas)}


_running: dict[int, RunningTurn] = {}


def turn_start_background(
    prepared: PreparedTurn, *, provider: LLMProvider, also_emit: EventSink | None = None
) -> RunningTurn:
    """Run a prepared turn in its own task, fanned out to the conversation's sockets.

    The task does not belong to any socket: if the one that asked goes away, the reply
    still completes and is stored.
    """
    running = RunningTurn(conversation_id=prepared.conversation_id, cancel=asyncio.Event())
    fan_out = conversation_event_sink(prepared.conversation_id)

    async def emit(event: TurnEvent) -> None:
        if isinstance(event, Token):
            running.deltas.append(event.delta)
        elif isinstance(event, ReplyStart):
            running.message_id, running.mode = event.message_id, event.mode
        if also_emit is not None:
            await also_emit(event)
        await fan_out(event)

    async def run() -> TurnResult:
        # Listening before the first event: a client can only ask to stop or resume once it saw one.
        async with _control_listening(running):
            return await turn_execute(prepared, provider=provider, emit=emit, cancel=running.cancel)

    _running[prepared.conversation_id] = running
    # A context of its own, not the caller's: a view runs inside Django's middleware
    # async_to_sync, whose thread executor quits when the view returns, and a task that
    # inherited it could not store its reply once the request is over.
    running.task = asyncio.get_running_loop().create_task(run(), context=contextvars.Context())

    def forget(_: object) -> None:
        if _running.get(prepared.conversation_id) is running:
            del _running[prepared.conversation_id]

    running.task.add_done_callback(forget)
    return running


def turn_running(conversation_id: int) -> bool:
    return conversation_id in _running


def turn_cancel_local(conversation_id: int) -> bool:
    """Stop the conversation's turn if this process runs it; False if it runs elsewhere (or nowhere)."""
    running = _running.get(conversation_id)
    if running is None:
        return False
    running.cancel.set()
    return True


@asynccontextmanager
async def _control_listening(running: RunningTurn) -> AsyncIterator[None]:
    layer = get_channel_layer()
    group = conversation_control_group_name(running.conversation_id)
    channel: str | None = None
    if layer is not None:
        try:
            channel = await layer.new_channel()
            await layer.group_add(group, channel)
        except Exception:
            # The turn still runs and is stored; only stop and resume from other sockets are lost.
            logger.warning("channel layer unavailable: this turn cannot be stopped or resumed", exc_info=True)
            channel = None
    if layer is None or channel is None:
        yield
        return
    ended = asyncio.Event()
    listener = asyncio.ensure_future(_control_receive(layer, channel, running, ended))
    try:
        yield
    finally:
        ended.set()
        try:
            await layer.group_discard(group, channel)
            # Ended by a message, not cancelled: with channels_redis, cancelling a receive that
            # holds the process's read can drop a message meant for another socket (the reply.end).
            await layer.send(channel, {"type": LISTEN_END_TYPE})
        except Exception:
            logger.warning("channel layer unavailable when the turn ended", exc_info=True)
            listener.cancel()


async def _control_receive(layer: Any, channel: str, running: RunningTurn, ended: asyncio.Event) -> None:
    while True:
        try:
            message = await layer.receive(channel)
        except Exception:
            if ended.is_set():
                return
            logger.warning("channel layer receive failed; listening again", exc_info=True)
            await asyncio.sleep(0.5)
            continue
        kind = message.get("type")
        if kind == LISTEN_END_TYPE:
            return
        if kind == STOP_TYPE:
            running.cancel.set()
        elif kind == SNAPSHOT_REQUEST_TYPE:
            snapshot = running.snapshot()
            if snapshot is None:
                continue  # the resuming socket gets reply.start live
            try:
                await layer.send(message["reply_channel"], {"type": SNAPSHOT_TYPE, **snapshot})
            except Exception:
                logger.warning("could not send the reply so far to a resuming socket", exc_info=True)
