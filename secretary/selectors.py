"""Reading a user's reminders and tasks; another user's are indistinguishable from missing ones."""

from django.contrib.auth.models import User
from django.db.models import QuerySet

from core.errors import NotFound
from secretary.models import Reminder, ReminderStatus, Task

LIST_MAX = 500


def reminder_list(*, user_id: int, status: str | None = None) -> list[Reminder]:
    """The user's reminders, soonest first; `sending` reads as pending (it is not sent yet)."""
    reminders: QuerySet[Reminder] = Reminder.objects.filter(user_id=user_id)
    if status == ReminderStatus.PENDING:
        reminders = reminders.filter(status__in=(ReminderStatus.PENDING, ReminderStatus.SENDING))
    elif status:
        reminders = reminders.filter(status=status)
    return list(reminders.order_by("due_at", "id")[:LIST_MAX])


def reminder_get_owned(*, user: User | int, reminder_id: int, for_update: bool = False) -> Reminder:
    """The user's reminder, or 404; `for_update` locks its row in the same query (inside a
    transaction), so a reminder deleted between a check and a lock cannot slip through."""
    user_id = user if isinstance(user, int) else user.pk
    reminders = Reminder.objects.select_for_update() if for_update else Reminder.objects
    reminder = reminders.filter(pk=reminder_id, user_id=user_id).first()
    if reminder is None:
        raise NotFound("Reminder not found.")
    return reminder


def task_list(*, user_id: int, done: bool | None = None) -> list[Task]:
    """The user's tasks: open ones first, by due time."""
    tasks: QuerySet[Task] = Task.objects.filter(user_id=user_id)
    if done is not None:
        tasks = tasks.filter(done=done)
    return list(tasks.order_by("done", "due_at", "id")[:LIST_MAX])


def task_get_owned(*, user: User | int, task_id: int, for_update: bool = False) -> Task:
    """The user's task, or 404; `for_update` as for `reminder_get_owned`."""
    user_id = user if isinstance(user, int) else user.pk
    tasks = Task.objects.select_for_update() if for_update else Task.objects
    task = tasks.filter(pk=task_id, user_id=user_id).first()
    if task is None:
        raise NotFound("Task not found.")
    return task
