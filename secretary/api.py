"""Reminders and tasks over REST: thin views over secretary.services and selectors."""

from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja import Query, Router, Status

from accounts.schemas import ErrorOut
from core.api import Id
from core.timezones import zone_get
from secretary import selectors, services
from secretary.models import Reminder, ReminderStatus
from secretary.schemas import (
    ReminderIn,
    ReminderListQuery,
    ReminderOut,
    ReminderPatchIn,
    TaskIn,
    TaskListQuery,
    TaskOut,
    TaskPatchIn,
)

router = Router(tags=["secretary"])

_ERRORS: dict[int, Any] = {404: ErrorOut, 409: ErrorOut, 422: ErrorOut}


def reminder_out(reminder: Reminder) -> dict[str, Any]:
    return {
        "id": reminder.pk,
        "conversation_id": reminder.conversation_id,
        "text": reminder.text,
        "due_at": timezone.localtime(reminder.due_at, zone_get(reminder.timezone)),
        "timezone": reminder.timezone,
        "recurrence": reminder.recurrence,
        # Being delivered right now is still pending to the user.
        "status": ReminderStatus.PENDING if reminder.status == ReminderStatus.SENDING else reminder.status,
        "created_at": reminder.created_at,
        "source_message_id": reminder.source_message_id,
        "sent_count": reminder.sent_count,
        "last_sent_at": reminder.last_sent_at,
    }


@router.get("/reminders", response=list[ReminderOut])
def reminder_list(request: HttpRequest, filters: Query[ReminderListQuery]) -> list[dict[str, Any]]:
    """The signed-in user's reminders, soonest first (at most 500)."""
    return [reminder_out(r) for r in selectors.reminder_list(user_id=request.auth.pk, status=filters.status)]  # type: ignore[attr-defined]


@router.post("/reminders", response={201: ReminderOut, **_ERRORS})
def reminder_create(request: HttpRequest, payload: ReminderIn) -> Status[dict[str, Any]]:
    reminder, _ = services.reminder_create(
        user_id=request.auth.pk,  # type: ignore[attr-defined]
        conversation_id=payload.conversation_id,
        text=payload.text,
        due_local=payload.due_local,
        due_at=payload.due_at,
        recurrence=payload.recurrence,
    )
    return Status(201, reminder_out(reminder))


@router.get("/reminders/{reminder_id}", response={200: ReminderOut, 404: ErrorOut})
def reminder_get(request: HttpRequest, reminder_id: Id) -> dict[str, Any]:
    return reminder_out(selectors.reminder_get_owned(user=request.auth, reminder_id=reminder_id))  # type: ignore[attr-defined]


@router.patch("/reminders/{reminder_id}", response={200: ReminderOut, **_ERRORS})
def reminder_update(request: HttpRequest, reminder_id: Id, payload: ReminderPatchIn) -> dict[str, Any]:
    reminder = services.reminder_update(
        user_id=request.auth.pk,  # type: ignore[attr-defined]
        reminder_id=reminder_id,
        text=payload.text,
        due_local=payload.due_local,
        due_at=payload.due_at,
        recurrence=payload.recurrence,
        cancel=payload.status == "cancelled",
    )
    return reminder_out(reminder)


@router.delete("/reminders/{reminder_id}", response={204: None, 404: ErrorOut})
def reminder_delete(request: HttpRequest, reminder_id: Id) -> Status[None]:
    services.reminder_delete(user_id=request.auth.pk, reminder_id=reminder_id)  # type: ignore[attr-defined]
    return Status(204, None)


@router.get("/tasks", response=list[TaskOut])
def task_list(request: HttpRequest, filters: Query[TaskListQuery]) -> list[Any]:
    """The signed-in user's to-do items: open ones first, by due time (at most 500)."""
    return selectors.task_list(user_id=request.auth.pk, done=filters.done)  # type: ignore[attr-defined]


@router.post("/tasks", response={201: TaskOut, **_ERRORS})
def task_create(request: HttpRequest, payload: TaskIn) -> Status[Any]:
    task = services.task_add(
        user_id=request.auth.pk,  # type: ignore[attr-defined]
        title=payload.title,
        notes=payload.notes,
        due_local=payload.due_local,
    )
    return Status(201, task)


@router.patch("/tasks/{task_id}", response={200: TaskOut, **_ERRORS})
def task_update(request: HttpRequest, task_id: Id, payload: TaskPatchIn) -> Any:
    return services.task_update(
        user_id=request.auth.pk,  # type: ignore[attr-defined]
        task_id=task_id,
        title=payload.title,
        notes=payload.notes,
        due_local=payload.due_local,
        done=payload.done,
    )


@router.delete("/tasks/{task_id}", response={204: None, 404: ErrorOut})
def task_delete(request: HttpRequest, task_id: Id) -> Status[None]:
    services.task_delete(user_id=request.auth.pk, task_id=task_id)  # type: ignore[attr-defined]
    return Status(204, None)
