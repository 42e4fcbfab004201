from datetime import datetime
from typing import Any, Literal

from ninja import Field, Schema

from conversations.services import CLIENT_ID_MAX


class ConversationIn(Schema):
    avatar_id: int


class ConversationPatchIn(Schema):
    mode: Literal["secretary", "intimate", "auto"] | None = None
    mode_locked: bool | None = None


class AvatarBriefOut(Schema):
    id: int
    slug: str
    name: str
    image: str | None = None


class ConversationOut(Schema):
    id: int
    avatar: AvatarBriefOut
    title: str
    mode: str
    mode_locked: bool
    message_count: int
    created_at: datetime
    updated_at: datetime
    last_message_at: datetime | None


class MessageIn(Schema):
    content: str = Field(..., max_length=8000, description="The user's message, 1 to 8,000 characters.")
    client_id: str | None = Field(None, max_length=CLIENT_ID_MAX, description="Idempotency key from the client.")
    model: str | None = Field(None, max_length=100)
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)


class MessageOut(Schema):
    id: int
    conversation_id: int
    role: str
    content: str
    mode: str
    status: str
    client_id: str | None
    reply_to: int | None
    route: dict[str, Any] | None
    model: str | None
    finish_reason: str | None
    error_code: str | None
    usage: dict[str, int | None]
    ttft_ms: int | None
    duration_ms: int | None
    created_at: str | None


class MessagePageOut(Schema):
    items: list[MessageOut]
    next: int | None


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
