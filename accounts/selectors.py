"""Reads of accounts: who a token belongs to, a user's profile, whether intimate mode is allowed."""

import uuid
from typing import Literal

from django.contrib.auth.models import User
from django.utils import timezone

from accounts.models import ApiToken, Profile, TokenKind
from accounts.tokens import token_hash
from accounts.validators import TOKEN_MAX_LENGTH

IntimateBlockReason = Literal["avatar_disallows", "adult_required", "opt_in_required"]


def user_get_by_access_token(*, token: str) -> User | None:
    """The active user an access token belongs to, or None if it is unknown, expired or revoked."""
    api_token = access_token_get(token=token)
    return api_token.user if api_token is not None else None


def access_token_get(*, token: str) -> ApiToken | None:
    """The live access token (its user and family), or None if it is unknown, expired or revoked.

    One query; the user's profile comes with it, so `profile_get` needs none.
    """
    if not token or len(token) > TOKEN_MAX_LENGTH:
        return None
    return (
        ApiToken.objects.select_related("user__profile")
        .filter(
            token_hash=token_hash(token),
            kind=TokenKind.ACCESS,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
            user__is_active=True,
        )
        .first()
    )


def token_family_is_live(*, family: uuid.UUID) -> bool:
    """Whether any token of the family is still unrevoked (a session not logged out)."""
    return ApiToken.objects.filter(family=family, revoked_at__isnull=True).exists()


def token_family_group_name(family: uuid.UUID) -> str:
    """The channel-layer group of the sockets a session opened: told when the session ends."""
    return f"auth.family.{family.hex}"


def user_group_name(user_id: int) -> str:
    """The channel-layer group of every socket of a user: told when all their sessions end (a password change)."""
    return f"auth.user.{int(user_id)}"


def profile_get(*, user: User) -> Profile:
    """The user's profile, created on first use for users made outside the API (the admin, scripts)."""
    try:
        return user.profile
    except Profile.DoesNotExist:
        profile, _ = Profile.objects.get_or_create(user=user, defaults={"display_name": user.username})
        user.profile = profile
        return profile


def profile_zone_name_get(*, user_id: int) -> str:
    """The user's IANA time zone name ("UTC" for a user without a profile yet): one query."""
    return Profile.objects.filter(user_id=user_id).values_list("timezone", flat=True).first() or "UTC"


def intimate_block_reason(*, profile: Profile, avatar_allows: bool) -> IntimateBlockReason | None:
    """Why intimate mode is not allowed for this user with this avatar, or None if it is.

    Checked in this order, the first that applies is returned: the avatar does not allow it
    (`avatar_disallows`), the user has not confirmed being an adult (`adult_required`), the
    user has not opted in (`opt_in_required`).
    """
    if not avatar_allows:
        return "avatar_disallows"
    if not profile.adult_confirmed:
        return "adult_required"
    if not profile.intimate_opt_in:
        return "opt_in_required"
    return None
