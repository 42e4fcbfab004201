"""Bearer authentication for the API: opaque access tokens, looked up by their hash."""

from typing import Any

from django.contrib.auth.models import User
from django.http import HttpRequest
from ninja.security import HttpBearer

from accounts.selectors import access_token_get
from core.errors import AuthenticationFailed


class BearerAuth(HttpBearer):
    """`Authorization: Bearer <access token>`; an unknown, expired or revoked token, or a
    disabled user, is refused (401). One query per request."""

    def __call__(self, request: HttpRequest) -> Any:
        # ninja's own parsing logs a header of another scheme ("Token ...", "Basic user:pass")
        # whole, at ERROR, when DEBUG is on: credentials in the logs. Ours refuses it silently.
        scheme, _, token = request.headers.get(self.header, "").partition(" ")
        if scheme.lower() != self.openapi_scheme or not token:
            return None
        return self.authenticate(request, token)

    def authenticate(self, request: HttpRequest, token: str) -> User | None:
        api_token = access_token_get(token=token)
        if api_token is None:
            return None
        request.user = api_token.user
        request.token_family = api_token.family  # type: ignore[attr-defined]  # the session, for socket tickets
        return api_token.user


def request_user(request: HttpRequest) -> User:
    """The user `BearerAuth` authenticated this request as, for views behind it."""
    user = getattr(request, "auth", None)
    if not isinstance(user, User):
        # Only reachable from a view declared with `auth=None` by mistake.
        raise AuthenticationFailed("Authentication credentials were not provided or are invalid.")
    return user
