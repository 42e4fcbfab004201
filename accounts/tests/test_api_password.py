"""POST /api/auth/password, the admin's "change password", and a Redis outage on the auth endpoints."""

from typing import Any

import pytest
import redis.exceptions
from django.contrib.auth.models import User
from django.core.cache import caches
from django.test import Client

from accounts.models import ApiToken
from accounts.services import TokenPair, token_pair_create
from accounts.tests.conftest import PASSWORD, bearer

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a-new-long-passphrase-8"


def change(client: Client, access: str, old: str, new: str) -> Any:
    body = {"old_password": old, "new_password": new}
    return client.post("/api/auth/password", body, content_type="application/json", headers=bearer(access))


def test_a_password_change_ends_every_session_and_answers_a_new_pair(client: Client, user: User) -> None:
    # Given two sessions of the user (this device and another)
    this, other = token_pair_create(user=user), token_pair_create(user=user)

    # When the password is changed from this device
    response = change(client, this.access, PASSWORD, NEW_PASSWORD)

    # Then the answer is a new pair, which works
    assert response.status_code == 200, response.content
    pair = response.json()
    assert set(pair) == {"access", "refresh", "expires_in"}
    assert client.get("/api/me", headers=bearer(pair["access"])).status_code == 200
    # And every token from before is revoked, this session's included
    for old in (this, other):
        assert client.get("/api/me", headers=bearer(old.access)).status_code == 401
    refreshed = client.post("/api/auth/refresh", {"refresh": other.refresh}, content_type="application/json")
    assert refreshed.status_code == 401
    assert ApiToken.objects.filter(user=user, revoked_at__isnull=True).count() == 2  # the new pair only
    # And only the new password signs in
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    assert not user.check_password(PASSWORD)


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [("not-the-password", NEW_PASSWORD, "old_password"), (PASSWORD, "12345678", "new_password")],
    ids=["wrong-old", "weak-new"],
)
def test_a_refused_password_change_names_the_field_and_changes_nothing(
    client: Client, user: User, tokens: TokenPair, old: str, new: str, field: str
) -> None:
    response = change(client, tokens.access, old, new)

    assert response.status_code == 422
    assert (response.json()["code"], response.json()["field"]) == ("invalid", field)
    user.refresh_from_db()
    assert user.check_password(PASSWORD)
    assert client.get("/api/me", headers=bearer(tokens.access)).status_code == 200  # the session lives on


def test_a_password_change_needs_a_bearer_token(client: Client) -> None:
    body = {"old_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert client.post("/api/auth/password", body, content_type="application/json").status_code == 401


def test_the_admins_password_change_ends_every_session_of_the_user(client: Client, user: User) -> None:
    # Given a session of the user and a superuser in the admin
    session = token_pair_create(user=user)
    admin = User.objects.create_superuser("root", password="root-password-123")
    client.force_login(admin)

    # When the superuser sets a new password for the user
    response = client.post(
        f"/admin/auth/user/{user.pk}/password/",
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )

    # Then it is changed and the user's session is over
    assert response.status_code == 302, response.content
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    assert client.get("/api/me", headers=bearer(session.access)).status_code == 401


def test_a_login_while_redis_is_down_is_a_503_unavailable_not_a_500(
    client: Client, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a cache whose Redis does not answer (the login counters live there)
    def refused(*args: object, **kwargs: object) -> None:
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")

    monkeypatch.setattr(type(caches["default"]), "add", refused)

    # When the user signs in
    body = {"username": user.username, "password": PASSWORD}
    response = client.post("/api/auth/token", body, content_type="application/json")

    # Then the answer is the one error shape, retryable, with Retry-After, and no token was made
    assert response.status_code == 503
    assert response.json() == {
        "detail": "The service is briefly unavailable (a backing service does not answer). Try again shortly.",
        "code": "unavailable",
        "field": None,
        "retryable": True,
    }
    assert response["Retry-After"] == "5"
    assert not ApiToken.objects.filter(user=user).exists()
