from datetime import datetime
from typing import Any, Literal

from django.conf import settings
from ninja import Field, Schema
from pydantic import StrictBool, StrictFloat, StrictInt

from avatars.schemas import PictureRef
from conversations.turns.request import CLIENT_ID_MAX_CHARS, CONTENT_MAX_CHARS
from core.api import Id
from core.modes import Mode
from llm.params import TEMPERATURE_MAX, TEMPERATURE_MIN


class ConversationIn(Schema):
    avatar_id: Id


class ConversationPatchIn(Schema):
    mode: Mode | Literal["auto"] | None = None
    mode_locked: StrictBool | None = None
    title: str | None = Field(None, description="The user's own title, 1 to 200 characters; never overwritten.")


class ForkIn(Schema):
    message_id: int = Field(..., ge=1, le=2**63 - 1, description="The last message the new conversation keeps.")


class RegenerateIn(Schema):
    message_id: int | None = Field(
        None, ge=1, le=2**63 - 1, description="The user message to answer again: must be the last one (else 409)."
    )


class MessageEditIn(Schema):
    content: str = Field(
        ...,
        min_length=1,
        max_length=CONTENT_MAX_CHARS,
        description=f"The new text of your last message, 1 to {CONTENT_MAX_CHARS:,} characters.",
    )


class AvatarBriefOut(Schema):
    id: int
    slug: str
    name: str
    image: str | None = None


class ConversationOut(Schema):
    id: int
    avatar: AvatarBriefOut
    title: str
    title_source: str = Field(description='"avatar" (its name), "auto" (from the first exchange) or "user".')
    mode: str
    mode_locked: bool
    message_count: int
    unread: int = Field(description="Assistant messages since the user last read (POST .../read clears it).")
    created_at: datetime
    updated_at: datetime
    last_message_at: datetime | None


class ReadIn(Schema):
    message_id: int | None = Field(None, ge=1, le=2**63 - 1, description="Read up to this message; default the newest.")


class MessageIn(Schema):
    """A user message. Only its types are checked here; its limits are checked, for every
    interface alike, by `conversations.turns.request.turn_request_parse` (and shown in the schema)."""

    content: str = Field(
        ...,
        description=f"The user's message, 1 to {CONTENT_MAX_CHARS:,} characters.",
        json_schema_extra={"minLength": 1, "maxLength": CONTENT_MAX_CHARS},
    )
    client_id: str | None = Field(
        None,
        description="Idempotency key from the client.",
        json_schema_extra={"minLength": 1, "maxLength": CLIENT_ID_MAX_CHARS},
    )
    model: str | None = Field(None, description="One of the models this server offers; the default when absent.")
    temperature: StrictFloat | None = Field(
        None, json_schema_extra={"minimum": TEMPERATURE_MIN, "maximum": TEMPERATURE_MAX}
    )
    max_tokens: StrictInt | None = Field(
        None,
        description="At most LLM_MAX_TOKENS_LIMIT.",
        json_schema_extra={"minimum": 1, "maximum": settings.LLM_MAX_TOKENS_LIMIT},
    )


class MessageOut(Schema):
    id: int
    conversation_id: int
    role: str
    content: str
    mode: str
    status: str
    client_id: str | None
    origin: str = Field(description='"user", "reply", "reminder", "proactive" or "greeting": why the message exists.')
    reminder_id: int | None = Field(None, description='The reminder it delivers (origin "reminder").')
    late: bool = Field(False, description="A reminder delivered more than a minute after it fell due (a restart).")
    actions: list[dict[str, Any]] = Field(
        default_factory=list,
        description="What the secretary did while writing this reply: {name, arguments, result, error}.",
    )
    reply_to: int | None
    alternatives: list[int] = Field(
        default_factory=list,
        description="A reply: the ids of every reply to the same user message, this one included, oldest first.",
    )
    superseded: bool = Field(False, description="An alternative not selected: left out of history and prompt.")
    route: dict[str, Any] | None
    safety: str | None = None  # "crisis" on a user message the crisis detector flagged
    model: str | None
    finish_reason: str | None
    error_code: str | None
    usage: dict[str, int | None]
    ttft_ms: int | None
    duration_ms: int | None
    cost_usd: str | None = Field(
        None,
        description="What the model calls behind this message cost, in US dollars (a decimal text, never a float).",
    )
    image: PictureRef | None = Field(
        None, description="The picture this assistant message carries; `image.ready` on the socket when it is done."
    )
    created_at: str | None


class MessagePageOut(Schema):
    items: list[MessageOut]
    next: int | None


class AlternativesOut(Schema):
    items: list[MessageOut]
    selected: int | None = Field(description="The reply the history uses.")


class TurnOut(Schema):
    user_message: MessageOut
    assistant_message: MessageOut | None
    mode: str
    mode_event: dict[str, Any] | None
    duplicate: bool = False


class SummaryOut(Schema):
    text: str
    covers_until: int
    updated_at: datetime
