"""The /api/avatars endpoints, through the real URL conf and Bearer auth."""

import json

import pytest
from django.test import Client

from avatars.models import Avatar
from avatars.tests.factories import auth_header
from testing.support import AvatarFactory, UserFactory

pytestmark = pytest.mark.django_db

URL = "/api/avatars"


@pytest.fixture
def client(user) -> Client:
    return Client(headers=auth_header(user))


@pytest.fixture
def theirs(other_user):
    return AvatarFactory(name="Secret", slug="secret", is_public=False, owner=other_user, personality="Hidden")


def post_json(client: Client, url: str, body: object):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def patch_json(client: Client, url: str, body: object):
    return client.patch(url, data=json.dumps(body), content_type="application/json")


def test_every_endpoint_requires_a_token(anon_client):
    avatar = AvatarFactory()
    responses = [
        anon_client.get(URL),
        anon_client.get(f"{URL}/{avatar.id}"),
        post_json(anon_client, URL, {"name": "X"}),
        patch_json(anon_client, f"{URL}/{avatar.id}", {"name": "X"}),
        anon_client.delete(f"{URL}/{avatar.id}"),
        post_json(anon_client, f"{URL}/import", {"name": "X"}),
    ]

    assert [r.status_code for r in responses] == [401] * 6
    assert responses[0].json() == {
        "detail": "Authentication credentials were not provided or are invalid.",
        "code": "unauthorized",
        "field": None,
    }
    assert Avatar.objects.count() == 1


def test_list_is_catalogue_plus_own_ordered_by_name(client, user, theirs):
    AvatarFactory(name="Zed", slug="zed", tags=["work"])
    AvatarFactory(name="amber", slug="amber", owner=user, is_public=False)

    response = client.get(URL)

    assert response.status_code == 200
    assert [(a["slug"], a["is_own"], a["is_public"]) for a in response.json()] == [
        ("amber", True, False),
        ("zed", False, True),
    ]


def test_list_filters_by_q_and_tag(client, user):
    AvatarFactory(name="Zed", slug="zed", tags=["Work"])
    AvatarFactory(name="Amber", slug="amber", tags=["play"], description="Loves board games")

    assert [a["slug"] for a in client.get(URL, {"tag": "work"}).json()] == ["zed"]
    assert [a["slug"] for a in client.get(URL, {"q": "board"}).json()] == ["amber"]
    assert client.get(URL, {"q": "board", "tag": "work"}).json() == []


def test_create_returns_201_with_every_field(client, user):
    body = {
        "name": "Pip",
        "tagline": "Small and sharp",
        "personality": "Quick",
        "alternate_greetings": ["Hi!", "Yo."],
        "fallback_lines": ["Hold on."],
        "tags": ["tiny"],
        "default_mode": "intimate",
        "intimate_allowed": False,
    }

    response = post_json(client, URL, body)

    assert response.status_code == 201
    avatar = Avatar.objects.get()
    data = response.json()
    assert data == {
        "id": avatar.id,
        "slug": "pip",
        "name": "Pip",
        "tagline": "Small and sharp",
        "description": "",
        "personality": "Quick",
        "scenario": "",
        "first_message": "",
        "alternate_greetings": ["Hi!", "Yo."],
        "example_dialogue": "",
        "system_prompt": "",
        "post_history_instructions": "",
        "secretary_instructions": "",
        "intimate_instructions": "",
        "intimate_allowed": False,
        "default_mode": "intimate",
        "fallback_lines": ["Hold on."],
        "creator": "",
        "creator_notes": "",
        "character_version": "",
        "tags": ["tiny"],
        "image": None,
        "appearance": "",
        "style": "",
        "portrait": None,
        "card_extensions": {},
        "is_public": False,
        "is_own": True,
        "created_at": data["created_at"],
        "updated_at": data["updated_at"],
    }
    assert (avatar.owner, avatar.is_public) == (user, False)


def test_detail_of_a_catalogue_avatar(client):
    avatar = AvatarFactory(name="Open", slug="open")

    response = client.get(f"{URL}/{avatar.id}")

    assert response.status_code == 200
    assert (response.json()["slug"], response.json()["is_own"]) == ("open", False)


def test_patch_changes_the_given_fields_only(client, user):
    avatar = AvatarFactory(name="Before", slug="before", owner=user, is_public=False, personality="Same")

    response = patch_json(client, f"{URL}/{avatar.id}", {"name": "After", "tags": ["new"]})

    assert response.status_code == 200
    assert (response.json()["name"], response.json()["slug"], response.json()["personality"]) == (
        "After",
        "before",
        "Same",
    )
    avatar.refresh_from_db()
    assert (avatar.name, avatar.tags, avatar.personality) == ("After", ["new"], "Same")


def test_delete_returns_204_and_removes_the_row(client, user):
    avatar = AvatarFactory(owner=user, is_public=False)

    response = client.delete(f"{URL}/{avatar.id}")

    assert response.status_code == 204
    assert response.content == b""
    assert not Avatar.objects.filter(id=avatar.id).exists()


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_another_users_private_avatar_is_a_404(client, theirs, method):
    url = f"{URL}/{theirs.id}"
    response = patch_json(client, url, {"name": "Mine now"}) if method == "patch" else getattr(client, method)(url)

    assert response.status_code == 404
    assert response.json() == {"detail": "Avatar not found.", "code": "not_found", "field": None}
    assert "Secret" not in response.content.decode()
    theirs.refresh_from_db()
    assert (theirs.name, theirs.owner_id) == ("Secret", theirs.owner_id)


def test_a_missing_id_is_a_404_like_another_users(client):
    assert client.get(f"{URL}/987654").json() == {"detail": "Avatar not found.", "code": "not_found", "field": None}


@pytest.mark.parametrize("method", ["patch", "delete"])
def test_catalogue_avatars_are_read_only(client, method):
    avatar = AvatarFactory(name="Shared", slug="shared")
    url = f"{URL}/{avatar.id}"

    response = patch_json(client, url, {"name": "Hijacked"}) if method == "patch" else client.delete(url)

    assert response.status_code == 403
    assert response.json() == {
        "detail": "This avatar belongs to the catalogue and cannot be changed.",
        "code": "read_only",
        "field": None,
    }
    avatar.refresh_from_db()
    assert avatar.name == "Shared"


def error_fields(response) -> list[str]:
    """The fields the validation errors name, first the one the error's `field` gives."""
    names = [str(e["loc"][2]) for e in response.json()["errors"]]
    assert response.json()["field"].split(".")[0] == names[0]
    return list(dict.fromkeys(names))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "n" * 81}, "name"),
        ({"name": "X", "tagline": "t" * 201}, "tagline"),
        ({"name": "X", "description": "d" * 20_001}, "description"),
        ({"name": "X", "first_message": "f" * 4001}, "first_message"),
        ({"name": "X", "secretary_instructions": "s" * 4001}, "secretary_instructions"),
        ({"name": "X", "alternate_greetings": ["g"] * 21}, "alternate_greetings"),
        ({"name": "X", "alternate_greetings": ["g" * 4001]}, "alternate_greetings"),
        ({"name": "X", "fallback_lines": ["f"] * 51}, "fallback_lines"),
        ({"name": "X", "fallback_lines": ["f" * 1001]}, "fallback_lines"),
        ({"name": "X", "tags": ["t"] * 31}, "tags"),
        ({"name": "X", "tags": ["t" * 51]}, "tags"),
        ({"name": "X", "tags": "not-a-list"}, "tags"),
        ({"name": "X", "default_mode": "party"}, "default_mode"),
        ({"name": 5}, "name"),
    ],
)
def test_create_validation_errors_name_the_field(client, body, field):
    response = post_json(client, URL, body)

    assert response.status_code == 422
    assert response.json()["code"] == "invalid"
    assert error_fields(response) == [field]
    assert Avatar.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": None}, "name"),
        ({"tags": None}, "tags"),
        ({"name": "n" * 81}, "name"),
        ({"intimate_allowed": "maybe"}, "intimate_allowed"),
    ],
)
def test_patch_validation_errors_name_the_field(client, user, body, field):
    avatar = AvatarFactory(name="Kept", owner=user, is_public=False)

    response = patch_json(client, f"{URL}/{avatar.id}", body)

    assert response.status_code == 422
    assert error_fields(response) == [field]
    avatar.refresh_from_db()
    assert avatar.name == "Kept"


def test_non_staff_cannot_make_an_avatar_public(client, user):
    own = AvatarFactory(owner=user, is_public=False)

    created = post_json(client, URL, {"name": "Loud", "is_public": True})
    patched = patch_json(client, f"{URL}/{own.id}", {"is_public": True})

    for response in (created, patched):
        assert response.status_code == 422
        assert response.json() == {
            "detail": "Only staff can make an avatar public.",
            "code": "public_staff_only",
            "field": "is_public",
        }
    assert list(Avatar.objects.filter(is_public=True)) == []


def test_staff_can_publish_their_own_avatar():
    staff = UserFactory(username="boss", is_staff=True)
    client = Client(headers=auth_header(staff))

    response = post_json(client, URL, {"name": "Shared", "is_public": True})

    assert response.status_code == 201
    assert (response.json()["is_public"], response.json()["is_own"]) == (True, True)


def test_the_per_user_limit_is_a_409(client, user, settings):
    settings.AVATAR_MAX_PER_USER = 1
    AvatarFactory(owner=user, is_public=False)

    response = post_json(client, URL, {"name": "One too many"})

    assert response.status_code == 409
    assert response.json() == {
        "detail": "You already have 1 avatars, the most allowed; delete one to add another.",
        "code": "avatar_limit_reached",
        "field": None,
    }
    assert Avatar.objects.filter(owner=user).count() == 1


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        ("{not json", "application/json", 400, "malformed"),
        ('{"name": "X",}', "application/json", 400, "malformed"),
        ("name=X", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ("name: X", "text/plain", 415, "unsupported_media_type"),
        (b"\xff\xfe\xfa", "application/json", 400, "malformed"),
    ],
)
def test_malformed_bodies_are_4xx_never_500(client, data, content_type, status, code):
    response = client.post(URL, data=data, content_type=content_type)

    assert (response.status_code, response.json()["code"]) == (status, code)
    assert Avatar.objects.count() == 0


@pytest.mark.parametrize("body", ["[1, 2]", '"just a string"', "null", "42"])
def test_json_that_is_not_an_object_is_a_422(client, body):
    response = client.post(URL, data=body, content_type="application/json")

    assert response.status_code == 422
    assert Avatar.objects.count() == 0


def test_patch_with_malformed_json_is_a_400(client, user):
    avatar = AvatarFactory(owner=user, is_public=False)

    response = client.patch(f"{URL}/{avatar.id}", data="{oops", content_type="application/json")

    assert response.status_code == 400


def test_a_non_numeric_id_is_a_4xx(client):
    assert client.get(f"{URL}/abc").status_code in {404, 422}


def test_image_is_an_absolute_url(client, user, card_bytes):
    from avatars.services import avatar_import_card

    avatar = avatar_import_card(user=user, content=card_bytes("wren_v2.png"))

    response = client.get(f"{URL}/{avatar.id}")

    assert response.json()["image"] == "http://testserver/media/avatars/captain-wren.png"
