"""Fan-out of turn events to every socket of a conversation, through the channel layer.

One group per conversation (conversations belong to one user, so the group is exactly
"every socket of the same user on the same conversation"). With REDIS_URL the group spans
server processes.
"""

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from conversations.events import ReplyStart, Token, TurnEvent
from conversations.services import EventSink, PreparedTurn, TurnResult, turn_execute
from llm.base import LLMProvider

GROUP_EVENT_TYPE = "turn.event"


def conversation_group_name(conversation_id: int) -> str:
    # Group names allow only ASCII letters, digits, '-', '_' and '.': build them from ids only.
    return f"conversation.{int(conversation_id)}"


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
# A turn belongs to the process that started it. Stop and resume requests reach every
# process through the conversation's group; only the one that holds the turn acts on them.


@dataclass(slots=True)
class RunningTurn:
    conversation_id: int
    cancel: asyncio.Event
    message_id: int | None = None
    mode: str = ""
    deltas: list[str] = field(default_factory=list)
    task: "asyncio.Future[TurnResult] | None" = None


_running: dict[int, RunningTurn] = {}
_snapshot_claims: dict[tuple[int, str], float] = {}


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

    _running[prepared.conversation_id] = running
    running.task = asyncio.ensure_future(turn_execute(prepared, provider=provider, emit=emit, cancel=running.cancel))

    def forget(_: object) -> None:
        if _running.get(prepared.conversation_id) is running:
            del _running[prepared.conversation_id]

    running.task.add_done_callback(forget)
    return running


def turn_running(conversation_id: int) -> bool:
    return conversation_id in _running


def turn_cancel_local(conversation_id: int) -> bool:
    running = _running.get(conversation_id)
    if running is None:
        return False
    running.cancel.set()
    return True


def turn_snapshot_local(conversation_id: int) -> dict[str, Any] | None:
    running = _running.get(conversation_id)
    if running is None or running.message_id is None:
        return None
    return {"message_id": running.message_id, "mode": running.mode, "deltas": list(running.deltas)}


def snapshot_claim(conversation_id: int, reply_channel: str) -> bool:
    """True for the first socket of this process to answer a resume request (all of them receive it)."""
    now = time.monotonic()
    for key, at in list(_snapshot_claims.items()):
        if now - at > 60:
            del _snapshot_claims[key]
    key = (conversation_id, reply_channel)
    if key in _snapshot_claims:
        return False
    _snapshot_claims[key] = now
    return True
