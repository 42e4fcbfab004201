"""POST /api/auth/token, /api/auth/refresh and /api/auth/logout, and the bearer check."""

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from accounts import throttling
from accounts.models import ApiToken, TokenKind
from accounts.services import TokenPair, token_pair_create
from accounts.tests.conftest import PASSWORD, bearer
from testing.support import UserFactory

pytestmark = pytest.mark.django_db

INVALID_CREDENTIALS = {"detail": "Invalid username or password.", "code": "invalid_credentials", "field": None}
UNAUTHORIZED = {
    "detail": "Authentication credentials were not provided or are invalid.",
    "code": "unauthorized",
    "field": None,
}
INVALID_REFRESH = {
    "detail": "The refresh token is invalid or expired. Sign in again.",
    "code": "invalid_token",
    "field": None,
}


def post(client: Client, path: str, body: Any, **extra: Any) -> Any:
    return client.post(f"/api/auth/{path}", body, content_type="application/json", **extra)


def login(client: Client, username: str, password: str, ip: str = "127.0.0.1") -> Any:
    return post(client, "token", {"username": username, "password": password}, REMOTE_ADDR=ip)


def me_status(client: Client, access: str) -> int:
    return int(client.get("/api/me", headers=bearer(access)).status_code)


# --- token issue --------------------------------------------------------------------------


def test_token_issues_a_pair_stored_only_as_hashes(
    client: Client, user: User, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a pinned clock and the default lifetimes
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    monkeypatch.setattr(timezone, "now", lambda: now)

    # when sam logs in
    response = login(client, "sam", PASSWORD)

    # then a pair comes back, and the database holds its hashes, never the tokens
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access", "refresh", "expires_in"}
    assert body["expires_in"] == settings.ACCESS_TOKEN_TTL_SECONDS == 900
    assert body["access"] != body["refresh"]
    access = ApiToken.objects.get(kind=TokenKind.ACCESS)
    refresh = ApiToken.objects.get(kind=TokenKind.REFRESH)
    assert access.token_hash == hashlib.sha256(body["access"].encode()).hexdigest()
    assert refresh.token_hash == hashlib.sha256(body["refresh"].encode()).hexdigest()
    assert access.family == refresh.family
    assert (access.user, refresh.user) == (user, user)
    assert access.expires_at == now + timedelta(seconds=900)
    assert refresh.expires_at == now + timedelta(seconds=settings.REFRESH_TOKEN_TTL_SECONDS)
    assert not ApiToken.objects.filter(token_hash__in=[body["access"], body["refresh"]]).exists()
    user.refresh_from_db()
    assert user.last_login == now
    # and the access token works
    assert me_status(client, body["access"]) == 200


def test_each_login_starts_a_new_family(client: Client, user: User) -> None:
    login(client, "sam", PASSWORD)
    login(client, "sam", PASSWORD)

    assert ApiToken.objects.values("family").distinct().count() == 2


def test_token_username_is_matched_whatever_the_case(client: Client, user: User) -> None:
    assert login(client, " SAM", PASSWORD).status_code == 200


@pytest.mark.parametrize(
    ("username", "password"),
    [("sam", "wrong-password"), ("nobody", PASSWORD), ("SAM", "Correct-Horse-Battery-Staple")],
)
def test_token_bad_credentials_are_401_with_one_message(
    client: Client, user: User, username: str, password: str
) -> None:
    response = login(client, username, password)

    assert response.status_code == 401
    assert response.json() == INVALID_CREDENTIALS
    assert not ApiToken.objects.exists()


def test_token_wrong_password_and_unknown_user_answer_alike(client: Client, user: User) -> None:
    wrong_password = login(client, "sam", "wrong-password")
    unknown_user = login(client, "nobody", "wrong-password")

    assert wrong_password.status_code == unknown_user.status_code == 401
    assert wrong_password.json() == unknown_user.json() == INVALID_CREDENTIALS


def test_token_inactive_user_cannot_log_in(client: Client, user: User) -> None:
    user.is_active = False
    user.save()

    response = login(client, "sam", PASSWORD)

    assert response.status_code == 401
    assert response.json() == INVALID_CREDENTIALS
    assert not ApiToken.objects.exists()


def test_token_empty_password_is_422(client: Client, user: User) -> None:
    response = login(client, "sam", "")

    assert response.status_code == 422
    assert (response.json()["field"], response.json()["errors"][0]["loc"][:3]) == (
        "password",
        ["body", "payload", "password"],
    )


# --- login throttling ---------------------------------------------------------------------


@pytest.fixture
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throttling, "_now", lambda: 1_000_000.0)


@pytest.mark.usefixtures("pinned_clock")
def test_login_is_throttled_per_username(client: Client, user: User, settings: Any) -> None:
    # given 3 failures allowed per username in 15 minutes
    settings.LOGIN_THROTTLE_PER_USERNAME = 3
    settings.LOGIN_THROTTLE_PER_IP = 100
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        assert login(client, "sam", "wrong-password", ip=ip).status_code == 401

    # when the right password comes next, from yet another address and in another case
    response = login(client, "Sam", PASSWORD, ip="10.0.0.4")

    # then it is refused with a Retry-After, and no token is issued
    assert response.status_code == 429
    assert response["Retry-After"] == "900"
    assert response.json() == {
        "detail": "Too many failed sign-in attempts. Try again later.",
        "code": "throttled",
        "field": None,
    }
    assert not ApiToken.objects.exists()
    # while another username, from another address, is not blocked
    UserFactory(username="alex")
    assert login(client, "alex", PASSWORD, ip="10.0.0.5").status_code == 200


def test_login_retry_after_counts_down_from_the_first_failure(
    client: Client, user: User, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.LOGIN_THROTTLE_PER_USERNAME = 1
    monkeypatch.setattr(throttling, "_now", lambda: 1_000_000.0)
    login(client, "sam", "wrong-password")

    monkeypatch.setattr(throttling, "_now", lambda: 1_000_300.0)
    response = login(client, "sam", PASSWORD)

    assert response.status_code == 429
    assert response["Retry-After"] == "600"


@pytest.mark.usefixtures("pinned_clock")
def test_login_is_throttled_per_address(client: Client, user: User, settings: Any) -> None:
    # given 3 failures allowed per address, spent on three different usernames
    settings.LOGIN_THROTTLE_PER_USERNAME = 100
    settings.LOGIN_THROTTLE_PER_IP = 3
    for username in ("amy", "bob", "cat"):
        assert login(client, username, "wrong-password", ip="10.0.0.1").status_code == 401

    # when a fourth username is tried from that address, even with the right password
    response = login(client, "sam", PASSWORD, ip="10.0.0.1")

    # then 429; from another address the same login succeeds
    assert response.status_code == 429
    assert response["Retry-After"] == "900"
    assert login(client, "sam", PASSWORD, ip="10.0.0.2").status_code == 200


def test_successful_logins_do_not_count(client: Client, user: User, settings: Any) -> None:
    settings.LOGIN_THROTTLE_PER_USERNAME = 3
    settings.LOGIN_THROTTLE_PER_IP = 3
    assert login(client, "sam", "wrong-password").status_code == 401
    assert login(client, "sam", "wrong-password").status_code == 401
    assert login(client, "sam", PASSWORD).status_code == 200

    # the third failure is still within the limit; only the fourth is refused
    assert login(client, "sam", "wrong-password").status_code == 401
    assert login(client, "sam", PASSWORD).status_code == 429


# --- refresh ------------------------------------------------------------------------------


def test_refresh_rotates_the_pair(client: Client, tokens: TokenPair) -> None:
    # when the refresh token is used
    response = post(client, "refresh", {"refresh": tokens.refresh})

    # then a new pair in the same family, and the used refresh token is revoked
    assert response.status_code == 200
    new = response.json()
    assert set(new) == {"access", "refresh", "expires_in"}
    assert new["access"] != tokens.access
    assert new["refresh"] != tokens.refresh
    old_refresh = ApiToken.objects.get(token_hash=hashlib.sha256(tokens.refresh.encode()).hexdigest())
    assert old_refresh.revoked_at is not None
    assert ApiToken.objects.filter(family=old_refresh.family).count() == 4
    assert ApiToken.objects.filter(revoked_at__isnull=True).count() == 3
    assert me_status(client, new["access"]) == 200
    # the access token issued with the old refresh token keeps working until it expires
    assert me_status(client, tokens.access) == 200


def test_reusing_a_rotated_refresh_token_revokes_the_family(client: Client, tokens: TokenPair, user: User) -> None:
    # given the refresh token was rotated (say, by a thief) and another session exists
    rotated = post(client, "refresh", {"refresh": tokens.refresh}).json()
    other_session = token_pair_create(user=user)

    # when the old refresh token comes again
    response = post(client, "refresh", {"refresh": tokens.refresh})

    # then 401, and every token of that family stops working, the thief's new pair included
    assert response.status_code == 401
    assert response.json()["code"] == "refresh_token_reused"
    assert me_status(client, rotated["access"]) == 401
    assert me_status(client, tokens.access) == 401
    assert post(client, "refresh", {"refresh": rotated["refresh"]}).status_code == 401
    # but another login of the same user is untouched
    assert me_status(client, other_session.access) == 200
    assert post(client, "refresh", {"refresh": other_session.refresh}).status_code == 200


def test_refresh_with_an_expired_token_is_401(client: Client, tokens: TokenPair) -> None:
    ApiToken.objects.filter(kind=TokenKind.REFRESH).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = post(client, "refresh", {"refresh": tokens.refresh})

    assert response.status_code == 401
    assert response.json() == INVALID_REFRESH
    assert ApiToken.objects.count() == 2


@pytest.mark.parametrize("which", ["unknown", "access"])
def test_refresh_with_an_unknown_or_access_token_is_401(client: Client, tokens: TokenPair, which: str) -> None:
    presented = tokens.access if which == "access" else "x" * 43

    response = post(client, "refresh", {"refresh": presented})

    assert response.status_code == 401
    assert response.json() == INVALID_REFRESH
    assert ApiToken.objects.count() == 2
    assert not ApiToken.objects.filter(revoked_at__isnull=False).exists()


def test_refresh_for_an_inactive_user_is_401(client: Client, tokens: TokenPair, user: User) -> None:
    User.objects.filter(pk=user.pk).update(is_active=False)

    response = post(client, "refresh", {"refresh": tokens.refresh})

    assert response.status_code == 401
    assert ApiToken.objects.count() == 2


def test_refresh_body_too_long_is_422(client: Client) -> None:
    response = post(client, "refresh", {"refresh": "x" * 257})

    assert response.status_code == 422
    assert (response.json()["field"], response.json()["errors"][0]["loc"][:3]) == (
        "refresh",
        ["body", "payload", "refresh"],
    )


# --- logout -------------------------------------------------------------------------------


def test_logout_revokes_the_family_at_once(client: Client, tokens: TokenPair, user: User) -> None:
    # given a second login of the same user
    other_session = token_pair_create(user=user)
    assert me_status(client, tokens.access) == 200

    # when logging out with the refresh token alone (no Authorization header)
    response = post(client, "logout", {"refresh": tokens.refresh})

    # then 204, and neither token of that login works any more
    assert response.status_code == 204
    assert response.content == b""
    assert me_status(client, tokens.access) == 401
    assert post(client, "refresh", {"refresh": tokens.refresh}).status_code == 401
    # while the other login is untouched
    assert me_status(client, other_session.access) == 200


def test_logout_also_signs_out_access_tokens_of_earlier_rotations(client: Client, tokens: TokenPair) -> None:
    rotated = post(client, "refresh", {"refresh": tokens.refresh}).json()

    post(client, "logout", {"refresh": rotated["refresh"]})

    assert me_status(client, tokens.access) == 401
    assert me_status(client, rotated["access"]) == 401


def test_logout_with_an_unknown_token_is_204_and_changes_nothing(client: Client, tokens: TokenPair) -> None:
    response = post(client, "logout", {"refresh": "not-a-token"})

    assert response.status_code == 204
    assert not ApiToken.objects.filter(revoked_at__isnull=False).exists()
    assert me_status(client, tokens.access) == 200


def test_logout_twice_is_204(client: Client, tokens: TokenPair) -> None:
    assert post(client, "logout", {"refresh": tokens.refresh}).status_code == 204
    assert post(client, "logout", {"refresh": tokens.refresh}).status_code == 204


# --- bearer authentication ----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer garbage"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer " + "x" * 5000},
        {"Authorization": "Basic c2FtOnBhc3N3b3Jk"},
        {"Authorization": "garbage"},
    ],
)
def test_me_without_a_valid_token_is_401(client: Client, tokens: TokenPair, headers: dict[str, str]) -> None:
    response = client.get("/api/me", headers=headers)

    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


def test_expired_access_token_is_refused(client: Client, tokens: TokenPair) -> None:
    # given the access token's expiry has passed (time travel by moving expires_at)
    ApiToken.objects.filter(kind=TokenKind.ACCESS).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert me_status(client, tokens.access) == 401


def test_access_token_of_an_inactive_user_is_refused(client: Client, tokens: TokenPair, user: User) -> None:
    User.objects.filter(pk=user.pk).update(is_active=False)

    assert me_status(client, tokens.access) == 401


def test_refresh_token_is_not_an_access_token(client: Client, tokens: TokenPair) -> None:
    assert me_status(client, tokens.refresh) == 401


def test_bearer_scheme_is_case_insensitive(client: Client, tokens: TokenPair) -> None:
    assert client.get("/api/me", headers={"Authorization": f"bearer {tokens.access}"}).status_code == 200


@pytest.mark.parametrize("header", ["Token s3cret-planted-value", "Basic ZGVtbzpzM2NyZXQtcGxhbnRlZC12YWx1ZQ=="])
def test_credentials_of_another_scheme_get_a_401_and_never_reach_the_logs(
    client: Client, settings: Any, header: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a development server (DEBUG on, where ninja's own parser logs such headers whole)
    settings.DEBUG = True
    caplog.set_level(logging.DEBUG)

    # When a client sends credentials in a scheme the API does not take
    response = client.get("/api/me", headers={"Authorization": header})

    # Then it is a 401, and no log record holds the header's value
    assert response.status_code == 401
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert header.split(" ")[1] not in logged
    assert "s3cret-planted-value" not in logged
