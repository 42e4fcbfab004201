"""Reminders and tasks over REST: the user's own only, times in their zone, bad input refused."""

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from accounts.models import Profile
from conversations.models import Conversation
from secretary.models import Reminder, ReminderStatus, Task
from testing.support import ConversationFactory

pytestmark = pytest.mark.django_db

Headers = Callable[[User], dict[str, str]]


@pytest.fixture
def conversation(user: User) -> Conversation:
    return ConversationFactory(user=user)


@pytest.fixture
def in_paris(user: User) -> None:
    Profile.objects.update_or_create(user=user, defaults={"timezone": "Europe/Paris"})


def post(client: Client, path: str, body: Any, headers: dict[str, str]) -> Any:
    return client.post(path, body, content_type="application/json", headers=headers)


def patch(client: Client, path: str, body: Any, headers: dict[str, str]) -> Any:
    return client.patch(path, body, content_type="application/json", headers=headers)


def next_year(month_day_time: str) -> str:
    return f"{timezone.now().year + 1}-{month_day_time}"


def test_a_reminder_set_in_wall_clock_time_is_stored_in_utc_and_shown_in_the_zone(
    client: Client, user: User, conversation: Conversation, in_paris: None, bearer_for: Headers
) -> None:
    response = post(
        client,
        "/api/reminders",
        {"conversation_id": conversation.pk, "text": "Call the dentist", "due_local": next_year("12-24T09:00")},
        bearer_for(user),
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    year = timezone.now().year + 1
    assert body["due_at"] == f"{year}-12-24T09:00:00+01:00"
    assert {k: body[k] for k in ("text", "timezone", "recurrence", "status", "conversation_id")} == {
        "text": "Call the dentist",
        "timezone": "Europe/Paris",
        "recurrence": "",
        "status": "pending",
        "conversation_id": conversation.pk,
    }
    assert Reminder.objects.get().due_at == datetime(year, 12, 24, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"text": "x", "due_local": "2020-01-01T09:00"}, "time_in_past"),
        ({"text": "x", "due_local": "3000-01-01T09:00"}, "too_far_ahead"),
        ({"text": "x" * 501, "due_local": "2099-01-01T09:00"}, "invalid"),
        ({"text": "", "due_local": "2099-01-01T09:00"}, "invalid"),
        ({"text": "x"}, "invalid"),
        ({"text": "x", "due_local": "next tuesday"}, "invalid"),  # not the shape the schema gives
        ({"text": "x", "due_local": "2099-02-30T09:00"}, "invalid_time"),  # the shape, but no such day
        ({"text": "x", "due_local": "2099-01-01T09:00", "recurrence": "hourly"}, "invalid"),
    ],
)
def test_bad_reminders_are_refused_and_nothing_is_stored(
    client: Client, user: User, conversation: Conversation, bearer_for: Headers, body: dict[str, Any], code: str
) -> None:
    response = post(client, "/api/reminders", {"conversation_id": conversation.pk, **body}, bearer_for(user))

    assert response.status_code == 422, response.json()
    assert response.json()["code"] == code
    assert not Reminder.objects.exists()


def test_a_nonexistent_local_time_is_refused(
    client: Client, user: User, conversation: Conversation, in_paris: None, bearer_for: Headers
) -> None:
    # The last Sunday of March next year, in the hour the clocks skip.
    year = timezone.now().year + 1
    last_sunday = max(d for d in range(25, 32) if datetime(year, 3, d).weekday() == 6)
    due = f"{year}-03-{last_sunday}T02:30"
    response = post(
        client, "/api/reminders", {"conversation_id": conversation.pk, "text": "x", "due_local": due}, bearer_for(user)
    )
    assert response.status_code == 422
    assert response.json()["code"] == "nonexistent_time"


def test_the_pending_limit_holds(
    client: Client, user: User, conversation: Conversation, bearer_for: Headers, settings: Any
) -> None:
    settings.REMINDERS_PENDING_MAX = 3
    due = timezone.now() + timedelta(days=1)
    Reminder.objects.bulk_create(
        Reminder(user=user, conversation=conversation, text=f"r{i}", due_at=due, timezone="UTC") for i in range(3)
    )
    body = {"conversation_id": conversation.pk, "text": "one more", "due_local": next_year("01-01T09:00")}

    response = post(client, "/api/reminders", body, bearer_for(user))

    assert response.status_code == 409
    assert response.json()["code"] == "limit_reached"
    assert Reminder.objects.count() == 3


def test_another_users_reminders_tasks_and_conversations_are_404(
    client: Client, user: User, other_user: User, conversation: Conversation, bearer_for: Headers
) -> None:
    due = timezone.now() + timedelta(days=1)
    theirs = Reminder.objects.create(user=user, conversation=conversation, text="mine", due_at=due, timezone="UTC")
    task = Task.objects.create(user=user, title="mine")
    intruder = bearer_for(other_user)

    assert client.get(f"/api/reminders/{theirs.pk}", headers=intruder).status_code == 404
    assert patch(client, f"/api/reminders/{theirs.pk}", {"status": "cancelled"}, intruder).status_code == 404
    assert client.delete(f"/api/reminders/{theirs.pk}", headers=intruder).status_code == 404
    assert patch(client, f"/api/tasks/{task.pk}", {"done": True}, intruder).status_code == 404
    assert client.delete(f"/api/tasks/{task.pk}", headers=intruder).status_code == 404
    assert client.get("/api/reminders", headers=intruder).json() == []
    assert client.get("/api/tasks", headers=intruder).json() == []
    # Nor may a reminder be put in someone else's conversation.
    body = {"conversation_id": conversation.pk, "text": "x", "due_local": next_year("01-01T09:00")}
    assert post(client, "/api/reminders", body, intruder).status_code == 404
    theirs.refresh_from_db()
    task.refresh_from_db()
    assert (theirs.status, task.done) == (ReminderStatus.PENDING, False)


def test_a_reminder_is_moved_then_cancelled_and_a_cancelled_one_stays_cancelled(
    client: Client, user: User, conversation: Conversation, bearer_for: Headers
) -> None:
    headers = bearer_for(user)
    created = post(
        client,
        "/api/reminders",
        {"conversation_id": conversation.pk, "text": "Stretch", "due_local": next_year("06-01T10:00")},
        headers,
    ).json()

    moved = patch(client, f"/api/reminders/{created['id']}", {"due_local": next_year("06-02T11:30")}, headers)
    cancelled = patch(client, f"/api/reminders/{created['id']}", {"status": "cancelled"}, headers)
    again = patch(client, f"/api/reminders/{created['id']}", {"text": "changed"}, headers)

    assert moved.json()["due_at"].startswith(next_year("06-02T11:30"))
    assert cancelled.json()["status"] == "cancelled"
    assert again.status_code == 409
    assert again.json()["code"] == "not_pending"
    assert [r["text"] for r in client.get("/api/reminders?status=cancelled", headers=headers).json()] == ["Stretch"]
    assert client.get("/api/reminders?status=pending", headers=headers).json() == []


def test_tasks_are_added_ticked_off_and_listed_open_first(client: Client, user: User, bearer_for: Headers) -> None:
    headers = bearer_for(user)
    milk = post(client, "/api/tasks", {"title": "Buy milk"}, headers).json()
    post(client, "/api/tasks", {"title": "File taxes", "notes": "before May", "due_local": "2027-04-30T12:00"}, headers)

    done = patch(client, f"/api/tasks/{milk['id']}", {"done": True}, headers)
    listed = client.get("/api/tasks", headers=headers).json()

    assert done.status_code == 200
    assert done.json()["done"] is True
    assert done.json()["done_at"] is not None
    assert [(t["title"], t["done"]) for t in listed] == [("File taxes", False), ("Buy milk", True)]
    assert [t["title"] for t in client.get("/api/tasks?done=false", headers=headers).json()] == ["File taxes"]
    assert post(client, "/api/tasks", {"title": "x" * 201}, headers).status_code == 422
    assert client.delete(f"/api/tasks/{milk['id']}", headers=headers).status_code == 204
    assert Task.objects.filter(user=user).count() == 1


def test_the_profile_takes_a_zone_quiet_hours_and_the_proactive_opt_in(
    client: Client, user: User, bearer_for: Headers
) -> None:
    headers = bearer_for(user)

    changed = patch(
        client,
        "/api/me",
        {"timezone": "America/New_York", "quiet_hours": {"start": "22:00", "end": "08:00"}, "proactive_opt_in": True},
        headers,
    )
    unknown = patch(client, "/api/me", {"timezone": "Mars/Base"}, headers)
    bad_hours = patch(client, "/api/me", {"quiet_hours": {"start": "25:00", "end": "08:00"}}, headers)
    cleared = patch(client, "/api/me", {"quiet_hours": None}, headers)

    assert changed.status_code == 200
    assert {k: changed.json()[k] for k in ("timezone", "quiet_hours", "proactive_opt_in")} == {
        "timezone": "America/New_York",
        "quiet_hours": {"start": "22:00", "end": "08:00"},
        "proactive_opt_in": True,
    }
    assert (unknown.status_code, unknown.json()["field"]) == (422, "timezone")
    assert bad_hours.status_code == 422
    assert cleared.json()["quiet_hours"] is None
    assert cleared.json()["timezone"] == "America/New_York"  # left out: unchanged


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["reminders", "tasks"])
def test_on_postgresql_a_change_racing_a_delete_is_a_404_not_a_500(
    client: Client, user: User, conversation: Conversation, bearer_for: Headers, kind: str
) -> None:
    # Schemathesis with two workers found it: a PATCH checked the owner, then a DELETE went
    # through before the PATCH locked or saved the row.
    from django.db import connection, transaction

    from testing.support import skip_or_fail

    if connection.vendor != "postgresql":
        skip_or_fail("DATABASE_URL is not PostgreSQL: the race needs row locks between two connections")
    if kind == "reminders":
        row: Reminder | Task = Reminder.objects.create(
            user=user, conversation=conversation, text="Stretch", due_at=timezone.now() + timedelta(days=1)
        )
    else:
        row = Task.objects.create(user=user, title="Milk")
    model = type(row)
    locked, answered = threading.Event(), []

    def delete_while_the_patch_waits() -> None:
        with transaction.atomic():
            model.objects.select_for_update().get(pk=row.pk)
            locked.set()
            time.sleep(0.5)  # the PATCH arrives and waits on the row
            model.objects.filter(pk=row.pk).delete()
        connection.close()

    deleter = threading.Thread(target=delete_while_the_patch_waits)
    deleter.start()
    locked.wait(timeout=10)
    answered.append(patch(client, f"/api/{kind}/{row.pk}", {}, bearer_for(user)))
    deleter.join(timeout=10)

    assert answered[0].status_code == 404
    assert answered[0].json()["code"] == "not_found"
