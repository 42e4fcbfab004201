"""The secretary's tools: what the model may call in secretary mode, and running one call.

The six tools of CONTRACT.md ("Secretary actions"). `tool_call_run` never raises for
anything the model sent: unknown tools, arguments that are not JSON, a missing field, a time
in the past or skipped by DST all come back as a `ToolOutcome` with an error the model reads
and explains to the user. Times go in and out as the user's wall-clock time, in their zone.
"""

import json
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError
from django.utils import timezone

from accounts.selectors import profile_zone_name_get
from core.errors import DomainError
from core.timezones import zone_get
from llm.base import ToolSpec
from secretary import selectors, services
from secretary.clock import LOCAL_FORMAT, time_display
from secretary.models import Reminder, ReminderStatus, Task

ARGUMENTS_MAX_CHARS = 4000
LIST_SHOWN_MAX = 50

_DUE_LOCAL = {
    "type": "string",
    "description": "The user's own wall-clock time, YYYY-MM-DDTHH:MM (no UTC offset); it is read in their time zone.",
}

_BY_ID = {
    "type": "object",
    "properties": {"id": {"type": "integer", "description": "The id from the list."}},
    "required": ["id"],
    "additionalProperties": False,
}
_NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}

SECRETARY_TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        name="reminder_create",
        description=(
            "Set a reminder: at the given time the avatar writes to the user about it. Use it whenever the user "
            "asks to be reminded; never promise a reminder without calling it."
        ),
        parameters={
            "type": "object",
            "properties": {
                "text": {"type": "string", "description": "What to remind the user of, in a few words."},
                "due_local": _DUE_LOCAL,
                "recurrence": {
                    "type": "string",
                    "enum": ["none", "daily", "weekdays", "weekly"],
                    "description": "How it repeats; leave out for once.",
                },
            },
            "required": ["text", "due_local"],
            "additionalProperties": False,
        },
    ),
    ToolSpec(
        name="reminder_list",
        description="The user's pending reminders, soonest first, with their ids.",
        parameters=_NO_ARGUMENTS,
    ),
    ToolSpec(
        name="reminder_cancel",
        description="Cancel one pending reminder by its id (from reminder_list).",
        parameters=_BY_ID,
    ),
    ToolSpec(
        name="task_add",
        description="Add an item to the user's to-do list.",
        parameters={
            "type": "object",
            "properties": {
                "title": {"type": "string"},
                "notes": {"type": "string"},
                "due_local": _DUE_LOCAL,
            },
            "required": ["title"],
            "additionalProperties": False,
        },
    ),
    ToolSpec(
        name="task_list",
        description="The user's to-do list: open items first, with their ids.",
        parameters=_NO_ARGUMENTS,
    ),
    ToolSpec(
        name="task_complete",
        description="Tick off one to-do item by its id (from task_list).",
        parameters=_BY_ID,
    ),
)


class ToolRefused(Exception):
    """A call the model got wrong; its code and message go back to the model."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """One call's answer: `result` when it worked, else `error` ({code, message})."""

    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None

    def for_model(self) -> str:
        """The tool message's content: the result, or the error, as JSON."""
        return json.dumps(
            {"ok": True, **self.result} if self.result is not None else {"ok": False, "error": self.error}
        )


def tool_arguments_parse(raw: str) -> dict[str, Any]:
    """The arguments object of a call; `ToolRefused` for anything else."""
    if len(raw) > ARGUMENTS_MAX_CHARS:
        raise ToolRefused("invalid_arguments", f"The arguments are longer than {ARGUMENTS_MAX_CHARS} characters.")
    try:
        arguments = json.loads(raw or "{}")
    except (ValueError, RecursionError):
        raise ToolRefused("invalid_arguments", "The arguments are not valid JSON; send one JSON object.") from None
    if not isinstance(arguments, dict):
        raise ToolRefused("invalid_arguments", "The arguments must be one JSON object.")
    return arguments


def tool_call_run(
    *, user_id: int, conversation_id: int, source_message_id: int | None, name: str, arguments: dict[str, Any]
) -> ToolOutcome:
    """Run one call of the model's for this user and conversation (sync: it reads and writes the database)."""
    handler = _HANDLERS.get(name)
    if handler is None:
        return ToolOutcome(error={"code": "unknown_tool", "message": f"There is no tool named {name[:64]!r}."})
    context = _Context(user_id=user_id, conversation_id=conversation_id, source_message_id=source_message_id)
    try:
        return ToolOutcome(result=handler(context, arguments))
    except ToolRefused as refused:
        return ToolOutcome(error={"code": refused.code, "message": refused.message})
    except DomainError as refused:
        return ToolOutcome(error={"code": refused.code, "message": refused.message})
    except DatabaseError:
        return ToolOutcome(error={"code": "unavailable", "message": "The action could not be saved; try again later."})


@dataclass(frozen=True, slots=True)
class _Context:
    user_id: int
    conversation_id: int
    source_message_id: int | None


def _reminder_create(context: _Context, arguments: dict[str, Any]) -> dict[str, Any]:
    _fields_check(arguments, required=("text", "due_local"), optional=("recurrence",))
    reminder, resolved = services.reminder_create(
        user_id=context.user_id,
        conversation_id=context.conversation_id,
        text=arguments["text"],
        due_local=_string(arguments, "due_local"),
        recurrence=_string(arguments, "recurrence") if arguments.get("recurrence") is not None else None,
        source_message_id=context.source_message_id,
    )
    return {"reminder": reminder_summary(reminder), "confirmation": f"Reminder set for {resolved.display}"}


def _reminder_list(context: _Context, arguments: dict[str, Any]) -> dict[str, Any]:
    _fields_check(arguments, required=(), optional=())
    reminders = selectors.reminder_list(user_id=context.user_id, status=ReminderStatus.PENDING)
    return {"reminders": [reminder_summary(r) for r in reminders[:LIST_SHOWN_MAX]], "count": len(reminders)}


def _reminder_cancel(context: _Context, arguments: dict[str, Any]) -> dict[str, Any]:
    _fields_check(arguments, required=("id",), optional=())
    reminder = services.reminder_cancel(user_id=context.user_id, reminder_id=_id(arguments))
    return {"reminder": reminder_summary(reminder), "confirmation": f"Reminder cancelled: {reminder.text}"}


def _task_add(context: _Context, arguments: dict[str, Any]) -> dict[str, Any]:
    _fields_check(arguments, required=("title",), optional=("notes", "due_local"))
    task = services.task_add(
        user_id=context.user_id,
        title=arguments["title"],
        notes=arguments.get("notes") or "",
        due_local=_string(arguments, "due_local") if arguments.get("due_local") else None,
        source_message_id=context.source_message_id,
    )
    zone_name = profile_zone_name_get(user_id=context.user_id)
    return {"task": task_summary(task, zone_name=zone_name), "confirmation": f"Added to your list: {task.title}"}


def _task_list(context: _Context, arguments: dict[str, Any]) -> dict[str, Any]:
    _fields_check(arguments, required=(), optional=())
    tasks = selectors.task_list(user_id=context.user_id)
    zone_name = profile_zone_name_get(user_id=context.user_id)  # once, not once per task
    return {"tasks": [task_summary(t, zone_name=zone_name) for t in tasks[:LIST_SHOWN_MAX]], "count": len(tasks)}


def _task_complete(context: _Context, arguments: dict[str, Any]) -> dict[str, Any]:
    _fields_check(arguments, required=("id",), optional=())
    task = services.task_complete(user_id=context.user_id, task_id=_id(arguments))
    zone_name = profile_zone_name_get(user_id=context.user_id)
    return {"task": task_summary(task, zone_name=zone_name), "confirmation": f"Ticked off: {task.title}"}


_HANDLERS = {
    "reminder_create": _reminder_create,
    "reminder_list": _reminder_list,
    "reminder_cancel": _reminder_cancel,
    "task_add": _task_add,
    "task_list": _task_list,
    "task_complete": _task_complete,
}


def reminder_summary(reminder: Reminder) -> dict[str, Any]:
    """A reminder as the model and the action frame see it: times in its own zone."""
    local = timezone.localtime(reminder.due_at, zone_get(reminder.timezone))
    return {
        "id": reminder.pk,
        "text": reminder.text,
        "due_local": local.strftime(LOCAL_FORMAT),
        "due_display": time_display(local),
        "timezone": reminder.timezone,
        "recurrence": reminder.recurrence or "none",
        "status": "pending" if reminder.status == ReminderStatus.SENDING else reminder.status,
    }


def task_summary(task: Task, *, zone_name: str) -> dict[str, Any]:
    """A task as the model and the action frame see it: its due time in the user's zone."""
    summary: dict[str, Any] = {"id": task.pk, "title": task.title, "done": task.done}
    if task.notes:
        summary["notes"] = task.notes
    if task.due_at is not None:
        summary["due_local"] = timezone.localtime(task.due_at, zone_get(zone_name)).strftime(LOCAL_FORMAT)
    return summary


def _fields_check(arguments: dict[str, Any], *, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    missing = [name for name in required if arguments.get(name) in (None, "")]
    if missing:
        raise ToolRefused("invalid_arguments", f"Missing: {', '.join(missing)}.")
    unknown = sorted(set(arguments) - set(required) - set(optional))
    if unknown:
        raise ToolRefused("invalid_arguments", f"Unknown arguments: {', '.join(u[:40] for u in unknown[:5])}.")


def _string(arguments: dict[str, Any], name: str) -> str:
    value = arguments.get(name)
    if not isinstance(value, str):
        raise ToolRefused("invalid_arguments", f"{name} must be a string.")
    return value


def _id(arguments: dict[str, Any]) -> int:
    value = arguments.get("id")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**63:
        raise ToolRefused("invalid_arguments", "id must be a positive whole number (from the list).")
    return value
