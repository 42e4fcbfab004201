from datetime import datetime

from ninja import Field, Schema
from pydantic import StrictBool

from memory.models import MEMORY_TEXT_MAX


class MemoryOut(Schema):
    id: int
    avatar_id: int
    key: str = Field(..., description="What the fact is about, normalised; one fact per key.")
    text: str
    pinned: StrictBool = Field(..., description="Pinned facts are never rewritten or dropped by the avatar.")
    source_message_id: int | None = Field(None, description="The message the fact was learnt from, if still known.")
    created_at: datetime
    updated_at: datetime


class MemoryPatchIn(Schema):
    text: str | None = Field(None, min_length=1, max_length=MEMORY_TEXT_MAX)
    pinned: StrictBool | None = None
