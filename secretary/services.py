"""Writing reminders and tasks: create, change, cancel, tick off, with the limits every user has.

Limits (settings, defaults in companion/settings.py): `REMINDERS_PENDING_MAX` pending
reminders per user (100), `TASKS_OPEN_MAX` open tasks per user (500), texts of at most
`REMINDER_TEXT_MAX` / `TASK_TITLE_MAX` / `TASK_NOTES_MAX` characters, due times at most
`clock.AHEAD_MAX` ahead. A count limit is checked under a lock on the user's profile row, so
two requests at once cannot both pass it.

Times: a wall-clock `due_local` is read in the user's zone (`Profile.timezone`); an aware
`due_at` is taken as it is. Either way the reminder keeps the zone, in which it repeats.
"""

from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import Profile
from accounts.selectors import profile_zone_name_get
from conversations.models import Conversation
from core.errors import Conflict, InvalidInput, NotFound
from secretary.clock import RECURRENCES, ResolvedTime, instant_resolve, local_time_parse, local_time_resolve
from secretary.models import Reminder, ReminderStatus, Task
from secretary.selectors import reminder_get_owned, task_get_owned

REMINDER_TEXT_MAX = 500
TASK_TITLE_MAX = 200
TASK_NOTES_MAX = 2000


class LimitReached(Conflict):
    code = "limit_reached"


def reminder_create(
    *,
    user_id: int,
    conversation_id: int,
    text: str,
    due_local: str | None = None,
    due_at: datetime | None = None,
    recurrence: str | None = None,
    source_message_id: int | None = None,
) -> tuple[Reminder, ResolvedTime]:
    """A pending reminder in one of the user's conversations, and its due time as the user reads it."""
    text = _text_clean(text, field="text", limit=REMINDER_TEXT_MAX)
    recurrence = _recurrence_check(recurrence)
    if not Conversation.objects.filter(pk=conversation_id, user_id=user_id).exists():
        raise NotFound("Conversation not found.", field="conversation_id")
    with transaction.atomic():
        profile = _profile_lock(user_id)
        resolved = _due_resolve(due_local=due_local, due_at=due_at, zone_name=profile.timezone)
        pending = Reminder.objects.filter(
            user_id=user_id, status__in=(ReminderStatus.PENDING, ReminderStatus.SENDING)
        ).count()
        limit = int(getattr(settings, "REMINDERS_PENDING_MAX", 100))
        if pending >= limit:
            raise LimitReached(f"You already have {limit} pending reminders; cancel some first.")
        reminder = Reminder.objects.create(
            user_id=user_id,
            conversation_id=conversation_id,
            text=text,
            due_at=resolved.utc,
            timezone=resolved.zone,
            recurrence=recurrence,
            source_message_id=source_message_id,
        )
    return reminder, resolved


def reminder_update(
    *,
    user_id: int,
    reminder_id: int,
    text: str | None = None,
    due_local: str | None = None,
    due_at: datetime | None = None,
    recurrence: str | None = None,
    cancel: bool = False,
) -> Reminder:
    """Change a pending reminder's text, time or recurrence, or cancel it. A sent or cancelled
    one is history: 409 `not_pending`."""
    if text is not None:
        text = _text_clean(text, field="text", limit=REMINDER_TEXT_MAX)
    if recurrence is not None:
        recurrence = _recurrence_check(recurrence)
    with transaction.atomic():
        # Locked: a deliverer claiming it meanwhile waits, then sees the change (or the cancel).
        reminder = reminder_get_owned(user=user_id, reminder_id=reminder_id, for_update=True)
        if reminder.status != ReminderStatus.PENDING:
            raise _NotPending(f"This reminder is {reminder.status}; only a pending one can change.")
        fields = ["updated_at"]
        if cancel:
            reminder.status = ReminderStatus.CANCELLED
            fields.append("status")
        if text is not None:
            reminder.text = text
            fields.append("text")
        if recurrence is not None:
            reminder.recurrence = recurrence
            fields.append("recurrence")
        if due_local is not None or due_at is not None:
            zone = profile_zone_name_get(user_id=user_id)
            resolved = _due_resolve(due_local=due_local, due_at=due_at, zone_name=zone)
            reminder.due_at, reminder.timezone = resolved.utc, resolved.zone
            fields += ["due_at", "timezone"]
        reminder.save(update_fields=fields)
    return reminder


def reminder_cancel(*, user_id: int, reminder_id: int) -> Reminder:
    return reminder_update(user_id=user_id, reminder_id=reminder_id, cancel=True)


def reminder_delete(*, user_id: int, reminder_id: int) -> None:
    """Forget a reminder whatever its status (a pending one is thereby cancelled)."""
    reminder_get_owned(user=user_id, reminder_id=reminder_id).delete()


def task_add(
    *, user_id: int, title: str, notes: str = "", due_local: str | None = None, source_message_id: int | None = None
) -> Task:
    title = _text_clean(title, field="title", limit=TASK_TITLE_MAX)
    notes = _text_clean(notes or "", field="notes", limit=TASK_NOTES_MAX, allow_empty=True)
    with transaction.atomic():
        profile = _profile_lock(user_id)
        due = _task_due(due_local, zone_name=profile.timezone)
        limit = int(getattr(settings, "TASKS_OPEN_MAX", 500))
        if Task.objects.filter(user_id=user_id, done=False).count() >= limit:
            raise LimitReached(f"You already have {limit} open tasks; tick some off first.")
        return Task.objects.create(
            user_id=user_id, title=title, notes=notes, due_at=due, source_message_id=source_message_id
        )


def task_update(
    *,
    user_id: int,
    task_id: int,
    title: str | None = None,
    notes: str | None = None,
    due_local: str | None = None,
    done: bool | None = None,
) -> Task:
    title = None if title is None else _text_clean(title, field="title", limit=TASK_TITLE_MAX)
    notes = None if notes is None else _text_clean(notes, field="notes", limit=TASK_NOTES_MAX, allow_empty=True)
    due_at = None if due_local is None else _task_due(due_local, zone_name=profile_zone_name_get(user_id=user_id))
    with transaction.atomic():
        # Locked with the owner check in one query: a task deleted meanwhile is a 404, not a failed save.
        task = task_get_owned(user=user_id, task_id=task_id, for_update=True)
        fields = ["updated_at"]
        if title is not None:
            task.title = title
            fields.append("title")
        if notes is not None:
            task.notes = notes
            fields.append("notes")
        if due_at is not None:
            task.due_at = due_at
            fields.append("due_at")
        if done is not None and done != task.done:
            task.done, task.done_at = done, (timezone.now() if done else None)
            fields += ["done", "done_at"]
        task.save(update_fields=fields)
    return task


def task_complete(*, user_id: int, task_id: int) -> Task:
    return task_update(user_id=user_id, task_id=task_id, done=True)


def task_delete(*, user_id: int, task_id: int) -> None:
    task_get_owned(user=user_id, task_id=task_id).delete()


class _NotPending(Conflict):
    code = "not_pending"


def _profile_lock(user_id: int) -> Profile:
    profile, _ = Profile.objects.get_or_create(user_id=user_id)
    return Profile.objects.select_for_update().get(pk=profile.pk)


def _due_resolve(*, due_local: str | None, due_at: datetime | None, zone_name: str) -> ResolvedTime:
    now = timezone.now()
    if due_at is not None and due_local is not None:
        raise InvalidInput("Give due_at or due_local, not both.", field="due_local")
    if due_at is not None:
        return instant_resolve(due_at, zone_name=zone_name, now=now)
    if due_local is None:
        raise InvalidInput("A reminder needs a time: due_local (your wall-clock time) or due_at.", field="due_local")
    return local_time_resolve(local_time_parse(due_local), zone_name=zone_name, now=now)


def _task_due(due_local: str | None, *, zone_name: str) -> datetime | None:
    if not due_local:
        return None
    # A to-do may already be late when it is written down; it is not refused for that.
    wall = local_time_parse(due_local)
    return local_time_resolve(wall, zone_name=zone_name, now=timezone.now(), allow_past=True).utc


def _recurrence_check(recurrence: str | None) -> str:
    recurrence = (recurrence or "").strip().lower()
    if recurrence in ("none", "once"):
        recurrence = ""
    if recurrence not in RECURRENCES:
        raise InvalidInput(
            f"Recurrence must be one of: {', '.join(r for r in RECURRENCES if r)} (or none).", field="recurrence"
        )
    return recurrence


def _text_clean(value: object, *, field: str, limit: int, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be text.", field=field)
    cleaned = "".join(ch for ch in value.strip() if ch.isprintable() or ch in "\n\t")
    if not cleaned and not allow_empty:
        raise InvalidInput(f"{field} may not be empty.", field=field)
    if len(cleaned) > limit:
        raise InvalidInput(f"{field} is longer than {limit} characters.", field=field)
    return cleaned
