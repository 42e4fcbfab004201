"""What the accounts endpoints read and write."""

from datetime import datetime
from typing import Annotated
from zoneinfo import available_timezones

from ninja import Schema
from pydantic import Field, JsonValue, StrictBool, StringConstraints, field_validator
from pydantic.json_schema import SkipJsonSchema

from accounts.models import Profile
from core.api import ErrorOut

__all__ = ["ErrorOut"]  # the one error shape, kept importable from here for the endpoints that already do
from accounts.validators import (
    DISPLAY_NAME_MAX_LENGTH,
    LOGIN_PASSWORD_MAX_LENGTH,
    LOGIN_USERNAME_MAX_LENGTH,
    PASSWORD_MAX_LENGTH,
    TOKEN_MAX_LENGTH,
    USERNAME_MAX_LENGTH,
    USERNAME_MIN_LENGTH,
    USERNAME_PATTERN,
)

NewUsername = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=USERNAME_MIN_LENGTH, max_length=USERNAME_MAX_LENGTH, pattern=USERNAME_PATTERN
    ),
]
DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=DISPLAY_NAME_MAX_LENGTH)]
Token = Annotated[str, StringConstraints(min_length=1, max_length=TOKEN_MAX_LENGTH)]


class RegisterIn(Schema):
    """A new account.

    `username`: 3 to 40 characters, ASCII letters, digits, `.`, `_` and `-`; unique whatever
    the case, and stored in lower case. `password`: at most 128 characters, and must pass the
    server's password rules (length, not common, not all digits, not like the username).
    `display_name`: at most 80 characters; defaults to the username as typed.
    """

    username: NewUsername
    password: Annotated[str, StringConstraints(min_length=1, max_length=PASSWORD_MAX_LENGTH)]
    display_name: DisplayName | None = None


class UserOut(Schema):
    id: int
    username: str
    display_name: str

    @staticmethod
    def resolve_id(obj: Profile) -> int:
        return obj.user_id

    @staticmethod
    def resolve_username(obj: Profile) -> str:
        return obj.user.username


class TokenIn(Schema):
    username: Annotated[str, StringConstraints(min_length=1, max_length=LOGIN_USERNAME_MAX_LENGTH)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=LOGIN_PASSWORD_MAX_LENGTH)]


class TokenPairOut(Schema):
    access: str
    refresh: str
    expires_in: int = Field(description="Seconds until the access token expires.")


class PasswordChangeIn(Schema):
    """`old_password`: the current one. `new_password`: at most 128 characters, and must pass the
    same rules as at registration (length, not common, not all digits, not like the username)."""

    old_password: Annotated[str, StringConstraints(min_length=1, max_length=PASSWORD_MAX_LENGTH)]
    new_password: Annotated[str, StringConstraints(min_length=1, max_length=PASSWORD_MAX_LENGTH)]


class RefreshIn(Schema):
    refresh: Token


class AccountEraseIn(Schema):
    """The account's password, asked again: erasing cannot be undone."""

    password: Annotated[str, StringConstraints(min_length=1, max_length=LOGIN_PASSWORD_MAX_LENGTH)]


class QuietHours(Schema):
    """A local-time window, `HH:MM` each; `start` after `end` spans midnight (`22:00` to `08:00`)."""

    start: Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
    end: Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class ProfileOut(Schema):
    """The signed-in user's profile. `id` is the user's id, `created_at` when the account was made."""

    id: int
    username: str
    display_name: str
    adult_confirmed: bool
    intimate_opt_in: bool
    locale: str
    timezone: str = Field(description="IANA zone: reminders and quiet hours are read in it.")
    quiet_hours: QuietHours | None = Field(description="No message the user did not ask for in this local window.")
    proactive_opt_in: bool = Field(description="Avatars may write first after a silence.")
    recall_across_avatars: bool = Field(description="Each avatar may recall what the user told the others.")
    created_at: datetime

    @staticmethod
    def resolve_id(obj: Profile) -> int:
        return obj.user_id

    @staticmethod
    def resolve_username(obj: Profile) -> str:
        return obj.user.username

    @staticmethod
    def resolve_created_at(obj: Profile) -> datetime:
        return obj.user.date_joined

    @staticmethod
    def resolve_quiet_hours(obj: Profile) -> dict[str, str] | None:
        if obj.quiet_hours_start is None or obj.quiet_hours_end is None:
            return None
        return {"start": obj.quiet_hours_start.strftime("%H:%M"), "end": obj.quiet_hours_end.strftime("%H:%M")}


class ProfilePatchIn(Schema):
    """Fields to change; leave out what stays. `null` is refused: leave the field out instead.

    `intimate_opt_in: true` needs adult confirmation, already given or in the same request
    (`adult_confirmed: true`), else 422 `adult_confirmation_required`. `adult_confirmed: false`
    withdraws it and turns `intimate_opt_in` off.
    """

    display_name: Annotated[DisplayName, StringConstraints(min_length=1)] | SkipJsonSchema[None] = None
    adult_confirmed: StrictBool | SkipJsonSchema[None] = None
    intimate_opt_in: StrictBool | SkipJsonSchema[None] = None
    # A country code: it picks the crisis lines.
    locale: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$")] | SkipJsonSchema[None] = None
    # The schema lists the IANA names this server knows; another is a 422.
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] | SkipJsonSchema[None] = Field(
        None, json_schema_extra={"enum": list[JsonValue](sorted(available_timezones()))}
    )
    quiet_hours: QuietHours | None = None  # null turns quiet hours off
    proactive_opt_in: StrictBool | SkipJsonSchema[None] = None
    recall_across_avatars: StrictBool | SkipJsonSchema[None] = None

    @field_validator(
        "display_name",
        "adult_confirmed",
        "intimate_opt_in",
        "locale",
        "timezone",
        "proactive_opt_in",
        "recall_across_avatars",
    )
    @classmethod
    def _refuse_null(cls, value: object) -> object:
        # Runs only for fields the client sent (defaults are not validated), so it sees explicit nulls.
        if value is None:
            raise ValueError("may be left out, but not null")
        return value
