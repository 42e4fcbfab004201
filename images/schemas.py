from typing import Annotated

from ninja import Schema
from pydantic import Field, StringConstraints

from avatars.schemas import PictureError
from images.models import REQUEST_ID_MAX
from images.prompts import REQUEST_MAX_CHARS

RequestId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=REQUEST_ID_MAX)]


class PortraitIn(Schema):
    prompt: Annotated[str, StringConstraints(max_length=REQUEST_MAX_CHARS)] = Field(
        "", description="Extra details for this portrait, added to the avatar's appearance and style."
    )
    request_id: RequestId | None = Field(
        None, description="Sent again with a retry, the same request answers the same picture (no second one)."
    )


class PortraitOut(Schema):
    image_id: int
    status: str


class ImageOut(Schema):
    id: int
    status: str = Field(description="pending, ready, refused or failed")
    url: str | None = Field(None, description="Served by the project with the bearer token (never hot-linked).")
    prompt: str
    cost_usd: str = Field(description="US$, a decimal string")
    error: PictureError | None = None
    kind: str
    avatar_id: int
    conversation_id: int | None
    size: str
    quality: str
    model: str | None
    width: int | None
    height: int | None
    created_at: str | None
