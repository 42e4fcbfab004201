"""Domain errors of accounts, each with the stable code clients switch on."""

from core.errors import AuthenticationFailed, Conflict, InvalidInput


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
