"""POST /api/auth/register."""

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts import throttling
from accounts.models import ApiToken, Profile
from testing.support import UserFactory

URL = "/api/auth/register"
STRONG = "plum-orbit-velvet-42"

pytestmark = pytest.mark.django_db


def register(client: Client, body: Any, **extra: Any) -> Any:
    return client.post(URL, body, content_type="application/json", **extra)


def test_register_creates_user_and_profile(client: Client) -> None:
    # given no account; when registering
    response = register(client, {"username": "sam_2", "password": STRONG, "display_name": "Sam"})

    # then 201 with the new account, stored with a hashed password and a profile
    assert response.status_code == 201
    user = User.objects.get()
    assert response.json() == {"id": user.id, "username": "sam_2", "display_name": "Sam"}
    assert user.is_active
    assert user.check_password(STRONG)
    assert user.password != STRONG
    assert Profile.objects.get(user=user).display_name == "Sam"
    # and registering does not log in
    assert ApiToken.objects.count() == 0


def test_register_stores_username_in_lower_case_and_defaults_display_name(client: Client) -> None:
    response = register(client, {"username": "  Sam.Lee-1 ", "password": STRONG})

    assert response.status_code == 201
    assert response.json()["username"] == "sam.lee-1"
    assert response.json()["display_name"] == "Sam.Lee-1"
    assert User.objects.get().username == "sam.lee-1"


def test_register_weak_password_is_422_naming_password(client: Client) -> None:
    response = register(client, {"username": "sam", "password": "12345678"})

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid"
    assert body["field"] == "password"
    assert "too common" in body["detail"]
    assert not User.objects.exists()
    assert not Profile.objects.exists()


def test_register_password_like_username_is_refused(client: Client) -> None:
    response = register(client, {"username": "samantha.jones", "password": "samantha.jones1"})

    assert response.status_code == 422
    assert response.json()["field"] == "password"
    assert "too similar to the username" in response.json()["detail"]


@pytest.mark.parametrize("taken_as", ["sam", "SAM", "Sam"])
def test_register_duplicate_username_is_409_whatever_the_case(client: Client, taken_as: str) -> None:
    # given "sam" exists
    register(client, {"username": "sam", "password": STRONG})

    # when someone registers the same name in another case
    response = register(client, {"username": taken_as, "password": STRONG}, REMOTE_ADDR="10.0.0.9")

    # then 409 username_taken, and no second account
    assert response.status_code == 409
    assert response.json() == {"detail": "This username is taken.", "code": "username_taken", "field": "username"}
    assert User.objects.count() == 1
    assert Profile.objects.count() == 1


def test_register_sees_mixed_case_names_made_in_the_admin(client: Client) -> None:
    UserFactory(username="Alex")

    response = register(client, {"username": "alex", "password": STRONG})

    assert response.status_code == 409
    assert response.json()["code"] == "username_taken"
    assert User.objects.count() == 1


def test_register_accepts_the_longest_allowed_fields(client: Client) -> None:
    body = {"username": "a" * 40, "password": "Zq-" + "x7" * 62 + "y", "display_name": "é" * 80}

    response = register(client, body)

    assert response.status_code == 201
    assert response.json()["display_name"] == "é" * 80


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "a" * 41, "password": STRONG}, "username"),
        ({"username": "ab", "password": STRONG}, "username"),
        ({"username": "sam lee", "password": STRONG}, "username"),
        ({"username": "sam@example.com", "password": STRONG}, "username"),
        ({"username": "sämi", "password": STRONG}, "username"),
        ({"username": "sam", "password": "x" * 129}, "password"),
        ({"username": "sam", "password": STRONG, "display_name": "d" * 81}, "display_name"),
        ({"username": 12345, "password": STRONG}, "username"),
        ({"username": "sam", "password": ["a", "b"]}, "password"),
        ({"username": "sam", "password": STRONG, "display_name": {"x": 1}}, "display_name"),
        ({"password": STRONG}, "username"),
    ],
)
def test_register_bad_fields_are_422_naming_the_field(client: Client, body: dict[str, Any], field: str) -> None:
    response = register(client, body)

    assert response.status_code == 422
    errors = response.json()["errors"]
    assert response.json()["code"] == "invalid"
    assert [error["loc"] for error in errors] == [["body", "payload", field]]
    assert not User.objects.exists()


def test_register_display_name_with_line_break_is_422(client: Client) -> None:
    response = register(client, {"username": "sam", "password": STRONG, "display_name": "Sam\nIgnore the above"})

    assert response.status_code == 422
    assert response.json()["field"] == "display_name"
    assert not User.objects.exists()


@pytest.mark.parametrize("raw", ['{"username": "sam", ', "not json", "[1, 2]", '"sam"', "null", ""])
def test_register_malformed_body_is_4xx_not_500(client: Client, raw: str) -> None:
    response = client.post(URL, raw, content_type="application/json")

    assert 400 <= response.status_code < 500
    assert "detail" in response.json()
    assert not User.objects.exists()


def test_register_is_throttled_per_address(client: Client, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a limit of 2 registrations per hour per address
    settings.REGISTER_THROTTLE_PER_IP = 2
    monkeypatch.setattr(throttling, "_now", lambda: 1_000_000.0)
    assert register(client, {"username": "one", "password": STRONG}, REMOTE_ADDR="10.0.0.1").status_code == 201
    # a refused attempt counts too
    assert register(client, {"username": "two", "password": "123"}, REMOTE_ADDR="10.0.0.1").status_code == 422

    # when a third comes from the same address
    response = register(client, {"username": "three", "password": STRONG}, REMOTE_ADDR="10.0.0.1")

    # then 429 with Retry-After, and no account made
    assert response.status_code == 429
    assert response["Retry-After"] == "3600"
    assert response.json()["code"] == "throttled"
    assert not User.objects.filter(username="three").exists()
    # while another address may still register
    assert register(client, {"username": "three", "password": STRONG}, REMOTE_ADDR="10.0.0.2").status_code == 201
