"""Reads: the token lookup, profiles, and the intimate-mode rule."""

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from accounts.models import ApiToken, Profile, TokenKind
from accounts.selectors import intimate_block_reason, profile_get, user_get_by_access_token
from accounts.services import token_pair_create


@pytest.mark.django_db
def test_access_token_lookup_is_one_query_with_the_profile(user: User, django_assert_num_queries: Any) -> None:
    tokens = token_pair_create(user=user)
    with django_assert_num_queries(1):
        found = user_get_by_access_token(token=tokens.access)
        assert found is not None
        profile = profile_get(user=found)
    assert found == user
    assert profile.display_name == "Sam"


@pytest.mark.django_db
def test_access_token_lookup_refuses_what_is_not_a_live_access_token(user: User) -> None:
    tokens = token_pair_create(user=user)
    assert user_get_by_access_token(token=tokens.refresh) is None
    assert user_get_by_access_token(token="") is None

    ApiToken.objects.filter(kind=TokenKind.ACCESS).update(revoked_at=timezone.now())
    assert user_get_by_access_token(token=tokens.access) is None

    ApiToken.objects.update(revoked_at=None, expires_at=timezone.now() - timedelta(seconds=1))
    assert user_get_by_access_token(token=tokens.access) is None


@pytest.mark.django_db
def test_absurdly_long_token_is_refused_without_a_query(django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(0):
        assert user_get_by_access_token(token="x" * 10_000) is None


@pytest.mark.django_db
def test_profile_get_creates_a_missing_profile_once() -> None:
    user = User.objects.create_user("kim")

    first = profile_get(user=user)
    second = profile_get(user=User.objects.get(pk=user.pk))

    assert first.pk == second.pk
    assert first.display_name == "kim"
    assert Profile.objects.filter(user=user).count() == 1


@pytest.mark.parametrize(
    ("avatar_allows", "adult", "opted_in", "expected"),
    [
        (True, True, True, None),
        (False, True, True, "avatar_disallows"),
        (False, False, False, "avatar_disallows"),
        (True, False, False, "adult_required"),
        (True, False, True, "adult_required"),
        (True, True, False, "opt_in_required"),
    ],
)
def test_intimate_block_reason(avatar_allows: bool, adult: bool, opted_in: bool, expected: str | None) -> None:
    profile = Profile(adult_confirmed_at=timezone.now() if adult else None, intimate_opt_in=opted_in)

    assert intimate_block_reason(profile=profile, avatar_allows=avatar_allows) == expected
