"""Writes of accounts: registration, token pairs (issue, rotate, revoke) and profile changes."""

import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import password_validation
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.errors import (
    AdultConfirmationRequired,
    InvalidCredentials,
    InvalidToken,
    RefreshTokenReused,
    UsernameTaken,
)
from accounts.models import ApiToken, Profile, TokenKind
from accounts.selectors import token_family_group_name, user_group_name
from accounts.throttling import login_throttle_forgive, login_throttle_hit, register_throttle_hit
from accounts.tokens import token_generate, token_hash
from accounts.validators import PASSWORD_MAX_LENGTH, TOKEN_MAX_LENGTH, display_name_clean, username_clean
from core.errors import InvalidInput
from core.timezones import zone_get

logger = logging.getLogger("companion.accounts")

_INVALID_CREDENTIALS = "Invalid username or password."


class Unset:
    """A field left out of an update, where None is a value of its own (quiet hours off)."""


UNSET = Unset()
_INVALID_REFRESH = "The refresh token is invalid or expired. Sign in again."


@dataclass(frozen=True)
class TokenPair:
    access: str
    refresh: str
    expires_in: int
    """Seconds the access token stays valid."""


def _password_validate(*, password: str, username: str) -> None:
    if len(password) > PASSWORD_MAX_LENGTH:
        raise InvalidInput(f"Password must be at most {PASSWORD_MAX_LENGTH} characters long.", field="password")
    try:
        password_validation.validate_password(password, user=User(username=username))
    except ValidationError as exc:
        raise InvalidInput(" ".join(exc.messages), field="password") from exc


def user_register(*, username: str, password: str, display_name: str = "", ip: str | None = None) -> User:
    """Create an active user and their profile, in one transaction.

    - username: 3 to 40 characters, ASCII letters, digits, `.`, `_` and `-`; stored in lower
      case, so it is unique regardless of case (`UsernameTaken`, 409).
    - password: must pass `AUTH_PASSWORD_VALIDATORS`; at most 128 characters.
    - display_name: at most 80 characters, no control characters; defaults to the username
      as typed.
    - ip: the client's address, counted against `REGISTER_THROTTLE_PER_IP` per hour (every
      attempt counts); None (scripts, seed data) is not throttled.

    Raises `InvalidInput` naming the field, `UsernameTaken` or `Throttled`.
    """
    if ip is not None:
        register_throttle_hit(ip=ip)
    canonical_username = username_clean(username)
    display_name = display_name_clean(display_name) or username.strip()
    _password_validate(password=password, username=canonical_username)
    # Also catches mixed-case names made in the admin, which the unique index cannot see.
    if User.objects.filter(username__iexact=canonical_username).exists():
        raise UsernameTaken("This username is taken.", field="username")

    user = User(username=canonical_username)
    # Hashed before the transaction: it is slow on purpose and must not hold the write lock.
    user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
            Profile.objects.create(user=user, display_name=display_name)
    except IntegrityError as exc:
        # Another request registered the same name between the check and the insert.
        raise UsernameTaken("This username is taken.", field="username") from exc
    return user


def _user_authenticate(*, username: str, password: str) -> User | None:
    candidates = list(User.objects.filter(username__iexact=username.strip())[:2])
    if len(candidates) > 1:
        # Names differing only in case can exist when made in the admin: only an exact match is unambiguous.
        candidates = [user for user in candidates if user.username == username.strip()]
    if len(candidates) != 1:
        # Hash anyway, so the answer takes as long as for a known username (Django's ModelBackend does the same).
        User().set_password(password)
        return None
    user = candidates[0]
    if not user.check_password(password) or not user.is_active:
        return None
    return user


def token_pair_create(*, user: User, family: uuid.UUID | None = None) -> TokenPair:
    """Store a new access and refresh token for the user (no password check) and return them.

    Both share `family`, a new one unless given (a refresh continues its family).
    """
    access, refresh = token_generate(), token_generate()
    family = family or uuid.uuid4()
    now = timezone.now()
    ApiToken.objects.bulk_create(
        [
            ApiToken(
                user=user,
                kind=TokenKind.ACCESS,
                token_hash=token_hash(access),
                family=family,
                expires_at=now + timedelta(seconds=settings.ACCESS_TOKEN_TTL_SECONDS),
            ),
            ApiToken(
                user=user,
                kind=TokenKind.REFRESH,
                token_hash=token_hash(refresh),
                family=family,
                expires_at=now + timedelta(seconds=settings.REFRESH_TOKEN_TTL_SECONDS),
            ),
        ]
    )
    return TokenPair(access=access, refresh=refresh, expires_in=settings.ACCESS_TOKEN_TTL_SECONDS)


def token_pair_issue(*, username: str, password: str, ip: str | None = None) -> TokenPair:
    """Log in: check the credentials and return a new token pair (a new family).

    The username is matched regardless of case. Failed attempts are counted per username and
    per `ip` (see `accounts.throttling.login_throttle_hit`); once either is spent the attempt
    is refused with `Throttled` before the password is looked at, even a right one.
    A wrong password, an unknown username and an inactive user all raise the same
    `InvalidCredentials`, so the answer does not tell which usernames exist.
    """
    login_throttle_hit(username=username, ip=ip)
    user = _user_authenticate(username=username, password=password)
    if user is None:
        raise InvalidCredentials(_INVALID_CREDENTIALS)
    login_throttle_forgive(username=username, ip=ip)
    pair = token_pair_create(user=user)
    User.objects.filter(pk=user.pk).update(last_login=timezone.now())
    return pair


def _family_revoke(*, family: uuid.UUID, now: datetime) -> int:
    revoked = ApiToken.objects.filter(family=family, revoked_at__isnull=True).update(revoked_at=now)
    transaction.on_commit(lambda: token_family_sockets_close(families=[family]))
    return revoked


def token_family_sockets_close(*, families: Collection[uuid.UUID]) -> None:
    """Close the websockets these sessions opened (they end with 4401), in every server process.

    A channel layer that is down loses only this: the sockets' tickets are void already and
    their next handshake is refused.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    for family in families:
        try:
            async_to_sync(layer.group_send)(token_family_group_name(family), {"type": "auth.revoked"})
        except Exception:
            logger.warning("could not tell a session's sockets that it ended", exc_info=True)


def token_pair_refresh(*, refresh: str) -> TokenPair:
    """Rotate a refresh token: revoke it and return a new pair in the same family.

    A refresh token works once. Presenting one that was already rotated (or logged out) means
    two parties hold it, one of them probably a thief: the whole family is revoked, including
    the pair the first use produced, and `RefreshTokenReused` is raised; the user must sign in
    again. Unknown or expired tokens, or an inactive user, raise `InvalidToken`.
    """
    if not refresh or len(refresh) > TOKEN_MAX_LENGTH:
        raise InvalidToken(_INVALID_REFRESH)
    api_token = (
        ApiToken.objects.select_related("user").filter(token_hash=token_hash(refresh), kind=TokenKind.REFRESH).first()
    )
    now = timezone.now()
    if api_token is None:
        raise InvalidToken(_INVALID_REFRESH)
    if api_token.revoked_at is not None:
        _family_revoke(family=api_token.family, now=now)
        raise RefreshTokenReused("This refresh token was already used; every session it started is now signed out.")
    if api_token.expires_at <= now or not api_token.user.is_active:
        raise InvalidToken(_INVALID_REFRESH)

    with transaction.atomic():
        # The conditional update is the claim: of two concurrent uses exactly one revokes the token.
        claimed = ApiToken.objects.filter(pk=api_token.pk, revoked_at__isnull=True).update(revoked_at=now)
        if claimed:
            return token_pair_create(user=api_token.user, family=api_token.family)
    # Lost the race to another use of the same token: that is reuse too. Outside the atomic
    # block, so raising does not roll the revocation back.
    _family_revoke(family=api_token.family, now=now)
    raise RefreshTokenReused("This refresh token was already used; every session it started is now signed out.")


def token_family_revoke(*, refresh: str) -> bool:
    """Log out: revoke the refresh token and every token of its family, at once.

    Works with an expired or already rotated refresh token too. Returns whether the token was
    known; the API answers the same either way.
    """
    if not refresh or len(refresh) > TOKEN_MAX_LENGTH:
        return False
    family = (
        ApiToken.objects.filter(token_hash=token_hash(refresh), kind=TokenKind.REFRESH)
        .values_list("family", flat=True)
        .first()
    )
    if family is None:
        return False
    _family_revoke(family=family, now=timezone.now())
    return True


def api_token_families_revoke(*, families: Collection[uuid.UUID]) -> int:
    """Revoke every token of these families (the admin's "revoke" action); returns how many were live."""
    revoked = ApiToken.objects.filter(family__in=families, revoked_at__isnull=True).update(revoked_at=timezone.now())
    chosen = list(families)
    transaction.on_commit(lambda: token_family_sockets_close(families=chosen))
    return revoked


def user_password_change(*, user: User, old_password: str, new_password: str, ip: str | None = None) -> TokenPair:
    """Change the user's password, end every session of theirs, and return a new pair for the caller.

    Every token family of the user is revoked, the caller's included, and every socket of
    the user closes with 4401 (`user_sessions_end`): whoever held a token or a ticket minted
    before the change is out. The caller, who proved the old password, gets the pair of a
    new session, so the device that made the change stays signed in.

    A wrong `old_password` is an `InvalidInput` on that field and counts as a failed login
    for the username and `ip` (so a stolen access token cannot be used to guess it); the new
    one must pass the registration rules (`InvalidInput`, field `new_password`).
    """
    login_throttle_hit(username=user.username, ip=ip)
    if not user.check_password(old_password):
        raise InvalidInput("The current password is not right.", field="old_password")
    login_throttle_forgive(username=user.username, ip=ip)
    try:
        _password_validate(password=new_password, username=user.username)
    except InvalidInput as exc:
        raise InvalidInput(exc.message, field="new_password") from exc
    # Hashed before the transaction: it is slow on purpose and must not hold the write lock.
    user.set_password(new_password)
    with transaction.atomic():
        user.save(update_fields=["password"])
        user_sessions_end(user=user)
        return token_pair_create(user=user)


def user_sessions_end(*, user: User) -> int:
    """Revoke every token of the user and close every socket of theirs (4401), in every process.

    Their tickets not yet used die with their families. Called by a password change, here
    and in the admin. Returns how many tokens were live.
    """
    revoked = ApiToken.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=timezone.now())
    user_id = user.pk
    transaction.on_commit(lambda: user_sockets_close(user_id=user_id))
    return revoked


def user_sockets_close(*, user_id: int) -> None:
    """Close every websocket of the user (4401), in every server process; best effort, as for a session."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(user_group_name(user_id), {"type": "auth.revoked"})
    except Exception:
        logger.warning("could not tell a user's sockets that their sessions ended", exc_info=True)


def api_token_delete_expired(*, now: datetime | None = None) -> int:
    """Delete tokens past their expiry; returns how many. Meant to run periodically.

    Revoked tokens that have not expired are kept on purpose: a rotated refresh token must stay
    recognisable until it expires, so that its reuse can still be detected.
    """
    deleted, _ = ApiToken.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted


def profile_update(
    *,
    profile: Profile,
    display_name: str | None = None,
    adult_confirmed: bool | None = None,
    intimate_opt_in: bool | None = None,
    locale: str | None = None,
    timezone_name: str | None = None,
    quiet_hours: tuple[time, time] | Unset | None = UNSET,
    proactive_opt_in: bool | None = None,
    recall_across_avatars: bool | None = None,
) -> Profile:
    """Change the given fields of a profile (None leaves a field as it is) and return it fresh.

    - display_name: 1 to 80 characters after stripping, no control characters.
    - adult_confirmed: true records when the user confirmed (the first time only); false
      withdraws the confirmation and also turns `intimate_opt_in` off.
    - intimate_opt_in: true requires adult confirmation, already given or given in the same
      call, else `AdultConfirmationRequired` (422, field `intimate_opt_in`) and nothing changes.
    - locale: a two-letter country code, stored upper case; which crisis lines the user is shown.
    - timezone_name: an IANA zone (`InvalidInput`, field `timezone`, for an unknown one).
    - quiet_hours: (start, end) local times, or None to turn them off; left out (UNSET) stays.
    - proactive_opt_in: whether avatars may write first after a silence.
    - recall_across_avatars: whether each avatar may recall what the user told the others.
    """
    if timezone_name is not None:
        zone_get(timezone_name)
    if display_name is not None:
        display_name = display_name_clean(display_name)
        if not display_name:
            raise InvalidInput("Display name may not be empty.", field="display_name")

    with transaction.atomic():
        # Locked, so that a concurrent withdrawal of adult confirmation cannot interleave with an opt-in.
        profile = Profile.objects.select_for_update().select_related("user").get(pk=profile.pk)
        adult_after = profile.adult_confirmed if adult_confirmed is None else adult_confirmed
        if intimate_opt_in and not adult_after:
            raise AdultConfirmationRequired(
                "Confirm that you are an adult (adult_confirmed) to opt in to intimate mode.", field="intimate_opt_in"
            )

        update_fields = ["updated_at"]
        if display_name is not None:
            profile.display_name = display_name
            update_fields.append("display_name")
        if adult_confirmed is True and profile.adult_confirmed_at is None:
            profile.adult_confirmed_at = timezone.now()
            update_fields.append("adult_confirmed_at")
        if adult_confirmed is False:
            profile.adult_confirmed_at = None
            profile.intimate_opt_in = False
            update_fields += ["adult_confirmed_at", "intimate_opt_in"]
        if intimate_opt_in is not None:
            profile.intimate_opt_in = intimate_opt_in
            update_fields.append("intimate_opt_in")
        if locale is not None:
            profile.locale = locale.upper()
            update_fields.append("locale")
        if timezone_name is not None:
            profile.timezone = timezone_name
            update_fields.append("timezone")
        if not isinstance(quiet_hours, Unset):
            profile.quiet_hours_start, profile.quiet_hours_end = quiet_hours or (None, None)
            update_fields += ["quiet_hours_start", "quiet_hours_end"]
        if proactive_opt_in is not None:
            profile.proactive_opt_in = proactive_opt_in
            update_fields.append("proactive_opt_in")
        if recall_across_avatars is not None:
            profile.recall_across_avatars = recall_across_avatars
            update_fields.append("recall_across_avatars")
        profile.save(update_fields=sorted(set(update_fields)))
    return profile
