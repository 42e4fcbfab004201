"""Bearer authentication for the API: opaque access tokens, looked up by their hash."""

from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer


class BearerAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        from accounts.services import user_get_by_access_token

        user = user_get_by_access_token(token=token)
        if user is None:
            return None
        request.user = user
        return user
