"""What can stop a picture, each with a code a client can switch on and a sentence a person can read.

`ImageRefused` is terminal and never retried: our own pre-check said no before any call, or
the provider's content policy did. `ImageFailed` is anything else; `retryable` says whether
one more attempt may help (a timeout, a 429, a 5xx), which the task makes once.
"""

from typing import ClassVar

from core.errors import DomainError


class ImageRefused(DomainError):
    code = "image_refused"
    status_code = 422

    def __init__(self, message: str, *, reason: str = "policy", field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.reason = reason  # "policy" (ours, no call made) or "provider" (their content policy)


class ImageFailed(Exception):
    code: ClassVar[str] = "image_failed"
    user_message: ClassVar[str] = "The picture could not be made."

    def __init__(self, detail: str = "", *, retryable: bool = False, code: str | None = None) -> None:
        super().__init__(detail or self.user_message)
        self.detail = detail
        self.retryable = retryable
        self.error_code = code or self.code


class ImageInvalid(ImageFailed):
    """What the provider sent is not a picture we accept (not an image, too large, unsafe SVG)."""

    code = "image_invalid"
    user_message = "The picture the provider sent could not be read."
