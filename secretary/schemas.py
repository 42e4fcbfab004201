"""What the reminders and tasks endpoints read and write."""

from datetime import datetime
from typing import Annotated, Literal

from ninja import Field, Schema
from pydantic import StrictBool, StringConstraints

from secretary.services import REMINDER_TEXT_MAX, TASK_NOTES_MAX, TASK_TITLE_MAX

# The shape of a wall-clock time, so a client (and the schema) sees it; the date itself is checked by the service.
LOCAL_TIME_PATTERN = r"^[1-9]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$"
LocalTime = Annotated[str, StringConstraints(min_length=10, max_length=32, pattern=LOCAL_TIME_PATTERN)]
RecurrenceIn = Literal["", "none", "daily", "weekdays", "weekly"]


class ReminderOut(Schema):
    id: int
    conversation_id: int
    text: str
    due_at: datetime = Field(description="When it falls due (next), ISO 8601 with the reminder zone's UTC offset.")
    timezone: str
    recurrence: str = Field(description='"" (once), "daily", "weekdays" or "weekly".')
    status: str = Field(description='"pending", "sent" or "cancelled".')
    created_at: datetime
    source_message_id: int | None
    sent_count: int
    last_sent_at: datetime | None


class ReminderIn(Schema):
    """A new reminder. Give `due_local` (your wall-clock time, `2026-12-24T09:00`, read in your
    profile's time zone) or `due_at` (ISO 8601 with an offset). 422 for a time in the past,
    one that a DST change skips or repeats (codes `time_in_past`, `nonexistent_time`,
    `ambiguous_time`), or more than two years ahead; 409 `limit_reached` past the per-user limit."""

    conversation_id: int = Field(ge=1, le=2**63 - 1)
    text: Annotated[str, StringConstraints(min_length=1, max_length=REMINDER_TEXT_MAX)]
    due_at: datetime | None = None
    due_local: LocalTime | None = None
    recurrence: RecurrenceIn | None = None


class ReminderPatchIn(Schema):
    """Change a pending reminder, or cancel it with `{"status": "cancelled"}`; 409 `not_pending` otherwise."""

    text: Annotated[str, StringConstraints(min_length=1, max_length=REMINDER_TEXT_MAX)] | None = None
    due_at: datetime | None = None
    due_local: LocalTime | None = None
    recurrence: RecurrenceIn | None = None
    status: Literal["cancelled"] | None = None


class ReminderListQuery(Schema):
    status: Literal["pending", "sent", "cancelled"] | None = None


class TaskOut(Schema):
    id: int
    title: str
    notes: str
    due_at: datetime | None
    done: bool
    done_at: datetime | None
    created_at: datetime


class TaskIn(Schema):
    title: Annotated[str, StringConstraints(min_length=1, max_length=TASK_TITLE_MAX)]
    notes: Annotated[str, StringConstraints(max_length=TASK_NOTES_MAX)] = ""
    due_local: LocalTime | None = None


class TaskPatchIn(Schema):
    title: Annotated[str, StringConstraints(min_length=1, max_length=TASK_TITLE_MAX)] | None = None
    notes: Annotated[str, StringConstraints(max_length=TASK_NOTES_MAX)] | None = None
    due_local: LocalTime | None = None
    done: StrictBool | None = None


class TaskListQuery(Schema):
    done: bool | None = None  # a query string: "true" / "false"
