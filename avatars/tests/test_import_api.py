"""POST /api/avatars/import: JSON body, PNG body or multipart upload, and every error code."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from avatars.models import Avatar, AvatarPhrase
from avatars.tests.factories import auth_header, card_b64, png_bytes, png_card

pytestmark = pytest.mark.django_db

URL = "/api/avatars/import"


@pytest.fixture
def client(user) -> Client:
    return Client(headers=auth_header(user))


def upload(client: Client, name: str, content: bytes, content_type: str = "image/png", field: str = "file"):
    return client.post(URL, {field: SimpleUploadedFile(name, content, content_type=content_type)})


def test_json_body_v2_creates_a_private_avatar(client, user, card_bytes):
    response = client.post(URL, data=card_bytes("wren_v2.json"), content_type="application/json")

    assert response.status_code == 201
    data = response.json()
    avatar = Avatar.objects.get()
    assert (data["id"], data["slug"], data["name"], data["is_own"], data["is_public"]) == (
        avatar.id,
        "captain-wren",
        "Captain Wren",
        True,
        False,
    )
    assert data["first_message"] == "*sets down a chipped cup* Storm's coming. Sit, and tell me where you've been."
    assert data["card_extensions"]["fields"] == {"character_book": {"name": "Sky Harbour", "entries": []}}
    assert data["image"] is None
    assert avatar.owner == user


def test_json_body_v3_creates_phrases_from_our_extension(client, card_bytes):
    response = client.post(URL, data=card_bytes("orla_v3.json"), content_type="application/json; charset=utf-8")

    assert response.status_code == 201
    assert response.json()["intimate_allowed"] is False
    assert sorted(AvatarPhrase.objects.values_list("mode", "text")) == [
        ("intimate", "stay with me a while"),
        ("secretary", "plan my route"),
    ]


def test_json_body_v1(client, card_bytes):
    response = client.post(URL, data=card_bytes("bramble_v1.json"), content_type="application/json")

    assert response.status_code == 201
    assert (response.json()["name"], response.json()["example_dialogue"]) == (
        "Bramble",
        "{{user}}: What are you brewing?\n{{char}}: Soup. Probably.",
    )


def test_multipart_png_becomes_the_avatars_image(client, card_bytes, media_root):
    response = upload(client, "wren.png", card_bytes("wren_v2.png"))

    assert response.status_code == 201
    assert response.json()["image"] == "http://testserver/media/avatars/captain-wren.png"
    assert (media_root / "avatars" / "captain-wren.png").read_bytes() == card_bytes("wren_v2.png")


def test_multipart_png_prefers_ccv3(client, card_bytes):
    response = upload(client, "juniper.png", card_bytes("juniper_v3.png"))

    assert response.status_code == 201
    assert response.json()["name"] == "Juniper"
    assert Avatar.objects.filter(name="Juniper (old)").count() == 0


def test_multipart_json_file(client, card_bytes):
    response = upload(client, "orla.json", card_bytes("orla_v3.json"), content_type="application/json")

    assert response.status_code == 201
    assert response.json()["name"] == "Orla"
    assert response.json()["image"] is None


def test_png_body(client, card_bytes):
    response = client.post(URL, data=card_bytes("wren_v2.png"), content_type="image/png")

    assert response.status_code == 201
    assert response.json()["image"] == "http://testserver/media/avatars/captain-wren.png"


def test_importing_the_same_card_twice_gives_two_avatars_with_distinct_slugs(client, card_bytes):
    first = client.post(URL, data=card_bytes("wren_v2.json"), content_type="application/json")
    second = client.post(URL, data=card_bytes("wren_v2.json"), content_type="application/json")

    assert (first.json()["slug"], second.json()["slug"]) == ("captain-wren", "captain-wren-2")


V2_NO_NAME = json.dumps({"spec": "chara_card_v2", "data": {"description": "?"}}).encode()
BAD_TYPE = json.dumps({"spec": "chara_card_v2", "data": {"name": "X", "tags": [1]}}).encode()
TOO_LONG = json.dumps({"spec": "chara_card_v2", "data": {"name": "X", "description": "d" * 20_001}}).encode()


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code", "field"),
    [
        (b"{oops", "application/json", 422, "card_not_json", None),
        (b"  ", "application/json", 422, "card_not_json", None),
        (b"[]", "application/json", 422, "card_not_json", None),
        (b'{"spec": "chara_card_v7"}', "application/json", 422, "card_unknown_spec", "spec"),
        (V2_NO_NAME, "application/json", 422, "card_missing_field", "data.name"),
        (BAD_TYPE, "application/json", 422, "card_invalid_field", "data.tags"),
        (TOO_LONG, "application/json", 422, "card_invalid_field", "data.description"),
        (png_bytes(chunks={"Comment": "hi"}), "image/png", 422, "png_no_card_chunk", None),
        (png_bytes(chunks={"chara": "%%%not base64%%%"}), "image/png", 422, "card_bad_base64", None),
        (b"\x89PNG\r\n\x1a\nnot really", "image/png", 422, "png_invalid", None),
        (b"name=x", "text/plain", 415, "card_unsupported_media_type", None),
        (b"name=x", "application/x-www-form-urlencoded", 415, "card_unsupported_media_type", None),
    ],
)
def test_bad_cards_get_a_coded_4xx(client, content, content_type, status, code, field):
    response = client.post(URL, data=content, content_type=content_type)

    assert response.status_code == status
    body = response.json()
    assert body["code"] == code
    assert body.get("field") == field
    assert body["detail"]
    assert Avatar.objects.count() == 0


def test_every_error_is_also_reported_for_a_multipart_upload(client):
    response = upload(client, "bad.png", png_bytes(chunks={"chara": "%%%"}))

    assert (response.status_code, response.json()["code"]) == (422, "card_bad_base64")
    assert Avatar.objects.count() == 0


def test_no_body_and_no_content_type_is_a_415(client):
    response = client.generic("POST", URL)

    assert (response.status_code, response.json()["code"]) == (415, "card_unsupported_media_type")


def test_an_empty_multipart_post_asks_for_the_file(client):
    response = client.post(URL)

    assert (response.status_code, response.json()["code"]) == (422, "card_missing_file")


def test_multipart_without_the_file_field(client, card_bytes):
    response = upload(client, "wren.png", card_bytes("wren_v2.png"), field="card")

    assert response.status_code == 422
    assert response.json() == {
        "detail": "Upload the card in the multipart field `file`.",
        "code": "card_missing_file",
        "field": "file",
    }


def test_png_with_too_many_pixels(client, settings):
    settings.CARD_IMAGE_MAX_PIXELS = 50 * 50
    content = png_bytes(size=(60, 60), chunks={"chara": card_b64({"spec": "chara_card_v2", "data": {"name": "Big"}})})

    response = upload(client, "big.png", content)

    assert (response.status_code, response.json()["code"]) == (413, "png_too_large")
    assert Avatar.objects.count() == 0


@pytest.mark.parametrize("how", ["json", "png", "multipart"])
def test_oversized_card_is_a_413(client, settings, how):
    settings.CARD_MAX_BYTES = 1024
    card = {"spec": "chara_card_v2", "data": {"name": "Huge", "description": "x" * 2000}}
    if how == "json":
        response = client.post(URL, data=json.dumps(card), content_type="application/json")
    elif how == "png":
        response = client.post(URL, data=png_card(card), content_type="image/png")
    else:
        response = upload(client, "huge.png", png_card(card))

    assert response.status_code == 413
    assert response.json()["code"] == "card_too_large"
    assert Avatar.objects.count() == 0


def test_a_card_at_the_limit_is_accepted(client, settings):
    body = json.dumps({"spec": "chara_card_v2", "data": {"name": "Edge", "description": ""}})
    settings.CARD_MAX_BYTES = len(body)

    response = client.post(URL, data=body, content_type="application/json")

    assert response.status_code == 201


def test_the_default_limit_is_two_mebibytes(settings):
    assert settings.CARD_MAX_BYTES == 2 * 1024 * 1024


def test_import_counts_against_the_per_user_limit(client, settings, card_bytes):
    settings.AVATAR_MAX_PER_USER = 0

    response = client.post(URL, data=card_bytes("wren_v2.json"), content_type="application/json")

    assert (response.status_code, response.json()["code"]) == (409, "avatar_limit_reached")
    assert Avatar.objects.count() == 0


def test_openapi_documents_both_body_kinds(client):
    schema = Client().get("/api/openapi.json").json()

    content = schema["paths"]["/api/avatars/import"]["post"]["requestBody"]["content"]
    assert sorted(content) == ["application/json", "image/png", "multipart/form-data"]
