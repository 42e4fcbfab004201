"""Fan-out of turn events to every socket of a conversation, through the channel layer.

One group per conversation (conversations belong to one user, so the group is exactly
"every socket of the same user on the same conversation"). With REDIS_URL the group spans
server processes.

A second, "control" group per conversation holds only the turn in flight: stop and resume
requests go there, so they reach the process running the turn even when none of the
conversation's sockets is on that process (the phone that asked dropped, or the turn came
in over SSE).

When the layer fails mid-turn (Redis went away), the rest of the turn's events go straight
to the sockets of the conversation on the process running it (`conversation_socket_add`),
so the client most likely watching still gets its reply instead of silence; sockets on
other processes get it when they reconnect and `resume`.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger("companion.ws")

GROUP_EVENT_TYPE = "turn.event"
STOP_TYPE = "turn.stop"
SNAPSHOT_REQUEST_TYPE = "turn.snapshot_request"
SNAPSHOT_TYPE = "turn.snapshot"
LISTEN_END_TYPE = "turn.listen_end"


class Event(Protocol):
    """An event of `conversations.turns.events`: what the sockets receive is its `frame()`."""

    def frame(self) -> dict[str, Any]: ...


def conversation_group_name(conversation_id: int) -> str:
    # Group names allow only ASCII letters, digits, '-', '_' and '.': build them from ids only.
    return f"conversation.{int(conversation_id)}"


def conversation_control_group_name(conversation_id: int) -> str:
    """The group of the turn in flight, wherever it runs: send stop and resume requests here."""
    return f"conversation.{int(conversation_id)}.control"


class LocalSocket(Protocol):
    """A socket of this process (the consumer): takes a group message as the layer would deliver it."""

    async def turn_event(self, message: dict[str, Any]) -> None: ...


_local_sockets: dict[int, set[LocalSocket]] = {}
# The event loop this process's sockets live on (the ASGI server's), for `group_event_send_from_thread`.
_sockets_loop: asyncio.AbstractEventLoop | None = None


def conversation_socket_add(conversation_id: int, socket: LocalSocket) -> None:
    """Register a socket of this process, for the events of a turn whose layer fails."""
    global _sockets_loop
    _local_sockets.setdefault(conversation_id, set()).add(socket)
    with contextlib.suppress(RuntimeError):
        _sockets_loop = asyncio.get_running_loop()


def conversation_socket_discard(conversation_id: int, socket: LocalSocket) -> None:
    sockets = _local_sockets.get(conversation_id)
    if sockets is not None:
        sockets.discard(socket)
        if not sockets:
            del _local_sockets[conversation_id]


def conversation_event_sink(conversation_id: int) -> Callable[[Event], Awaitable[None]]:
    """An `emit` that sends each event to every socket of the conversation.

    Once the layer fails, every later event of this sink (a turn) goes to this process's
    sockets of the conversation directly: never both ways, so none arrives twice.
    """
    layer = get_channel_layer()
    group = conversation_group_name(conversation_id)
    layer_down = False

    async def emit(event: Event) -> None:
        nonlocal layer_down
        if layer is None:
            return
        message: dict[str, Any] = {"type": GROUP_EVENT_TYPE, "frame": event.frame()}
        if not layer_down:
            try:
                await layer.group_send(group, message)
                return
            except Exception:
                layer_down = True
                logger.warning(
                    "channel layer unavailable: the rest of this turn goes to this process's sockets only",
                    extra={"data": {"conversation_id": conversation_id}},
                )
        await _local_sockets_send(conversation_id, message)

    return emit


async def _local_sockets_send(conversation_id: int, message: dict[str, Any]) -> None:
    for socket in list(_local_sockets.get(conversation_id, ())):
        try:
            await socket.turn_event(message)
        except Exception:
            logger.debug("a local socket went away", exc_info=True)


def conversation_event_broadcast(*, conversation_id: int, event: Event) -> None:
    """Send one event from sync code (a REST view), best effort: what it tells is stored already."""
    layer = get_channel_layer()
    if layer is not None:
        message: dict[str, Any] = {"type": GROUP_EVENT_TYPE, "frame": event.frame()}
        try:
            async_to_sync(layer.group_send)(conversation_group_name(conversation_id), message)
        except Exception:
            logger.warning(
                "channel layer unavailable: an event reaches the sockets when they resume",
                extra={"data": {"conversation_id": conversation_id}},
            )


def group_event_send_from_thread(*, group: str, frame: dict[str, Any], timeout: float = 5.0) -> None:
    """Send one frame to a group from sync code on any thread (a background task), best effort.

    The in-memory layer (embedded defaults) is bound to the event loop its sockets wait on: a
    message put from another thread's loop would sit unseen until something else wakes that
    loop. So when this process's sockets have a running loop, the send runs on it; otherwise
    (a Celery worker, with Redis) on a loop of this thread.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    message: dict[str, Any] = {"type": GROUP_EVENT_TYPE, "frame": frame}
    loop = _sockets_loop
    try:
        if loop is not None and loop.is_running() and not _on_loop(loop):
            asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop).result(timeout=timeout)
        else:
            async_to_sync(layer.group_send)(group, message)
    except Exception:
        logger.warning("channel layer unavailable: an event reaches the sockets when they resume", exc_info=True)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


@asynccontextmanager
async def control_listening(
    conversation_id: int, *, on_stop: Callable[[], None], snapshot: Callable[[], dict[str, Any] | None]
) -> AsyncIterator[None]:
    """While the body runs, answer the conversation's control group: `on_stop` for a stop, the
    reply so far (`snapshot()`) for a socket that resumes."""
    layer = get_channel_layer()
    group = conversation_control_group_name(conversation_id)
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
    listener = asyncio.ensure_future(_control_receive(layer, channel, on_stop, snapshot, ended))
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


async def _control_receive(
    layer: Any,
    channel: str,
    on_stop: Callable[[], None],
    snapshot: Callable[[], dict[str, Any] | None],
    ended: asyncio.Event,
) -> None:
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
            on_stop()
        elif kind == SNAPSHOT_REQUEST_TYPE:
            so_far = snapshot()
            if so_far is None:
                continue  # the resuming socket gets reply.start live
            try:
                await layer.send(message["reply_channel"], {"type": SNAPSHOT_TYPE, **so_far})
            except Exception:
                logger.warning("could not send the reply so far to a resuming socket", exc_info=True)


SOCKET_CLOSE_TYPE = "auth.revoked"  # the consumer's `auth_revoked`: it closes with 4401


def conversations_close(*, conversation_ids: Iterable[int]) -> None:
    """Stop the reply in flight and close every socket of these conversations, on every server
    process (the account that owned them is gone). A channel layer that is down loses only
    this: tickets and tokens are void already, so no socket reopens."""
    layer = get_channel_layer()
    if layer is None:
        return
    for conversation_id in conversation_ids:
        try:
            async_to_sync(layer.group_send)(conversation_control_group_name(conversation_id), {"type": STOP_TYPE})
            async_to_sync(layer.group_send)(conversation_group_name(conversation_id), {"type": SOCKET_CLOSE_TYPE})
        except Exception:
            logger.warning("could not close the sockets of an erased conversation", exc_info=True)
