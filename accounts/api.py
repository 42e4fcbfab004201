"""Accounts endpoints: register, log in, refresh, log out, and the signed-in user's profile."""

from datetime import time

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse
from ninja import Router, Status

from accounts.auth import request_user
from accounts.erasure import user_erase
from accounts.export import chunks_async, export_filename, user_export_chunks
from accounts.models import Profile
from accounts.schemas import (
    AccountEraseIn,
    ErrorOut,
    PasswordChangeIn,
    ProfileOut,
    ProfilePatchIn,
    RefreshIn,
    RegisterIn,
    TokenIn,
    TokenPairOut,
    UserOut,
)
from accounts.selectors import profile_get
from accounts.services import (
    UNSET,
    TokenPair,
    Unset,
    profile_update,
    token_family_revoke,
    token_pair_issue,
    token_pair_refresh,
    user_password_change,
    user_register,
)
from accounts.throttling import client_ip

router = Router(tags=["accounts"])


@router.post(
    "/auth/register",
    auth=None,
    response={201: UserOut, 409: ErrorOut, 422: ErrorOut, 429: ErrorOut},
)
def register(request: HttpRequest, payload: RegisterIn) -> Status[Profile]:
    """Create an account. 409 `username_taken` if the username exists in any case; 429 past
    the per-address limit of registrations per hour."""
    user = user_register(
        username=payload.username,
        password=payload.password,
        display_name=payload.display_name or "",
        ip=client_ip(request),
    )
    return Status(201, profile_get(user=user))


@router.post("/auth/token", auth=None, response={200: TokenPairOut, 401: ErrorOut, 422: ErrorOut, 429: ErrorOut})
def token_obtain(request: HttpRequest, payload: TokenIn) -> Status[TokenPair]:
    """Log in. 401 `invalid_credentials` for any wrong username, password or disabled account;
    429 with `Retry-After` after too many failures for this username or from this address."""
    return Status(200, token_pair_issue(username=payload.username, password=payload.password, ip=client_ip(request)))


@router.post("/auth/refresh", auth=None, response={200: TokenPairOut, 401: ErrorOut, 422: ErrorOut})
def token_refresh(request: HttpRequest, payload: RefreshIn) -> Status[TokenPair]:
    """Trade a refresh token for a new pair; the old refresh token stops working. Reusing a
    spent refresh token signs out its whole session (401 `refresh_token_reused`)."""
    return Status(200, token_pair_refresh(refresh=payload.refresh))


@router.post("/auth/logout", auth=None, response={204: None, 422: ErrorOut})
def logout(request: HttpRequest, payload: RefreshIn) -> Status[None]:
    """Revoke the refresh token and every access token issued with it, at once.

    Needs no access token: holding the refresh token is proof enough, and a client whose
    access token has expired must still be able to log out. Always 204, also for an unknown
    or already revoked token, so the answer reveals nothing about tokens.
    """
    token_family_revoke(refresh=payload.refresh)
    return Status(204, None)


@router.post("/auth/password", response={200: TokenPairOut, 422: ErrorOut, 429: ErrorOut})
def password_change(request: HttpRequest, payload: PasswordChangeIn) -> Status[TokenPair]:
    """Change the password. Every session of the user ends, this one included: their tokens stop
    working, their sockets close with 4401, their unused tickets are void. The answer is a new
    pair for this device. 422 `invalid` on `old_password` (wrong) or `new_password` (too weak);
    429 after too many wrong current passwords, as for sign-in."""
    pair = user_password_change(
        user=request_user(request),
        old_password=payload.old_password,
        new_password=payload.new_password,
        ip=client_ip(request),
    )
    return Status(200, pair)


@router.get("/me", response={200: ProfileOut})
def me_get(request: HttpRequest) -> Profile:
    """The signed-in user's profile."""
    return profile_get(user=request_user(request))


@router.patch("/me", response={200: ProfileOut, 422: ErrorOut})
def me_update(request: HttpRequest, payload: ProfilePatchIn) -> Status[Profile]:
    """Change the signed-in user's display name, adult confirmation, intimate-mode opt-in, locale,
    time zone (an IANA name; unknown: 422), quiet hours (`null` turns them off), proactive opt-in
    or whether avatars share what they recall (`recall_across_avatars`, off by default)."""
    profile = profile_update(
        profile=profile_get(user=request_user(request)),
        display_name=payload.display_name,
        adult_confirmed=payload.adult_confirmed,
        intimate_opt_in=payload.intimate_opt_in,
        locale=payload.locale,
        timezone_name=payload.timezone,
        quiet_hours=_quiet_hours(payload),
        proactive_opt_in=payload.proactive_opt_in,
        recall_across_avatars=payload.recall_across_avatars,
    )
    return Status(200, profile)


def _quiet_hours(payload: ProfilePatchIn) -> tuple[time, time] | Unset | None:
    if "quiet_hours" not in payload.model_fields_set:
        return UNSET
    if payload.quiet_hours is None:
        return None
    return time.fromisoformat(payload.quiet_hours.start), time.fromisoformat(payload.quiet_hours.end)


@router.get("/me/export", response={200: dict[str, object]})
def me_export(request: HttpRequest) -> StreamingHttpResponse:
    """Everything stored about the signed-in user, as one JSON document to download
    (`docs/export.schema.json`). Streamed: the size of the account does not matter."""
    user = request_user(request)
    chunks = user_export_chunks(user=user)
    # Under ASGI a synchronous iterator would be read whole before the first byte went out.
    content = chunks_async(chunks) if isinstance(request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{export_filename(user=user)}"'
    response["Cache-Control"] = "no-store"
    return response


@router.delete("/me", response={204: None, 403: ErrorOut, 422: ErrorOut, 429: ErrorOut})
def me_erase(request: HttpRequest, payload: AccountEraseIn) -> Status[None]:
    """Erase the account and everything stored about it, at once and for good (docs/operations.md).

    403 `wrong_password` when `password` is not the account's (nothing is erased); attempts count
    like sign-ins (429 with `Retry-After`). Every token stops working and every open socket
    closes (4401).
    """
    user_erase(user=request_user(request), password=payload.password, ip=client_ip(request))
    return Status(204, None)
