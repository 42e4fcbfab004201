"""GET and PATCH /api/me."""

from datetime import UTC, datetime
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.serializers.json import DjangoJSONEncoder
from django.test import Client

from accounts.models import Profile
from accounts.services import TokenPair, token_pair_create
from accounts.tests.conftest import bearer

pytestmark = pytest.mark.django_db


def patch_me(client: Client, tokens: TokenPair, body: Any) -> Any:
    return client.patch("/api/me", body, content_type="application/json", headers=bearer(tokens.access))


def test_me_returns_the_profile(client: Client, user: User, tokens: TokenPair) -> None:
    response = client.get("/api/me", headers=bearer(tokens.access))

    assert response.status_code == 200
    assert response.json() == {
        "id": user.id,
        "username": "sam",
        "display_name": "Sam",
        "adult_confirmed": False,
        "locale": "US",
        "intimate_opt_in": False,
        "timezone": "UTC",
        "quiet_hours": None,
        "proactive_opt_in": False,
        "recall_across_avatars": False,
        # the API's JSON encoder (Django's) writes milliseconds
        "created_at": DjangoJSONEncoder().default(user.date_joined),
    }


def test_me_creates_the_profile_of_a_user_made_in_the_admin(client: Client) -> None:
    # given a user without a profile
    admin_made = User.objects.create_user("kim", password="irrelevant-pass-1")
    tokens = token_pair_create(user=admin_made)

    response = client.get("/api/me", headers=bearer(tokens.access))

    assert response.status_code == 200
    assert response.json()["display_name"] == "kim"
    assert Profile.objects.filter(user=admin_made).count() == 1


def test_me_shows_only_the_callers_profile(client: Client, user: User, other_user: User) -> None:
    tokens = token_pair_create(user=other_user)

    response = client.get("/api/me", headers=bearer(tokens.access))

    assert response.json()["username"] == "alex"
    assert response.json()["id"] == other_user.id


def test_patch_display_name(client: Client, user: User, tokens: TokenPair) -> None:
    response = patch_me(client, tokens, {"display_name": "  Samuel  "})

    assert response.status_code == 200
    assert response.json()["display_name"] == "Samuel"
    assert Profile.objects.get(user=user).display_name == "Samuel"


@pytest.mark.parametrize("display_name", ["d" * 81, "", "   ", None, 42])
def test_patch_bad_display_name_is_422(client: Client, user: User, tokens: TokenPair, display_name: Any) -> None:
    response = patch_me(client, tokens, {"display_name": display_name})

    assert response.status_code == 422
    assert (response.json()["field"], response.json()["errors"][0]["loc"][:3]) == (
        "display_name",
        ["body", "payload", "display_name"],
    )
    assert Profile.objects.get(user=user).display_name == "Sam"


def test_patch_display_name_with_control_characters_is_422(client: Client, user: User, tokens: TokenPair) -> None:
    response = patch_me(client, tokens, {"display_name": "Sam\u0000"})

    assert response.status_code == 422
    assert response.json()["field"] == "display_name"


def test_patch_empty_body_changes_nothing(client: Client, user: User, tokens: TokenPair) -> None:
    response = patch_me(client, tokens, {})

    assert response.status_code == 200
    after = Profile.objects.get(user=user)
    assert (after.display_name, after.adult_confirmed_at, after.intimate_opt_in) == ("Sam", None, False)


def test_opt_in_without_adult_confirmation_is_refused(client: Client, user: User, tokens: TokenPair) -> None:
    response = patch_me(client, tokens, {"intimate_opt_in": True, "display_name": "Changed"})

    assert response.status_code == 422
    assert response.json() == {
        "detail": "Confirm that you are an adult (adult_confirmed) to opt in to intimate mode.",
        "code": "adult_confirmation_required",
        "field": "intimate_opt_in",
    }
    # and nothing of the request was applied
    profile = Profile.objects.get(user=user)
    assert (profile.display_name, profile.adult_confirmed_at, profile.intimate_opt_in) == ("Sam", None, False)


def test_opt_in_with_adult_confirmation_in_the_same_request(client: Client, user: User, tokens: TokenPair) -> None:
    response = patch_me(client, tokens, {"adult_confirmed": True, "intimate_opt_in": True})

    assert response.status_code == 200
    assert response.json()["adult_confirmed"] is True
    assert response.json()["intimate_opt_in"] is True
    profile = Profile.objects.get(user=user)
    assert profile.adult_confirmed_at is not None
    assert profile.intimate_opt_in is True


def test_opt_in_after_earlier_adult_confirmation(client: Client, user: User, tokens: TokenPair) -> None:
    confirmed_at = datetime(2030, 1, 1, tzinfo=UTC)
    Profile.objects.filter(user=user).update(adult_confirmed_at=confirmed_at)

    response = patch_me(client, tokens, {"intimate_opt_in": True, "adult_confirmed": True})

    assert response.status_code == 200
    # confirming again keeps the first confirmation's time
    assert Profile.objects.get(user=user).adult_confirmed_at == confirmed_at
    assert Profile.objects.get(user=user).intimate_opt_in is True


def test_withdrawing_adult_confirmation_turns_opt_in_off(client: Client, user: User, tokens: TokenPair) -> None:
    patch_me(client, tokens, {"adult_confirmed": True, "intimate_opt_in": True})

    response = patch_me(client, tokens, {"adult_confirmed": False})

    assert response.status_code == 200
    assert response.json()["adult_confirmed"] is False
    assert response.json()["intimate_opt_in"] is False
    profile = Profile.objects.get(user=user)
    assert (profile.adult_confirmed_at, profile.intimate_opt_in) == (None, False)


def test_withdrawing_adult_and_opting_in_at_once_is_refused(client: Client, user: User, tokens: TokenPair) -> None:
    patch_me(client, tokens, {"adult_confirmed": True})

    response = patch_me(client, tokens, {"adult_confirmed": False, "intimate_opt_in": True})

    assert response.status_code == 422
    assert response.json()["code"] == "adult_confirmation_required"
    assert Profile.objects.get(user=user).adult_confirmed_at is not None


def test_opting_out_needs_no_confirmation(client: Client, user: User, tokens: TokenPair) -> None:
    response = patch_me(client, tokens, {"intimate_opt_in": False})

    assert response.status_code == 200
    assert response.json()["intimate_opt_in"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"adult_confirmed": "yes"}, "adult_confirmed"),
        ({"adult_confirmed": 1}, "adult_confirmed"),
        ({"intimate_opt_in": "true"}, "intimate_opt_in"),
        ({"intimate_opt_in": None}, "intimate_opt_in"),
    ],
)
def test_patch_wrong_types_are_422(client: Client, user: User, tokens: TokenPair, body: Any, field: str) -> None:
    response = patch_me(client, tokens, body)

    assert response.status_code == 422
    assert sorted({tuple(error["loc"][:3]) for error in response.json()["errors"]}) == [("body", "payload", field)]
    assert Profile.objects.get(user=user).adult_confirmed_at is None


def test_patch_without_a_token_is_401(client: Client, user: User) -> None:
    response = client.patch("/api/me", {"display_name": "X"}, content_type="application/json")

    assert response.status_code == 401
    assert Profile.objects.get(user=user).display_name == "Sam"


def test_me_costs_one_query(client: Client, tokens: TokenPair, django_assert_num_queries: Any) -> None:
    # the token lookup brings the user and the profile along
    with django_assert_num_queries(1):
        response = client.get("/api/me", headers=bearer(tokens.access))

    assert response.status_code == 200
