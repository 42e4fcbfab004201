"""Conversations and messages over REST: thin views over conversations.services, selectors and the turn's door."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, StreamingHttpResponse
from ninja import Field, Query, Router, Schema, Status

from conversations import selectors, services
from conversations.models import Conversation
from conversations.realtime import conversation_event_broadcast
from conversations.schemas import (
    AlternativesOut,
    ConversationIn,
    ConversationOut,
    ConversationPatchIn,
    ForkIn,
    MessageEditIn,
    MessageIn,
    MessageOut,
    MessagePageOut,
    ReadIn,
    RegenerateIn,
    SummaryOut,
    TurnOut,
)
from conversations.turns import RunningTurn, TurnEvent, turn_start
from conversations.turns.request import Regenerate, ScheduledMessage
from core.api import ErrorOut, Id
from llm.registry import provider_get
from memory import selectors as memory_selectors

router = Router(tags=["conversations"])

# Past this a client is paging through more conversations than anyone has; beyond 2**63 the
# database itself would refuse the number (a 500, not a 422).
OFFSET_MAX = 1_000_000


def conversation_out(conversation: Conversation) -> dict[str, Any]:
    avatar = conversation.avatar
    return {
        "id": conversation.pk,
        "avatar": {
            "id": avatar.pk,
            "slug": avatar.slug,
            "name": avatar.name,
            "image": avatar.image.url if avatar.image else None,
        },
        "title": conversation.title,
        "title_source": conversation.title_source,
        "mode": conversation.mode,
        "mode_locked": conversation.mode_locked,
        "message_count": conversation.message_count,
        "unread": _unread(conversation),
        "created_at": conversation.created_at,
        "updated_at": conversation.updated_at,
        "last_message_at": conversation.last_message_at,
    }


def _unread(conversation: Conversation) -> int:
    # A list annotates it (one query for the page); a single conversation counts it here.
    unread = getattr(conversation, "unread", None)
    return unread if unread is not None else selectors.conversation_unread_count(conversation=conversation)


@router.post("/conversations", response={201: ConversationOut})
def conversation_create(request: HttpRequest, payload: ConversationIn) -> Status[dict[str, Any]]:
    conversation = services.conversation_create(user=request.auth, avatar_id=payload.avatar_id)  # type: ignore[attr-defined]
    return Status(201, conversation_out(conversation))


class ConversationListQuery(Schema):
    avatar_id: int | None = Field(None, ge=1, le=2**63 - 1)
    q: str | None = Field(None, max_length=200, description="Search titles and message text.")
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=OFFSET_MAX)


@router.get("/conversations", response=list[ConversationOut])
def conversation_list(request: HttpRequest, filters: Query[ConversationListQuery]) -> list[dict[str, Any]]:
    conversations = selectors.conversation_list(user=request.auth, avatar_id=filters.avatar_id, query=filters.q)  # type: ignore[attr-defined]
    return [conversation_out(c) for c in conversations[filters.offset : filters.offset + filters.limit]]


@router.get("/conversations/{conversation_id}", response=ConversationOut)
def conversation_get(request: HttpRequest, conversation_id: Id) -> dict[str, Any]:
    return conversation_out(selectors.conversation_get_owned(user=request.auth, conversation_id=conversation_id))  # type: ignore[attr-defined]


@router.patch("/conversations/{conversation_id}", response={200: ConversationOut, 403: ErrorOut})
def conversation_patch(request: HttpRequest, conversation_id: Id, payload: ConversationPatchIn) -> dict[str, Any]:
    conversation = selectors.conversation_get_owned(user=request.auth, conversation_id=conversation_id)  # type: ignore[attr-defined]
    if payload.title is not None:
        services.conversation_rename(conversation=conversation, title=payload.title)
    event = services.conversation_mode_set(
        user=request.auth,  # type: ignore[attr-defined]
        conversation=conversation,
        mode=payload.mode,
        mode_locked=payload.mode_locked,
    )
    if event is not None:
        conversation_event_broadcast(conversation_id=conversation.pk, event=event)
    return conversation_out(conversation)


@router.post("/conversations/{conversation_id}/fork", response={201: ConversationOut, 409: ErrorOut})
def conversation_fork(request: HttpRequest, conversation_id: Id, payload: ForkIn) -> Status[dict[str, Any]]:
    """A new conversation with this one's history up to `message_id` (included)."""
    conversation = selectors.conversation_get_owned(user=request.auth, conversation_id=conversation_id)  # type: ignore[attr-defined]
    fork = services.conversation_fork(user=request.auth, conversation=conversation, message_id=payload.message_id)  # type: ignore[attr-defined]
    return Status(201, conversation_out(selectors.conversation_get_owned(user=request.auth, conversation_id=fork.pk)))  # type: ignore[attr-defined]


@router.post("/conversations/{conversation_id}/read", response=ConversationOut)
def conversation_read(request: HttpRequest, conversation_id: Id, payload: ReadIn | None = None) -> dict[str, Any]:
    """Mark the conversation read up to `message_id` (default its newest message): `unread` drops to what follows."""
    conversation = selectors.conversation_get_owned(user=request.auth, conversation_id=conversation_id)  # type: ignore[attr-defined]
    services.conversation_read_mark(conversation=conversation, message_id=payload.message_id if payload else None)
    return conversation_out(conversation)


@router.delete("/conversations/{conversation_id}", response={204: None})
def conversation_delete(request: HttpRequest, conversation_id: Id) -> Status[None]:
    conversation = selectors.conversation_get_owned(user=request.auth, conversation_id=conversation_id)  # type: ignore[attr-defined]
    services.conversation_delete(conversation=conversation)
    return Status(204, None)


class MessagePageQuery(Schema):
    before: int | None = None
    limit: int = selectors.MESSAGE_PAGE_DEFAULT


@router.get("/conversations/{conversation_id}/messages", response=MessagePageOut)
def message_list(request: HttpRequest, conversation_id: Id, page: Query[MessagePageQuery]) -> dict[str, Any]:
    conversation = selectors.conversation_get_owned(user=request.auth, conversation_id=conversation_id)  # type: ignore[attr-defined]
    items, next_cursor = selectors.message_page(conversation=conversation, before=page.before, limit=page.limit)
    return {"items": selectors.message_dicts(items), "next": next_cursor}


@router.get("/messages/{message_id}/alternatives", response=AlternativesOut)
def message_alternatives(request: HttpRequest, message_id: Id) -> dict[str, Any]:
    """The replies to the same user message as this one (or to this user message), oldest first."""
    replies = selectors.message_alternatives(user_id=request.auth.pk, message_id=message_id)  # type: ignore[attr-defined]
    selected = next((m.pk for m in replies if not m.superseded), None)
    return {"items": selectors.message_dicts(replies), "selected": selected}


@router.post("/messages/{message_id}/select", response={200: MessageOut, 409: ErrorOut})
def message_select(request: HttpRequest, message_id: Id) -> dict[str, Any]:
    """Make this reply the one the history and the next prompt use; every socket hears of it."""
    event = services.message_alternative_select(user_id=request.auth.pk, message_id=message_id)  # type: ignore[attr-defined]
    conversation_event_broadcast(conversation_id=event.message["conversation_id"], event=event)
    return event.message


@router.delete("/messages/{message_id}", response={204: None, 409: ErrorOut})
def message_forget(request: HttpRequest, message_id: Id) -> Status[None]:
    """Forget one message (a user message with its replies); every socket hears of it."""
    message = selectors.message_get_owned(user_id=request.auth.pk, message_id=message_id)  # type: ignore[attr-defined]
    event = services.message_forget(user_id=request.auth.pk, message_id=message_id)  # type: ignore[attr-defined]
    conversation_event_broadcast(conversation_id=message.conversation_id, event=event)
    return Status(204, None)


@router.get("/conversations/{conversation_id}/summary", response=SummaryOut)
def summary_get(request: HttpRequest, conversation_id: Id) -> dict[str, Any]:
    conversation = selectors.conversation_get_owned(user=request.auth, conversation_id=conversation_id)  # type: ignore[attr-defined]
    summary = memory_selectors.summary_get(conversation=conversation)
    return {"text": summary.text, "covers_until": summary.covers_until_id, "updated_at": summary.updated_at}


@router.post(
    "/conversations/{conversation_id}/messages", response={201: TurnOut, 403: ErrorOut, 409: ErrorOut, 429: ErrorOut}
)
async def message_post(request: HttpRequest, conversation_id: Id, payload: MessageIn) -> Any:
    """Run a turn. With `Accept: text/event-stream`, stream its events as SSE; otherwise answer the finished turn."""
    return await _turn_answer(request, conversation_id, payload.model_dump(exclude_unset=True), status=201)


@router.post(
    "/conversations/{conversation_id}/regenerate", response={201: TurnOut, 403: ErrorOut, 409: ErrorOut, 429: ErrorOut}
)
async def conversation_regenerate(
    request: HttpRequest, conversation_id: Id, payload: RegenerateIn | None = None
) -> Any:
    """A new reply to the last user message, the earlier one kept as an alternative; SSE as for a message."""
    message = Regenerate(message_id=payload.message_id if payload else None)
    return await _turn_answer(request, conversation_id, message, status=201)


@router.patch("/messages/{message_id}", response={200: TurnOut, 403: ErrorOut, 409: ErrorOut, 429: ErrorOut})
async def message_edit(request: HttpRequest, message_id: Id, payload: MessageEditIn) -> Any:
    """Edit your last message and answer it again (its earlier replies are replaced); SSE as for a message."""
    user_id: int = request.auth.pk  # type: ignore[attr-defined]
    message = await sync_to_async(selectors.message_get_owned)(user_id=user_id, message_id=message_id)
    edit = Regenerate(message_id=message_id, content=payload.content)
    return await _turn_answer(request, message.conversation_id, edit, status=200)


async def _turn_answer(
    request: HttpRequest,
    conversation_id: int,
    message: dict[str, Any] | Regenerate | ScheduledMessage,
    *,
    status: int,
) -> Any:
    """Start a turn through the door; stream it as SSE when asked, else answer the finished turn."""
    user_id: int = request.auth.pk  # type: ignore[attr-defined]
    provider = await sync_to_async(provider_get)()

    if "text/event-stream" in request.headers.get("Accept", ""):
        queue: asyncio.Queue[TurnEvent | None] = asyncio.Queue()

        async def listener(event: TurnEvent) -> None:
            queue.put_nowait(event)

        # Started before the first read, so a client that leaves before reading still gets its turn stored.
        running = await turn_start(
            user_id=user_id, conversation_id=conversation_id, message=message, provider=provider, listener=listener
        )
        assert running.task is not None
        running.task.add_done_callback(lambda _: queue.put_nowait(None))
        response = StreamingHttpResponse(_sse_events(queue, running), content_type="text/event-stream", status=status)
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response

    running = await turn_start(user_id=user_id, conversation_id=conversation_id, message=message, provider=provider)
    # A client that hangs up does not cancel the turn (`result` is shielded); it completes and is stored.
    result = await running.result()
    if result.error is not None:
        raise result.error  # the quota: the user message is stored, the answer is a 429 (companion/api.py)
    return Status(
        status,
        {
            "user_message": result.user_message,
            "assistant_message": result.assistant_message,
            "mode": result.mode,
            "mode_event": result.mode_event,
            "duplicate": result.duplicate,
        },
    )


def sse_format(frame: dict[str, Any]) -> str:
    return f"event: {frame['type']}\ndata: {json.dumps(frame, separators=(',', ':'))}\n\n"


async def _sse_events(queue: "asyncio.Queue[TurnEvent | None]", running: RunningTurn) -> AsyncIterator[str]:
    """The turn's events as SSE. A client that disconnects cancels the reply like `stop`; its text is kept."""
    assert running.task is not None
    try:
        while (event := await queue.get()) is not None:
            yield sse_format(event.frame())
        await running.task
    finally:
        if not running.task.done():
            running.cancel.set()
            # The turn stores its own outcome; nothing is left to report to a client that is gone.
            with contextlib.suppress(BaseException):
                await asyncio.shield(running.task)


class WsTicketIn(Schema):
    conversation_id: Id


class WsTicketOut(Schema):
    ticket: str
    expires_in: int


@router.post("/ws-ticket", response=WsTicketOut, tags=["realtime"])
def ws_ticket_create(request: HttpRequest, payload: WsTicketIn) -> dict[str, Any]:
    """A one-use ticket (at most 60 s) to open `/ws/conversations/{id}/?ticket=...`: no bearer token in URLs."""
    from conversations.tickets import ws_ticket_issue

    ticket = ws_ticket_issue(
        user=request.auth,  # type: ignore[attr-defined]
        conversation_id=payload.conversation_id,
        family=getattr(request, "token_family", None),
    )
    return {"ticket": ticket.ticket, "expires_in": ticket.expires_in}
