"""Domain errors: raised by services, translated at each edge (HTTP, socket, CLI) in one place."""

from typing import ClassVar


class DomainError(Exception):
    """An error a client can cause or must be told about, with a stable code."""

    code: ClassVar[str] = "error"
    status_code: ClassVar[int] = 400
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def as_dict(self) -> dict[str, object]:
        return {"detail": self.message, "code": self.code, "field": self.field}


class InvalidInput(DomainError):
    code = "invalid"
    status_code = 422


class NotFound(DomainError):
    code = "not_found"
    status_code = 404


class AuthenticationFailed(DomainError):
    code = "unauthorized"
    status_code = 401


class Forbidden(DomainError):
    code = "forbidden"
    status_code = 403


class Conflict(DomainError):
    code = "conflict"
    status_code = 409


class PayloadTooLarge(DomainError):
    code = "too_large"
    status_code = 413


class Throttled(DomainError):
    code = "throttled"
    status_code = 429
    retryable = True

    def __init__(self, message: str, *, retry_after: int, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """A backing service (Redis: the cache, the channel layer, the broker) does not answer; try again."""

    code = "unavailable"
    status_code = 503
    retryable = True
    retry_after = 5  # seconds, the Retry-After header

    def as_dict(self) -> dict[str, object]:
        return {**super().as_dict(), "retryable": True}
