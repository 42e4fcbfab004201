"""Character card parsing (pure) and export."""

import base64
import io
import json
import zlib

import pytest
from PIL import Image

from avatars.cards import SPEC_V1, SPEC_V2, SPEC_V3, CardPhrase, card_parse
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
from avatars.tests.factories import card_b64, png_bytes, png_card

MAX_BYTES = 2 * 1024 * 1024
MAX_PIXELS = 4096 * 4096


def parse(content: bytes):
    return card_parse(content, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)


def test_v2_json_maps_every_field_and_keeps_the_rest(card_bytes):
    parsed = parse(card_bytes("wren_v2.json"))

    assert parsed.spec == SPEC_V2
    assert parsed.fields == {
        "name": "Captain Wren",
        "description": "A retired airship captain with a brass telescope and a patched leather coat.",
        "personality": "Gruff, loyal, secretly sentimental; tells long stories about storms.",
        "scenario": "Wren runs a tea shop at the edge of a sky harbour; {{user}} is a regular.",
        "first_message": "*sets down a chipped cup* Storm's coming. Sit, and tell me where you've been.",
        "example_dialogue": "<START>\n{{user}}: Any news from the harbour?\n"
        "{{char}}: Three ships late and one on fire. A quiet day.",
        "creator_notes": "Works best with slow, cosy scenes.",
        "system_prompt": "Write Wren's replies in a weathered, nautical voice.",
        "post_history_instructions": "Keep replies under four paragraphs.",
        "alternate_greetings": [
            "The kettle's on. You look like you've been chasing clouds.",
            "*polishes the telescope* Ah, you. Good. I need an extra pair of eyes.",
        ],
        "tags": ["Fantasy", "steampunk", "cosy", "fantasy"],
        "creator": "avatars-tests",
        "character_version": "1.2",
    }
    assert parsed.card_extensions == {
        "extensions": {"talkativeness": "0.6", "depth_prompt": {"prompt": "Wren smells of rain.", "depth": 4}},
        "fields": {"character_book": {"name": "Sky Harbour", "entries": []}},
    }
    assert parsed.phrases == ()
    assert parsed.image_png is None


def test_v3_json_reads_our_extension_and_keeps_v3_only_fields(card_bytes):
    parsed = parse(card_bytes("orla_v3.json"))

    assert parsed.spec == SPEC_V3
    assert parsed.fields["name"] == "Orla"
    assert parsed.fields["tagline"] == "A map-maker who plans your trips and your days."
    assert parsed.fields["secretary_instructions"] == "Plan like a cartographer: routes, waypoints, timings."
    assert parsed.fields["intimate_instructions"] == "Tender and unhurried; follows the user's lead."
    assert parsed.fields["intimate_allowed"] is False
    assert parsed.fields["default_mode"] == "secretary"
    assert parsed.fields["fallback_lines"] == ["My compass is spinning; ask me again in a moment."]
    assert parsed.fields["character_version"] == "3"
    assert parsed.phrases == (
        CardPhrase(mode="secretary", text="plan my route"),
        CardPhrase(mode="intimate", text="stay with me a while"),
    )
    assert parsed.card_extensions == {
        "extensions": {"world": "archipelago", "companion": {"future_field": 7}},
        "fields": {
            "nickname": "the Cartographer",
            "creator_notes_multilingual": {"fr": "Orla aime les cartes.", "de": "Orla liebt Karten."},
            "group_only_greetings": ["Everyone gather round the table, mind the compass."],
            "source": ["https://example.invalid/orla"],
            "creation_date": 1767225600,
            "modification_date": 1767312000,
            "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
        },
    }


def test_v1_flat_card_maps_its_six_fields(card_bytes):
    parsed = parse(card_bytes("bramble_v1.json"))

    assert parsed.spec == SPEC_V1
    assert parsed.fields == {
        "name": "Bramble",
        "description": "A hedge witch who lives in a cottage made mostly of books.",
        "personality": "Absent-minded, kind, fond of riddles.",
        "scenario": "{{user}} knocks on Bramble's door during a rainstorm.",
        "first_message": "Oh! Come in, come in, mind the cat, and the other cat.",
        "example_dialogue": "{{user}}: What are you brewing?\n{{char}}: Soup. Probably.",
    }
    assert parsed.card_extensions == {
        "fields": {"avatar": "none", "chat": "bramble-1", "create_date": "2025-1-1 @12h 0m 0s 0ms"}
    }


def test_png_with_chara_chunk_is_read_and_kept_as_the_image(card_bytes):
    content = card_bytes("wren_v2.png")

    parsed = parse(content)

    assert parsed.spec == SPEC_V2
    assert parsed.fields["name"] == "Captain Wren"
    assert parsed.image_png == content


def test_png_prefers_ccv3_over_chara(card_bytes):
    parsed = parse(card_bytes("juniper_v3.png"))

    assert parsed.spec == SPEC_V3
    assert parsed.fields["name"] == "Juniper"


def test_png_itxt_chunk_with_unicode_name():
    card = {"spec": "chara_card_v2", "data": {"name": "Zoë Ñandú", "description": "Ünïcode"}}

    parsed = parse(png_card(card, itxt=True))

    assert parsed.fields["name"] == "Zoë Ñandú"


def test_png_chunk_holding_plain_json_is_accepted():
    card = {"spec": "chara_card_v2", "data": {"name": "Plain"}}

    parsed = parse(png_bytes(chunks={"chara": json.dumps(card)}))

    assert parsed.fields == {"name": "Plain"}


def test_png_base64_without_padding_and_with_line_breaks_is_accepted():
    encoded = card_b64({"spec": "chara_card_v2", "data": {"name": "Pad"}}).rstrip("=")
    wrapped = "\n".join(encoded[i : i + 20] for i in range(0, len(encoded), 20))

    parsed = parse(png_bytes(chunks={"chara": wrapped}))

    assert parsed.fields == {"name": "Pad"}


def test_tags_given_as_a_comma_separated_string_are_split():
    card = {"spec": "chara_card_v2", "data": {"name": "T", "tags": "a, b ,,c"}}

    assert parse(json.dumps(card).encode()).fields["tags"] == ["a", "b", "c"]


def test_null_fields_are_treated_as_absent():
    card = {"spec": "chara_card_v2", "data": {"name": "N", "description": None, "tags": None, "extensions": None}}

    parsed = parse(json.dumps(card).encode())

    assert parsed.fields == {"name": "N"}
    assert parsed.card_extensions == {}


def test_utf8_bom_is_accepted():
    content = "\ufeff".encode() + json.dumps({"spec": "chara_card_v2", "data": {"name": "Bom"}}).encode()

    assert parse(content).fields == {"name": "Bom"}


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "error", "field"),
    [
        (b"", CardNotJson, None),
        (b"   ", CardNotJson, None),
        (b"{not json", CardNotJson, None),
        (b"\xff\xfe\x00garbage", CardNotJson, None),
        (b"[1, 2]", CardNotJson, None),
        (b"[" * 100_000, CardNotJson, None),
        (b'{"spec": "chara_card_v9", "data": {"name": "X"}}', CardUnknownSpec, "spec"),
        (b'{"hello": "world"}', CardUnknownSpec, "spec"),
        (b'{"spec": "chara_card_v2"}', CardMissingField, "data"),
        (b'{"spec": "chara_card_v2", "data": []}', CardMissingField, "data"),
        (b'{"spec": "chara_card_v2", "data": {"description": "no name"}}', CardMissingField, "data.name"),
        (b'{"spec": "chara_card_v3", "data": {"name": "   "}}', CardMissingField, "data.name"),
        (b'{"description": "V1 without a name"}', CardMissingField, "name"),
        (b'{"spec": "chara_card_v2", "data": {"name": 42}}', CardInvalidField, "data.name"),
        (b'{"spec": "chara_card_v2", "data": {"name": "X", "first_mes": ["a"]}}', CardInvalidField, "data.first_mes"),
        (
            b'{"spec": "chara_card_v2", "data": {"name": "X", "alternate_greetings": [1]}}',
            CardInvalidField,
            "data.alternate_greetings",
        ),
        (b'{"spec": "chara_card_v2", "data": {"name": "X", "extensions": 3}}', CardInvalidField, "data.extensions"),
        (
            b'{"spec": "chara_card_v2", "data": {"name": "X", "extensions": {"companion": {"default_mode": "party"}}}}',
            CardInvalidField,
            "data.extensions.companion.default_mode",
        ),
        (
            b'{"spec": "chara_card_v2", "data": {"name": "X", "extensions": {"companion": {"intimate_allowed": "y"}}}}',
            CardInvalidField,
            "data.extensions.companion.intimate_allowed",
        ),
        (
            b'{"spec": "chara_card_v2", "data": {"name": "X", "extensions": {"companion": {"phrases": [{"m": 1}]}}}}',
            CardInvalidField,
            "data.extensions.companion.phrases",
        ),
        (
            json.dumps(
                {"spec": "chara_card_v2", "data": {"name": "X", "extensions": {"companion": {"phrases": "hi"}}}}
            ).encode(),
            CardInvalidField,
            "data.extensions.companion.phrases",
        ),
        (
            json.dumps(
                {
                    "spec": "chara_card_v2",
                    "data": {
                        "name": "X",
                        "extensions": {"companion": {"phrases": [{"mode": "intimate", "text": "p" * 201}]}},
                    },
                }
            ).encode(),
            CardInvalidField,
            "data.extensions.companion.phrases",
        ),
        (
            json.dumps(
                {
                    "spec": "chara_card_v2",
                    "data": {
                        "name": "X",
                        "extensions": {"companion": {"phrases": [{"mode": "intimate", "text": "p"}] * 201}},
                    },
                }
            ).encode(),
            CardInvalidField,
            "data.extensions.companion.phrases",
        ),
    ],
)
def test_malformed_cards_raise_a_coded_error_naming_the_field(content, error, field):
    with pytest.raises(error) as caught:
        parse(content)

    assert caught.value.field == field


def test_error_codes_and_statuses_are_stable():
    assert (CardTooLarge.code, CardTooLarge.status_code) == ("card_too_large", 413)
    assert (CardNotJson.code, CardNotJson.status_code) == ("card_not_json", 422)
    assert (CardMissingField.code, CardUnknownSpec.code) == ("card_missing_field", "card_unknown_spec")
    assert (PngNoCardChunk.code, CardBadBase64.code) == ("png_no_card_chunk", "card_bad_base64")
    assert (PngInvalid.code, PngTooLarge.code, PngTooLarge.status_code) == ("png_invalid", "png_too_large", 413)


def test_oversized_card_is_refused_before_parsing():
    content = b'{"spec": "chara_card_v2", "data": {"name": "' + b"x" * 100 + b'"}}'

    with pytest.raises(CardTooLarge) as caught:
        card_parse(content, max_bytes=50, max_pixels=MAX_PIXELS)

    assert caught.value.message == f"The card is {len(content)} bytes; the limit is 50 bytes."


def test_png_without_card_chunk():
    with pytest.raises(PngNoCardChunk):
        parse(png_bytes(chunks={"Comment": "just a picture"}))


def test_png_with_bad_base64():
    with pytest.raises(CardBadBase64):
        parse(png_bytes(chunks={"chara": "this is *not* base64!"}))


def test_png_whose_chunk_decodes_to_non_json():
    with pytest.raises(CardNotJson):
        parse(png_bytes(chunks={"chara": base64.b64encode(b"hello there").decode()}))


def test_png_signature_followed_by_garbage_is_invalid():
    with pytest.raises(PngInvalid):
        parse(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)


def test_truncated_png_is_invalid():
    content = png_card({"spec": "chara_card_v2", "data": {"name": "Cut"}})

    with pytest.raises(PngInvalid):
        parse(content[: len(content) // 2])


def test_png_with_corrupted_pixel_data_is_invalid():
    content = bytearray(png_card({"spec": "chara_card_v2", "data": {"name": "Bad CRC"}}))
    idat = content.index(b"IDAT")
    content[idat + 6] ^= 0xFF  # flips a byte of the compressed pixels: the chunk CRC no longer matches

    with pytest.raises(PngInvalid):
        parse(bytes(content))


def test_png_with_too_many_pixels_is_refused_without_decoding():
    content = png_bytes(size=(300, 300), chunks={"chara": card_b64({"spec": "chara_card_v2", "data": {"name": "B"}})})

    with pytest.raises(PngTooLarge) as caught:
        card_parse(content, max_bytes=MAX_BYTES, max_pixels=100 * 100)

    assert caught.value.message == "The PNG is 300x300 pixels; at most 10000 pixels are accepted."


def test_decompression_bomb_header_is_refused():
    # A PNG header claiming 100000x100000 pixels: Pillow's own bomb check fires on open.
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    content = bytearray(buffer.getvalue())
    ihdr = content.index(b"IHDR")
    content[ihdr + 4 : ihdr + 12] = (100_000).to_bytes(4, "big") * 2
    content[ihdr + 17 : ihdr + 21] = zlib.crc32(bytes(content[ihdr : ihdr + 17])).to_bytes(4, "big")

    with pytest.raises(PngTooLarge):
        card_parse(bytes(content), max_bytes=MAX_BYTES, max_pixels=10**12)


def test_export_then_import_gives_the_same_avatar(db, card_bytes):
    from avatars.cards import avatar_export_card
    from avatars.models import AvatarPhrase
    from avatars.services import avatar_import_card
    from testing.support import UserFactory

    # Given an avatar imported from a V3 card with our extension, phrases and unknown fields
    user = UserFactory()
    original = avatar_import_card(user=user, content=card_bytes("orla_v3.json"))

    # When it is exported and the export imported again
    exported = avatar_export_card(original)
    copy = avatar_import_card(user=user, content=json.dumps(exported).encode())

    # Then every field, the kept card data and the phrases are the same
    assert exported["spec"] == "chara_card_v2"
    assert exported["spec_version"] == "2.0"
    fields = [
        "name", "tagline", "description", "personality", "scenario", "first_message", "alternate_greetings",
        "example_dialogue", "system_prompt", "post_history_instructions", "secretary_instructions",
        "intimate_instructions", "intimate_allowed", "default_mode", "fallback_lines", "creator", "creator_notes",
        "character_version", "tags", "card_extensions", "is_public", "owner_id",
    ]  # fmt: skip
    assert {f: getattr(copy, f) for f in fields} == {f: getattr(original, f) for f in fields}
    assert copy.slug == "orla-2"
    assert sorted(AvatarPhrase.objects.filter(avatar=copy).values_list("mode", "text")) == [
        ("intimate", "stay with me a while"),
        ("secretary", "plan my route"),
    ]


def test_export_of_a_plain_avatar_is_a_complete_v2_card(db):
    from avatars.cards import avatar_export_card
    from testing.support import AvatarFactory

    avatar = AvatarFactory(name="Plain", tags=["x"], card_extensions={})

    card = avatar_export_card(avatar)

    assert card == {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": "Plain",
            "description": "",
            "personality": "Calm, attentive and precise.",
            "scenario": "Helps the user through the day.",
            "first_mes": "Hello! How can I help today?",
            "mes_example": "",
            "creator_notes": "",
            "system_prompt": "",
            "post_history_instructions": "",
            "alternate_greetings": [],
            "tags": ["x"],
            "creator": "",
            "character_version": "",
            "extensions": {
                "companion": {
                    "tagline": "",
                    "secretary_instructions": "",
                    "intimate_instructions": "",
                    "intimate_allowed": True,
                    "default_mode": "secretary",
                    "fallback_lines": [
                        "Sorry, my thoughts are elsewhere for a moment. Try again soon?",
                        "Give me a moment, please.",
                    ],
                    "phrases": [],
                }
            },
        },
    }
