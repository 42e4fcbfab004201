"""The chat websocket: parse a frame, check it, call the turn service, forward events.

Frames and their order are fixed by CONTRACT.md. Every socket of a conversation joins its
group; turn events go to the group, so a phone and a tablet see the same stream. A turn
runs in a task of its own: if the socket that asked drops, the reply still completes and
is stored. `stop` and `resume` go to the conversation's control group, where the turn in
flight listens, so they reach the process running it whichever server the socket is on.
"""

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from accounts.selectors import token_family_group_name, user_group_name
from conversations import realtime, services
from conversations.selectors import message_dicts, message_get_owned, message_list_after
from conversations.tickets import ws_ticket_redeem
from conversations.turns import turn_cancel_local, turn_running, turn_start
from conversations.turns.events import (
    AlternativeSelected,
    ErrorEvent,
    MessageCreated,
    MessagesDeleted,
    ModeChanged,
    ReplyStart,
    Token,
    TurnEvent,
)
from conversations.turns.locks import message_rate_check
from conversations.turns.request import Regenerate
from core.errors import DomainError, NotFound, Throttled, Unavailable
from core.logging import exception_data
from core.modes import Mode
from core.outage import OUTAGE_ERRORS, UNAVAILABLE_MESSAGE
from images.prompts import REQUEST_MAX_CHARS as PICTURE_PROMPT_MAX
from images.services import chat_picture_from_frame, picture_quota_refusal
from llm.quotas import QuotaExceeded
from llm.registry import provider_get

logger = logging.getLogger("companion.ws")

FRAME_MAX_BYTES = 64 * 1024
CLOSE_UNAUTHORIZED = 4401
CLOSE_IDLE = 4408
CLOSE_LAYER_DOWN = 1011
FRAME_FAILED_MESSAGE = "Something went wrong on our side. Try again."


class ClientError(Exception):
    def __init__(self, code: str, message: str, *, field: str | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.code, self.message, self.field, self.retryable = code, message, field, retryable


# Refusals for an outage: a turn refused by the door (nothing stored), or the layer failing a stop, a mode or a resume.
_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (Unavailable, *OUTAGE_ERRORS)


def _unavailable_frame() -> str:
    return json.dumps(ErrorEvent("unavailable", UNAVAILABLE_MESSAGE, retryable=True).frame(), separators=(",", ":"))


class ConversationConsumer(AsyncWebsocketConsumer):
    user_id: int
    conversation_id: int
    group: str
    groups_joined: tuple[str, ...] = ()  # the conversation's, the user's, and the session's

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except OUTAGE_ERRORS:
            if getattr(self, "base_send", None) is not None:
                raise
            # Channels asks the layer for this socket's channel before any handler runs: with
            # Redis away that raises, and the handshake would be an HTTP 500. Answer it as
            # `connect` does for an outage: accepted, one `error` frame, closed with 1011.
            logger.warning("channel layer unavailable at the handshake")
            if (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.send", "text": _unavailable_frame()})
                await send({"type": "websocket.close", "code": CLOSE_LAYER_DOWN})

    async def connect(self) -> None:
        self.conversation_id = int(self.scope["url_route"]["kwargs"]["conversation_id"])
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        ticket = (query.get("ticket") or [""])[0]
        try:
            claim = await database_sync_to_async(ws_ticket_redeem)(ticket=ticket, conversation_id=self.conversation_id)
        except Unavailable:
            await self.accept()
            await self._unavailable_close()
            return
        if claim is None:
            # Refused at the handshake: no socket for a missing, reused or foreign ticket.
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        self.user_id = claim.user_id
        self.group = realtime.conversation_group_name(self.conversation_id)
        # Ended sessions close the socket (`auth_revoked`): its own (logout) or all the user's (a password change).
        self.groups_joined = (self.group, user_group_name(claim.user_id)) + (
            (token_family_group_name(claim.family),) if claim.family is not None else ()
        )
        self.last_activity = time.monotonic()
        try:
            for group in self.groups_joined:
                await self.channel_layer.group_add(group, self.channel_name)
        except Exception:
            logger.warning("channel layer unavailable at connect")
            await self.accept()
            await self._unavailable_close()
            return
        realtime.conversation_socket_add(self.conversation_id, self)
        await self.accept()
        self.idle_watch = asyncio.ensure_future(self._idle_watch())

    async def disconnect(self, code: int) -> None:
        watch = getattr(self, "idle_watch", None)
        if watch is not None:
            watch.cancel()
        if getattr(self, "group", None):
            realtime.conversation_socket_discard(self.conversation_id, self)
        try:
            for group in self.groups_joined:
                await self.channel_layer.group_discard(group, self.channel_name)
        except Exception:
            logger.warning("channel layer unavailable at disconnect")

    async def _unavailable_close(self) -> None:
        """Redis (the layer, the cache) does not answer: say so, retryable, and close with 1011.

        Closed rather than kept: while the layer is down this socket would miss the events of
        turns started elsewhere. The client reconnects (its ticket is a 503 until Redis is
        back) and resumes; nothing stored is lost.
        """
        await self.send(text_data=_unavailable_frame())
        await self.close(code=CLOSE_LAYER_DOWN)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # A seam (docs/architecture.md, "Seams"). Channels' own dispatch first closes stale
        # database connections, in the one thread all database work shares, before every
        # message: for every token of every socket, which then waits behind any turn's database
        # work. Ours touch the database only through database_sync_to_async, which closes stale
        # connections itself on the way in and out. Measured (bench.realtime stop --background
        # 50, 2026-12-07): with Channels' dispatch the stop's p50 was 1.5-2.4x and, on
        # PostgreSQL, its p99 2.5-3.7x what it is with this one.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def _idle_watch(self) -> None:
        idle_seconds: float = getattr(settings, "WS_IDLE_TIMEOUT_SECONDS", 300)
        while True:
            await asyncio.sleep(min(30.0, idle_seconds))
            if time.monotonic() - self.last_activity > idle_seconds and not turn_running(self.conversation_id):
                await self.close(code=CLOSE_IDLE)
                return

    # --- client frames ------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.last_activity = time.monotonic()
        try:
            frame = self._frame_parse(text_data, bytes_data)
            handler = {
                "message": self._on_message,
                "regenerate": self._on_regenerate,
                "edit": self._on_edit,
                "select": self._on_select,
                "forget": self._on_forget,
                "stop": self._on_stop,
                "set_mode": self._on_set_mode,
                "resume": self._on_resume,
                "ping": self._on_ping,
                "image": self._on_image,
            }.get(frame["type"])
            if handler is None:
                raise ClientError("unknown_type", f"Unknown frame type {frame['type']!r}.", field="type")
            await handler(frame)
        except ClientError as exc:
            await self._send_frame(ErrorEvent(exc.code, exc.message, exc.retryable, exc.field).frame())
        except _UNAVAILABLE_ERRORS:
            logger.warning("Redis unavailable: the socket is closed with 1011")
            await self._unavailable_close()
        except DomainError as exc:
            frame = ErrorEvent(exc.code, exc.message, exc.retryable, exc.field).frame()
            if isinstance(exc, Throttled):
                frame["retry_after"] = exc.retry_after  # seconds, as the REST answer's Retry-After header
            if isinstance(exc, services.IntimateBlocked):
                frame["reason"] = exc.reason  # as the REST answer's body
            await self._send_frame(frame)
        except Exception as exc:
            # A bug or a broken provider: the socket stays up and says so. Logged without the
            # exception's text, which may quote the frame (the message) it failed on.
            logger.error("a frame failed", extra={"data": exception_data(exc)})
            await self._send_frame(ErrorEvent("turn_error", FRAME_FAILED_MESSAGE, retryable=True).frame())

    def _frame_parse(self, text_data: str | None, bytes_data: bytes | None) -> dict[str, Any]:
        if text_data is None:
            raise ClientError("invalid_frame", "Send JSON text frames, not binary.")
        if len(text_data.encode()) > FRAME_MAX_BYTES:
            raise ClientError("too_large", f"Frames are limited to {FRAME_MAX_BYTES // 1024} KB.")
        try:
            frame = json.loads(text_data)
        except json.JSONDecodeError as exc:
            raise ClientError("invalid_json", f"The frame is not valid JSON: {exc.msg}.") from exc
        except RecursionError as exc:  # "[" * 10000 + "]" * 10000 fits in a frame; the parser's stack does not
            raise ClientError("invalid_json", "The frame nests too deeply.") from exc
        if not isinstance(frame, dict):
            raise ClientError("invalid_frame", "A frame must be a JSON object.")
        if not isinstance(frame.get("type"), str):
            raise ClientError("invalid_frame", "A frame needs a string field 'type'.", field="type")
        return frame

    async def _on_ping(self, frame: dict[str, Any]) -> None:
        await self._send_frame({"type": "pong"})

    async def _on_message(self, frame: dict[str, Any]) -> None:
        message = {key: value for key, value in frame.items() if key != "type"}
        # No thread hop: the provider is built from settings once and touches no database.
        # The turn's events reach this socket through the conversation's group, like every other.
        await turn_start(
            user_id=self.user_id, conversation_id=self.conversation_id, message=message, provider=provider_get()
        )

    async def _on_regenerate(self, frame: dict[str, Any]) -> None:
        # A turn like a message's, through the same door: its events reach this socket through the group.
        regenerate = Regenerate(message_id=_message_id(frame, required=False))
        await turn_start(
            user_id=self.user_id, conversation_id=self.conversation_id, message=regenerate, provider=provider_get()
        )

    async def _on_edit(self, frame: dict[str, Any]) -> None:
        content = frame.get("content")
        if not isinstance(content, str):
            raise ClientError("invalid", "content must be a string.", field="content")
        edit = Regenerate(message_id=_message_id(frame, required=True), content=content)
        await turn_start(
            user_id=self.user_id, conversation_id=self.conversation_id, message=edit, provider=provider_get()
        )

    async def _on_select(self, frame: dict[str, Any]) -> None:
        message_id = _message_id(frame, required=True)
        event = await database_sync_to_async(_alternative_select)(self.user_id, self.conversation_id, message_id)
        await self.channel_layer.group_send(self.group, {"type": realtime.GROUP_EVENT_TYPE, "frame": event.frame()})

    async def _on_forget(self, frame: dict[str, Any]) -> None:
        message_id = _message_id(frame, required=True)
        event = await database_sync_to_async(_message_forget)(self.user_id, self.conversation_id, message_id)
        await self.channel_layer.group_send(self.group, {"type": realtime.GROUP_EVENT_TYPE, "frame": event.frame()})

    async def _on_image(self, frame: dict[str, Any]) -> None:
        # A picture asked for directly: its message (pending, or refused with the reason) goes to every
        # socket of the conversation now, `image.ready` to every socket of the user when it is done.
        prompt = frame.get("prompt", "")
        client_id = frame.get("client_id")
        if not isinstance(prompt, str) or len(prompt) > PICTURE_PROMPT_MAX:
            raise ClientError(
                "invalid", f"prompt must be a string of at most {PICTURE_PROMPT_MAX} characters.", field="prompt"
            )
        if client_id is not None and (not isinstance(client_id, str) or not 0 < len(client_id) <= 64):
            raise ClientError("invalid", "client_id must be a string of 1 to 64 characters.", field="client_id")
        message, refusal = await database_sync_to_async(_picture_request)(
            self.user_id, self.conversation_id, prompt, client_id
        )
        await self.channel_layer.group_send(
            self.group, {"type": realtime.GROUP_EVENT_TYPE, "frame": MessageCreated(message).frame()}
        )
        if refusal is not None:
            await self._send_frame(
                ErrorEvent(refusal.code, refusal.message, retryable=False, retry_after=refusal.retry_after).frame()
            )

    async def _on_stop(self, frame: dict[str, Any]) -> None:
        # One turn per conversation at a time: if it runs here, stop it without a trip through the layer.
        if turn_cancel_local(self.conversation_id):
            return
        control = realtime.conversation_control_group_name(self.conversation_id)
        await self.channel_layer.group_send(control, {"type": realtime.STOP_TYPE})

    async def _on_set_mode(self, frame: dict[str, Any]) -> None:
        mode = frame.get("mode")
        if mode not in {*Mode.values, "auto"}:
            raise ClientError("invalid", "mode must be secretary, intimate or auto.", field="mode")
        event = await database_sync_to_async(_conversation_mode_set)(self.user_id, self.conversation_id, mode)
        if event is not None:
            await self.channel_layer.group_send(self.group, {"type": realtime.GROUP_EVENT_TYPE, "frame": event.frame()})

    async def _on_resume(self, frame: dict[str, Any]) -> None:
        after = frame.get("after", 0)
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ClientError("invalid", "after must be a message id (an integer).", field="after")
        missed = await database_sync_to_async(message_list_after)(conversation_id=self.conversation_id, after=after)
        for message in await database_sync_to_async(message_dicts)(missed):
            await self._send_frame({"type": "message.created", "message": message, "resumed": True})
        # The process running a reply (maybe another server) answers with what it has streamed so far.
        control = realtime.conversation_control_group_name(self.conversation_id)
        await self.channel_layer.group_send(
            control, {"type": realtime.SNAPSHOT_REQUEST_TYPE, "reply_channel": self.channel_name}
        )

    # --- group messages -----------------------------------------------------------------

    async def auth_revoked(self, message: dict[str, Any]) -> None:
        """The session that opened this socket ended (logout, a revoked token family), or all
        the user's did (a password change)."""
        await self.close(code=CLOSE_UNAUTHORIZED)

    async def turn_event(self, message: dict[str, Any]) -> None:
        await self._send_frame(message["frame"])

    async def turn_snapshot(self, message: dict[str, Any]) -> None:
        message_id, mode = message["message_id"], message["mode"]
        await self._send_frame(ReplyStart(message_id=message_id, mode=mode).frame())
        for seq, delta in enumerate(message["deltas"]):
            await self._send_frame(Token(message_id=message_id, seq=seq, delta=delta).frame())

    async def _send_frame(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(frame, separators=(",", ":")))


def _message_id(frame: dict[str, Any], *, required: bool) -> int | None:
    message_id = frame.get("message_id")
    if message_id is None and not required:
        return None
    if isinstance(message_id, bool) or not isinstance(message_id, int) or message_id < 1:
        raise ClientError("invalid", "message_id must be a message id (a positive integer).", field="message_id")
    return message_id


def _message_of_conversation(user_id: int, conversation_id: int, message_id: int) -> None:
    # A socket acts on its own conversation only: a message of another one is not found here.
    message = message_get_owned(user_id=user_id, message_id=message_id)
    if message.conversation_id != conversation_id:
        raise NotFound("Message not found.", field="message_id")


def _alternative_select(user_id: int, conversation_id: int, message_id: int) -> AlternativeSelected:
    _message_of_conversation(user_id, conversation_id, message_id)
    return services.message_alternative_select(user_id=user_id, message_id=message_id)


def _message_forget(user_id: int, conversation_id: int, message_id: int) -> MessagesDeleted:
    _message_of_conversation(user_id, conversation_id, message_id)
    return services.message_forget(user_id=user_id, message_id=message_id)


def _picture_request(
    user_id: int, conversation_id: int, prompt: str, client_id: str | None
) -> tuple[dict[str, Any], QuotaExceeded | None]:
    message_rate_check(user_id=user_id)
    message = chat_picture_from_frame(
        user_id=user_id, conversation_id=conversation_id, request_text=prompt, client_id=client_id
    )
    return message, picture_quota_refusal(user_id=user_id, message=message)


def _conversation_mode_set(user_id: int, conversation_id: int, mode: str) -> ModeChanged | None:
    from django.contrib.auth.models import User

    from conversations.selectors import conversation_get_owned

    user = User.objects.get(pk=user_id)
    conversation = conversation_get_owned(user=user, conversation_id=conversation_id)
    return services.conversation_mode_set(user=user, conversation=conversation, mode=mode, mode_locked=None)


__all__ = ["ConversationConsumer", "TurnEvent"]
