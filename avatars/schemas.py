"""API schemas. Limits come from the model and `avatars.validation`, so the API refuses (422,
naming the field) exactly what the services would."""

from datetime import datetime
from typing import Annotated, Any

from django.http import HttpRequest
from ninja import Schema
from pydantic import Field, StrictBool, StringConstraints, field_validator
from pydantic.json_schema import SkipJsonSchema

from avatars.models import (
    ALTERNATE_GREETINGS_MAX_ITEMS,
    APPEARANCE_MAX,
    CHARACTER_VERSION_MAX,
    CREATOR_MAX,
    FALLBACK_LINE_MAX,
    FALLBACK_LINES_MAX_ITEMS,
    NAME_MAX,
    SHORT_TEXT_MAX,
    STYLE_MAX,
    TAG_MAX,
    TAGLINE_MAX,
    TAGS_MAX_ITEMS,
    TEXT_MAX,
    Avatar,
)
from core.modes import Mode

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX)]
Tagline = Annotated[str, StringConstraints(strip_whitespace=True, max_length=TAGLINE_MAX)]
Creator = Annotated[str, StringConstraints(strip_whitespace=True, max_length=CREATOR_MAX)]
CharacterVersion = Annotated[str, StringConstraints(strip_whitespace=True, max_length=CHARACTER_VERSION_MAX)]
Text = Annotated[str, StringConstraints(max_length=TEXT_MAX)]
ShortText = Annotated[str, StringConstraints(max_length=SHORT_TEXT_MAX)]
Greetings = Annotated[list[ShortText], Field(max_length=ALTERNATE_GREETINGS_MAX_ITEMS)]
FallbackLines = Annotated[
    list[Annotated[str, StringConstraints(max_length=FALLBACK_LINE_MAX)]], Field(max_length=FALLBACK_LINES_MAX_ITEMS)
]
Appearance = Annotated[str, StringConstraints(max_length=APPEARANCE_MAX)]
Style = Annotated[str, StringConstraints(strip_whitespace=True, max_length=STYLE_MAX)]
Tags = Annotated[list[Annotated[str, StringConstraints(max_length=TAG_MAX)]], Field(max_length=TAGS_MAX_ITEMS)]


class AvatarIn(Schema):
    """A new avatar of the user's own. `is_public: true` is for staff only (422 otherwise)."""

    name: Name
    tagline: Tagline = ""
    description: Text = ""
    personality: Text = ""
    scenario: Text = ""
    first_message: ShortText = ""
    alternate_greetings: Greetings = []
    example_dialogue: Text = ""
    system_prompt: Text = ""
    post_history_instructions: ShortText = ""
    secretary_instructions: ShortText = ""
    intimate_instructions: ShortText = ""
    intimate_allowed: StrictBool = True
    default_mode: Mode = Mode.SECRETARY
    fallback_lines: FallbackLines = []
    creator: Creator = ""
    creator_notes: Text = ""
    character_version: CharacterVersion = ""
    tags: Tags = []
    appearance: Appearance = Field("", description="How the character looks: its pictures are drawn from this.")
    style: Style = Field("", description='The look of its pictures, e.g. "watercolour".')
    is_public: StrictBool = False


class AvatarPatchIn(Schema):
    """Any subset of AvatarIn's fields; a field sent as null is refused."""

    name: Name | SkipJsonSchema[None] = None
    tagline: Tagline | SkipJsonSchema[None] = None
    description: Text | SkipJsonSchema[None] = None
    personality: Text | SkipJsonSchema[None] = None
    scenario: Text | SkipJsonSchema[None] = None
    first_message: ShortText | SkipJsonSchema[None] = None
    alternate_greetings: Greetings | SkipJsonSchema[None] = None
    example_dialogue: Text | SkipJsonSchema[None] = None
    system_prompt: Text | SkipJsonSchema[None] = None
    post_history_instructions: ShortText | SkipJsonSchema[None] = None
    secretary_instructions: ShortText | SkipJsonSchema[None] = None
    intimate_instructions: ShortText | SkipJsonSchema[None] = None
    intimate_allowed: StrictBool | SkipJsonSchema[None] = None
    default_mode: Mode | SkipJsonSchema[None] = None
    fallback_lines: FallbackLines | SkipJsonSchema[None] = None
    creator: Creator | SkipJsonSchema[None] = None
    creator_notes: Text | SkipJsonSchema[None] = None
    character_version: CharacterVersion | SkipJsonSchema[None] = None
    tags: Tags | SkipJsonSchema[None] = None
    appearance: Appearance | SkipJsonSchema[None] = None
    style: Style | SkipJsonSchema[None] = None
    is_public: StrictBool | SkipJsonSchema[None] = None

    @field_validator("*", mode="before")
    @classmethod
    def not_null(cls, value: Any) -> Any:
        # Every field is optional, but none is nullable: leave it out to keep its value.
        if value is None:
            raise ValueError("may be left out but not null")
        return value


class PictureError(Schema):
    code: str
    message: str


class PictureRef(Schema):
    """A picture as an avatar or a message carries it."""

    id: int
    status: str = Field(description="pending, ready, refused or failed")
    url: str | None = Field(None, description="Where the project serves it (with the bearer token), once ready.")
    error: PictureError | None = None


class AvatarOut(Schema):
    id: int
    slug: str
    name: str
    tagline: str
    description: str
    personality: str
    scenario: str
    first_message: str
    alternate_greetings: list[str]
    example_dialogue: str
    system_prompt: str
    post_history_instructions: str
    secretary_instructions: str
    intimate_instructions: str
    intimate_allowed: bool
    default_mode: Mode
    fallback_lines: list[str]
    creator: str
    creator_notes: str
    character_version: str
    tags: list[str]
    image: str | None = Field(None, description="Absolute URL of the portrait, or null.")
    appearance: str
    style: str
    portrait: PictureRef | None = Field(
        None,
        description="The generated portrait (images app): its `url` is served to signed-in users who see the avatar.",
    )
    card_extensions: dict[str, Any]
    is_public: bool
    is_own: bool = Field(False, description="Whether the requesting user owns this avatar (and may edit it).")
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_image(obj: Avatar, context: dict[str, Any]) -> str | None:
        if not obj.image:
            return None
        request: HttpRequest | None = context.get("request") if context else None
        return request.build_absolute_uri(obj.image.url) if request is not None else obj.image.url

    @staticmethod
    def resolve_portrait(obj: Avatar, context: dict[str, Any]) -> dict[str, Any] | None:
        from images.selectors import image_ref

        return image_ref(obj.portrait) if obj.portrait_id is not None and obj.portrait is not None else None

    @staticmethod
    def resolve_is_own(obj: Avatar, context: dict[str, Any]) -> bool:
        request: HttpRequest | None = context.get("request") if context else None
        user = getattr(request, "user", None)
        return obj.owner_id is not None and user is not None and obj.owner_id == user.pk
