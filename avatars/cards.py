"""Character cards (Tavern / SillyTavern): parse V1, V2, V3 and PNG cards, and export V2.

Parsing is pure: bytes in, a `ParsedCard` (values named as our Avatar fields) out, or a
`CardError` with a code naming what is wrong. Creating the avatar is
`avatars.services.avatar_import_card`.

Specs: https://github.com/malfoyslastname/character-card-spec-v2 and
https://github.com/kwaroran/character-card-spec-v3. A PNG card carries the card JSON,
base64-encoded, in a tEXt/iTXt chunk named `chara` (V2) or `ccv3` (V3, preferred).
Our own fields travel in `data.extensions.companion`.
"""

import base64
import binascii
import io
import json
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from django.core.files import File
from PIL import Image, PngImagePlugin

from avatars.errors import (
    CardBadBase64,
    CardInvalidField,
    CardMissingField,
    CardNotJson,
    CardTooLarge,
    CardUnknownSpec,
    PngInvalid,
    PngNoCardChunk,
    PngTooLarge,
)
from avatars.models import PHRASE_MAX, Avatar
from core.modes import Mode

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
SPEC_V2: Final = "chara_card_v2"
SPEC_V3: Final = "chara_card_v3"
SPEC_V1: Final = "chara_card_v1"  # V1 cards carry no spec; this names them in ParsedCard only.
COMPANION_EXTENSION: Final = "companion"
PHRASES_MAX_ITEMS: Final = 200

# Card field -> Avatar field, for the fields V2 and V3 share.
CARD_FIELDS: Final = {
    "name": "name",
    "description": "description",
    "personality": "personality",
    "scenario": "scenario",
    "first_mes": "first_message",
    "mes_example": "example_dialogue",
    "creator_notes": "creator_notes",
    "system_prompt": "system_prompt",
    "post_history_instructions": "post_history_instructions",
    "alternate_greetings": "alternate_greetings",
    "tags": "tags",
    "creator": "creator",
    "character_version": "character_version",
}
V1_FIELDS: Final = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
LIST_CARD_FIELDS: Final = frozenset({"alternate_greetings", "tags"})
COMPANION_TEXT_FIELDS: Final = ("tagline", "secretary_instructions", "intimate_instructions")
COMPANION_FIELDS: Final = frozenset(
    {*COMPANION_TEXT_FIELDS, "intimate_allowed", "default_mode", "fallback_lines", "phrases"}
)


@dataclass(frozen=True, slots=True)
class CardPhrase:
    mode: str
    text: str


@dataclass(frozen=True, slots=True)
class ParsedCard:
    spec: str
    fields: dict[str, object]
    """Values keyed by Avatar field name; lengths are checked when the avatar is created."""
    card_extensions: dict[str, Any]
    phrases: tuple[CardPhrase, ...] = ()
    image_png: bytes | None = None
    sources: dict[str, str] = field(default_factory=dict)
    """Avatar field -> where it came from in the card (e.g. "data.first_mes"), for error messages."""


def card_read_upload(upload: File, *, max_bytes: int) -> bytes:
    """The bytes of an uploaded card file, refusing one over `max_bytes` without reading it all."""
    if upload.size is not None and upload.size > max_bytes:
        raise CardTooLarge(f"The card is {upload.size} bytes; the limit is {max_bytes} bytes.")
    content = upload.read(max_bytes + 1)
    if len(content) > max_bytes:
        raise CardTooLarge(f"The card is over the limit of {max_bytes} bytes.")
    return bytes(content)


def card_parse(content: bytes, *, max_bytes: int, max_pixels: int) -> ParsedCard:
    """Parse a card given as JSON bytes or as a PNG file carrying one."""
    if len(content) > max_bytes:
        raise CardTooLarge(f"The card is {len(content)} bytes; the limit is {max_bytes} bytes.")
    if not content.strip():
        raise CardNotJson("The card is empty.")
    if content.startswith(PNG_SIGNATURE):
        card_json = card_json_from_png(content, max_pixels=max_pixels)
        parsed = card_parse_json(card_json)
        return ParsedCard(
            spec=parsed.spec,
            fields=parsed.fields,
            card_extensions=parsed.card_extensions,
            phrases=parsed.phrases,
            image_png=content,
            sources=parsed.sources,
        )
    return card_parse_json(content)


def card_parse_json(content: bytes) -> ParsedCard:
    try:
        document = json.loads(content.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise CardNotJson("The card is neither a PNG image nor UTF-8 JSON.") from exc
    except json.JSONDecodeError as exc:
        raise CardNotJson(f"The card is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from exc
    except RecursionError as exc:
        raise CardNotJson("The card's JSON is nested too deeply.") from exc
    if not isinstance(document, dict):
        raise CardNotJson("The card must be a JSON object.")
    return card_from_document(document)


def card_from_document(document: Mapping[str, Any]) -> ParsedCard:
    spec = document.get("spec")
    if spec in (SPEC_V2, SPEC_V3):
        data = document.get("data")
        if not isinstance(data, dict):
            raise CardMissingField(f"A {spec} card needs a `data` object.", field="data")
        return _card_from_data(spec, data)
    if spec is not None:
        raise CardUnknownSpec(f"Unknown card spec {spec!r}; expected {SPEC_V2!r} or {SPEC_V3!r}.", field="spec")
    if any(key in document for key in V1_FIELDS):
        return _card_from_v1(document)
    raise CardUnknownSpec(
        f"Not a character card: no `spec` ({SPEC_V2!r} or {SPEC_V3!r}) and none of the V1 fields.", field="spec"
    )


def _card_from_data(spec: str, data: Mapping[str, Any]) -> ParsedCard:
    fields: dict[str, object] = {}
    sources: dict[str, str] = {}
    for card_field, avatar_field in CARD_FIELDS.items():
        value = data.get(card_field)
        if value is None:
            continue
        path = f"data.{card_field}"
        if card_field in LIST_CARD_FIELDS:
            fields[avatar_field] = _string_list(value, path, split_commas=card_field == "tags")
        else:
            fields[avatar_field] = _string(value, path, numbers_ok=card_field == "character_version")
        sources[avatar_field] = path
    _require_name(fields, "data.name")

    extensions = data.get("extensions")
    if extensions is None:
        extensions = {}
    if not isinstance(extensions, dict):
        raise CardInvalidField("data.extensions must be an object.", field="data.extensions")
    kept_extensions = dict(extensions)
    companion = kept_extensions.pop(COMPANION_EXTENSION, None)
    phrases: tuple[CardPhrase, ...] = ()
    if companion is not None:
        if not isinstance(companion, dict):
            raise CardInvalidField("data.extensions.companion must be an object.", field="data.extensions.companion")
        phrases = _read_companion(companion, fields, sources)
        unknown_companion = {key: value for key, value in companion.items() if key not in COMPANION_FIELDS}
        if unknown_companion:
            kept_extensions[COMPANION_EXTENSION] = unknown_companion

    unknown_fields = {key: value for key, value in data.items() if key not in CARD_FIELDS and key != "extensions"}
    return ParsedCard(
        spec=spec,
        fields=fields,
        card_extensions=_card_extensions(kept_extensions, unknown_fields),
        phrases=phrases,
        sources=sources,
    )


def _card_from_v1(document: Mapping[str, Any]) -> ParsedCard:
    fields: dict[str, object] = {}
    sources: dict[str, str] = {}
    for card_field in V1_FIELDS:
        value = document.get(card_field)
        if value is None:
            continue
        fields[CARD_FIELDS[card_field]] = _string(value, card_field)
        sources[CARD_FIELDS[card_field]] = card_field
    _require_name(fields, "name")
    unknown_fields = {key: value for key, value in document.items() if key not in V1_FIELDS}
    return ParsedCard(
        spec=SPEC_V1, fields=fields, card_extensions=_card_extensions({}, unknown_fields), sources=sources
    )


def _read_companion(
    companion: Mapping[str, Any], fields: dict[str, object], sources: dict[str, str]
) -> tuple[CardPhrase, ...]:
    prefix = "data.extensions.companion"
    for name in COMPANION_TEXT_FIELDS:
        if companion.get(name) is not None:
            fields[name] = _string(companion[name], f"{prefix}.{name}")
            sources[name] = f"{prefix}.{name}"
    if companion.get("intimate_allowed") is not None:
        if not isinstance(companion["intimate_allowed"], bool):
            raise CardInvalidField(
                f"{prefix}.intimate_allowed must be true or false.", field=f"{prefix}.intimate_allowed"
            )
        fields["intimate_allowed"] = companion["intimate_allowed"]
        sources["intimate_allowed"] = f"{prefix}.intimate_allowed"
    if companion.get("default_mode") is not None:
        if companion["default_mode"] not in Mode.values:
            raise CardInvalidField(
                f"{prefix}.default_mode must be one of: {', '.join(Mode.values)}.", field=f"{prefix}.default_mode"
            )
        fields["default_mode"] = companion["default_mode"]
        sources["default_mode"] = f"{prefix}.default_mode"
    if companion.get("fallback_lines") is not None:
        fields["fallback_lines"] = _string_list(companion["fallback_lines"], f"{prefix}.fallback_lines")
        sources["fallback_lines"] = f"{prefix}.fallback_lines"
    return _read_phrases(companion.get("phrases"), f"{prefix}.phrases")


def _read_phrases(value: object, path: str) -> tuple[CardPhrase, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise CardInvalidField(f"{path} must be a list of {{mode, text}} objects.", field=path)
    if len(value) > PHRASES_MAX_ITEMS:
        raise CardInvalidField(f"{path} may hold at most {PHRASES_MAX_ITEMS} phrases.", field=path)
    phrases: list[CardPhrase] = []
    for index, item in enumerate(value):
        if (
            not isinstance(item, dict)
            or item.get("mode") not in Mode.values
            or not isinstance(item.get("text"), str)
            or not item["text"].strip()
        ):
            raise CardInvalidField(
                f"{path}[{index}] must be {{mode: {' or '.join(Mode.values)}, text: non-empty string}}.", field=path
            )
        text = item["text"].strip()
        if len(text) > PHRASE_MAX:
            raise CardInvalidField(f"{path}[{index}].text must be at most {PHRASE_MAX} characters.", field=path)
        phrases.append(CardPhrase(mode=item["mode"], text=text))
    return tuple(phrases)


def _card_extensions(extensions: dict[str, Any], unknown_fields: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    if extensions:
        kept["extensions"] = extensions
    if unknown_fields:
        kept["fields"] = unknown_fields
    return kept


def _require_name(fields: Mapping[str, object], path: str) -> None:
    name = fields.get("name")
    if not isinstance(name, str) or not name.strip():
        raise CardMissingField(f"The card has no {path}.", field=path)


def _string(value: object, path: str, *, numbers_ok: bool = False) -> str:
    if isinstance(value, str):
        return value
    if numbers_ok and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise CardInvalidField(f"{path} must be a string.", field=path)


def _string_list(value: object, path: str, *, split_commas: bool = False) -> list[str]:
    if split_commas and isinstance(value, str):
        # Some editors write tags as one comma-separated string.
        return [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise CardInvalidField(f"{path} must be a list of strings.", field=path)
    return list(value)


# --- PNG ------------------------------------------------------------------------------------


def card_json_from_png(content: bytes, *, max_pixels: int) -> bytes:
    """The card JSON carried by a PNG (`ccv3` preferred over `chara`), after checking the image."""
    text_chunks = _png_text_chunks(content, max_pixels=max_pixels)
    by_key = {key.lower(): value for key, value in text_chunks.items()}
    value = by_key.get("ccv3") or by_key.get("chara")
    if value is None:
        raise PngNoCardChunk("The PNG carries no character card (no `ccv3` or `chara` text chunk).")
    raw = value.strip()
    if raw.startswith("{"):
        # A few tools store the JSON itself; tEXt is Latin-1, iTXt UTF-8.
        return raw.encode("utf-8" if isinstance(value, PngImagePlugin.iTXt) else "latin-1")
    compact = "".join(raw.split()).translate(str.maketrans("-_", "+/"))
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CardBadBase64("The PNG's card chunk is not valid base64.") from exc


def _png_text_chunks(content: bytes, *, max_pixels: int) -> dict[str, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content), formats=["PNG"]) as probe:
                width, height = probe.size
                if width * height > max_pixels:
                    raise PngTooLarge(f"The PNG is {width}x{height} pixels; at most {max_pixels} pixels are accepted.")
                probe.verify()
            # verify() leaves the image unusable; reopen to decode it, which also proves it is an
            # image and reaches the text chunks placed after the pixel data.
            with Image.open(io.BytesIO(content), formats=["PNG"]) as image:
                assert isinstance(image, PngImagePlugin.PngImageFile)  # formats=["PNG"] admits nothing else
                return dict(image.text)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PngTooLarge("The PNG has too many pixels to decode safely.") from exc
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
        raise PngInvalid(f"The PNG is damaged or not an image: {exc}.") from exc


# --- Export ---------------------------------------------------------------------------------


def avatar_export_card(avatar: Avatar) -> dict[str, Any]:
    """The avatar as a V2 card, our own fields in `data.extensions.companion`.

    Fields kept from an imported card (unknown fields, other extensions) go back where they
    came from, so importing the export gives the same avatar. Reads the avatar's phrases.
    """
    stored = avatar.card_extensions if isinstance(avatar.card_extensions, dict) else {}
    extensions: dict[str, Any] = dict(stored.get("extensions") or {})
    companion: dict[str, Any] = dict(extensions.get(COMPANION_EXTENSION) or {})
    companion.update(
        {
            "tagline": avatar.tagline,
            "secretary_instructions": avatar.secretary_instructions,
            "intimate_instructions": avatar.intimate_instructions,
            "intimate_allowed": avatar.intimate_allowed,
            "default_mode": avatar.default_mode,
            "fallback_lines": list(avatar.fallback_lines),
            "phrases": [
                {"mode": phrase.mode, "text": phrase.text} for phrase in avatar.phrases.order_by("mode", "text", "id")
            ],
        }
    )
    extensions[COMPANION_EXTENSION] = companion
    data: dict[str, Any] = dict(stored.get("fields") or {})
    data.update({card_field: getattr(avatar, avatar_field) for card_field, avatar_field in CARD_FIELDS.items()})
    data["alternate_greetings"] = list(avatar.alternate_greetings)
    data["tags"] = list(avatar.tags)
    data["extensions"] = extensions
    return {"spec": SPEC_V2, "spec_version": "2.0", "data": data}
