"""The rules an avatar's editable fields obey, whichever interface the values came through.

The API schemas, the admin form and card import enforce the same limits; the services call
`avatar_data_clean` so that no interface can store what another would refuse.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from avatars.models import (
    ALTERNATE_GREETINGS_MAX_ITEMS,
    FALLBACK_LINE_MAX,
    FALLBACK_LINES_MAX_ITEMS,
    SHORT_TEXT_MAX,
    TAG_MAX,
    TAGS_MAX_ITEMS,
    Avatar,
)
from core.errors import InvalidInput
from core.modes import Mode


@dataclass(frozen=True, slots=True)
class ListLimit:
    max_items: int
    max_item_chars: int


# Fields whose surrounding whitespace means nothing; long texts keep the author's layout.
ONE_LINE_FIELDS: Final = ("name", "tagline", "creator", "character_version", "style")
LONG_TEXT_FIELDS: Final = (
    "description",
    "personality",
    "scenario",
    "first_message",
    "example_dialogue",
    "system_prompt",
    "post_history_instructions",
    "secretary_instructions",
    "intimate_instructions",
    "creator_notes",
    "appearance",
)
TEXT_FIELDS: Final = ONE_LINE_FIELDS + LONG_TEXT_FIELDS
LIST_LIMITS: Final = {
    "alternate_greetings": ListLimit(ALTERNATE_GREETINGS_MAX_ITEMS, SHORT_TEXT_MAX),
    "fallback_lines": ListLimit(FALLBACK_LINES_MAX_ITEMS, FALLBACK_LINE_MAX),
    "tags": ListLimit(TAGS_MAX_ITEMS, TAG_MAX),
}
BOOL_FIELDS: Final = ("intimate_allowed", "is_public")
EDITABLE_FIELDS: Final = frozenset((*TEXT_FIELDS, *LIST_LIMITS, *BOOL_FIELDS, "default_mode"))


def text_max_length(field: str) -> int:
    max_length = getattr(Avatar._meta.get_field(field), "max_length", None)
    assert isinstance(max_length, int), field
    return max_length


def avatar_data_clean(data: Mapping[str, object]) -> dict[str, object]:
    """Check and normalise avatar field values; raise `InvalidInput` naming the first bad field.

    Only the keys present are checked, so the same function serves creation and partial updates.
    """
    cleaned: dict[str, object] = {}
    for field, value in data.items():
        if field not in EDITABLE_FIELDS:
            raise InvalidInput(f"{field} is not an editable avatar field.", field=field)
        if field in TEXT_FIELDS:
            cleaned[field] = _text_clean(field, value)
        elif field in LIST_LIMITS:
            cleaned[field] = _list_clean(field, value, LIST_LIMITS[field])
        elif field in BOOL_FIELDS:
            if not isinstance(value, bool):
                raise InvalidInput(f"{field} must be true or false.", field=field)
            cleaned[field] = value
        else:
            if value not in Mode.values:
                raise InvalidInput(f"default_mode must be one of: {', '.join(Mode.values)}.", field=field)
            cleaned[field] = value
    return cleaned


def _text_clean(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string.", field=field)
    if field in ONE_LINE_FIELDS:
        value = value.strip()
    if field == "name" and not value:
        raise InvalidInput("name must not be empty.", field=field)
    limit = text_max_length(field)
    if len(value) > limit:
        raise InvalidInput(f"{field} must be at most {limit} characters (got {len(value)}).", field=field)
    return value


def _list_clean(field: str, value: object, limit: ListLimit) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidInput(f"{field} must be a list of strings.", field=field)
    items: list[str] = [item for item in value if item.strip()]
    if field != "alternate_greetings":
        items = [item.strip() for item in items]
    if field == "tags":
        items = _unique_ignoring_case(items)
    if len(items) > limit.max_items:
        raise InvalidInput(f"{field} may hold at most {limit.max_items} items (got {len(items)}).", field=field)
    for index, item in enumerate(items):
        if len(item) > limit.max_item_chars:
            raise InvalidInput(
                f"{field}[{index}] must be at most {limit.max_item_chars} characters (got {len(item)}).", field=field
            )
    return items


def _unique_ignoring_case(items: list[str]) -> list[str]:
    seen: set[str] = set()
    unique: list[str] = []
    for item in items:
        if item.casefold() not in seen:
            seen.add(item.casefold())
            unique.append(item)
    return unique
