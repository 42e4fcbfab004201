"""Domain errors of accounts, each with the stable code clients switch on."""

from core.errors import AuthenticationFailed, Conflict, Forbidden, InvalidInput


class UsernameTaken(Conflict):
    code = "username_taken"


class InvalidCredentials(AuthenticationFailed):
    code = "invalid_credentials"


class InvalidToken(AuthenticationFailed):
    code = "invalid_token"


class RefreshTokenReused(AuthenticationFailed):
    code = "refresh_token_reused"


class AdultConfirmationRequired(InvalidInput):
    code = "adult_confirmation_required"


class WrongPassword(Forbidden):
    """The password that confirms a destructive request (erasing the account) is not the user's.

    403, not 401: the access token is fine, and a 401 would send clients to refresh it."""

    code = "wrong_password"
