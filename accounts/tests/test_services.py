"""Writes called directly, where the API does not reach: seed data, cleanup, edge cases."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from accounts.errors import RefreshTokenReused, UsernameTaken
from accounts.models import ApiToken, Profile
from accounts.services import (
    api_token_delete_expired,
    api_token_families_revoke,
    token_family_revoke,
    token_pair_create,
    token_pair_refresh,
    user_register,
)
from core.errors import InvalidInput

pytestmark = pytest.mark.django_db


def test_user_register_without_an_address_is_not_throttled(settings) -> None:
    settings.REGISTER_THROTTLE_PER_IP = 0

    user = user_register(username="Demo", password="plum-orbit-velvet-42")

    assert (user.username, user.profile.display_name) == ("demo", "Demo")


def test_user_register_validates_like_the_api() -> None:
    with pytest.raises(InvalidInput) as raised:
        user_register(username="no spaces", password="plum-orbit-velvet-42")
    assert raised.value.field == "username"

    user_register(username="sam", password="plum-orbit-velvet-42")
    with pytest.raises(UsernameTaken):
        user_register(username="SAM", password="plum-orbit-velvet-42")
    assert User.objects.count() == Profile.objects.count() == 1


def test_refresh_reuse_revokes_the_family(user) -> None:
    first = token_pair_create(user=user)
    second = token_pair_refresh(refresh=first.refresh)

    with pytest.raises(RefreshTokenReused):
        token_pair_refresh(refresh=first.refresh)

    # the revocation outlives the error: it was not rolled back
    assert ApiToken.objects.filter(revoked_at__isnull=True).count() == 0
    assert not token_family_revoke(refresh="unknown")
    assert token_family_revoke(refresh=second.refresh)


def test_api_token_families_revoke_counts_live_tokens(user, other_user) -> None:
    mine = token_pair_create(user=user)
    token_pair_refresh(refresh=mine.refresh)  # 1 revoked + 3 live in this family
    theirs = token_pair_create(user=other_user)
    family = ApiToken.objects.filter(user=user).values_list("family", flat=True).first()
    assert family is not None

    revoked = api_token_families_revoke(families=[family])

    assert revoked == 3
    assert ApiToken.objects.filter(user=other_user, revoked_at__isnull=True).count() == 2
    assert theirs.access


def test_api_token_delete_expired_keeps_live_and_revoked_but_unexpired_tokens(user) -> None:
    # given an expired pair, a revoked but unexpired pair, and a live pair
    now = timezone.now()
    expired = token_pair_create(user=user)
    ApiToken.objects.update(expires_at=now - timedelta(seconds=1))
    revoked = token_pair_create(user=user)
    token_family_revoke(refresh=revoked.refresh)
    token_pair_create(user=user)

    # when cleaning up
    deleted = api_token_delete_expired(now=now)

    # then only the expired pair is gone; the revoked one still detects reuse
    assert deleted == 2
    assert ApiToken.objects.count() == 4
    assert not ApiToken.objects.filter(expires_at__lte=now).exists()
    with pytest.raises(RefreshTokenReused):
        token_pair_refresh(refresh=revoked.refresh)
    assert expired.access
