"""Reminder delivery at scale: 10,000 pending reminders, 1,000 of them due in the same minute.

    python -m bench.reminders [--pending 10000] [--due 1000] [--users 500] [--model fake|none]
                              [--deliverers 1] [--batch 100] [--concurrency 8]

Given a throwaway database with --pending reminders of --users users (one conversation
each), --due of them due in the current minute and the rest tomorrow, the deliverers
(`secretary.delivery.reminders_deliver_due`, as the ticker or a Celery worker runs it; with
--deliverers 2, two of them at once on threads of their own) run until nothing is due.
Reported: the time until every due reminder is delivered, the queries per delivery (every
thread's, counted by an execute wrapper on each connection; and one delivery's, step by
step, with CaptureQueriesContext), and duplicates (reminders with more than one message:
must be 0). The model: `llm.fake.FakeProvider` (--model fake) or none at all (--model none:
not configured, every message is the fallback text).

Database: SQLite (a temporary file) by default; with DATABASE_URL, a database
`bench_reminders_<pid>` on that PostgreSQL server, dropped at the end. Figures:
docs/performance.md, "Reminder delivery".
"""

import argparse
import os
import platform
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pending", type=int, default=10_000, help="pending reminders in all")
    parser.add_argument("--due", type=int, default=1_000, help="of which due in the current minute")
    parser.add_argument("--users", type=int, default=500, help="users (one conversation each) they belong to")
    parser.add_argument("--model", choices=("fake", "none"), default="fake", help="FakeProvider, or no model")
    parser.add_argument("--deliverers", type=int, default=1, help="deliverers running at once (threads)")
    parser.add_argument("--batch", type=int, default=100, help="REMINDER_DELIVERY_BATCH")
    parser.add_argument("--concurrency", type=int, default=8, help="SCHEDULED_CONCURRENCY")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "companion.settings")
    import django

    django.setup()
    _run(args)


def _run(args: argparse.Namespace) -> None:
    import logging

    from asgiref.sync import async_to_sync
    from django.conf import settings
    from django.db import connection
    from django.db.backends.signals import connection_created
    from django.db.models import Count

    from conversations.models import Message
    from llm.fake import FakeProvider
    from secretary.delivery import reminders_deliver_due

    # The fallback's warning per message would bury the table; a failure is still shown.
    logging.getLogger("companion").setLevel(logging.ERROR if args.model == "none" else logging.WARNING)
    settings.DEBUG = False
    settings.REMINDER_DELIVERY_BATCH = args.batch
    settings.SCHEDULED_CONCURRENCY = args.concurrency
    settings.PUSH_BACKEND = "core.push.push_nothing"

    original, directory = _database_create(connection)
    try:
        _reminders_create(args)
        breakdown = _one_delivery_queries()
        provider: Any = FakeProvider(reply="Time for your reminder!") if args.model == "fake" else _NoModel()
        counted = _QueryCounter()
        connection_created.connect(counted.install)
        errors: list[BaseException] = []
        failed: list[int] = []

        def deliverer() -> None:
            try:
                while (report := async_to_sync(reminders_deliver_due)(provider=provider)).claimed:
                    failed.append(report.failed)
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=deliverer) for _ in range(args.deliverers)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        connection_created.disconnect(counted.install)

        delivered = Message.objects.filter(origin="reminder").count()
        duplicates = (
            Message.objects.filter(origin="reminder")
            .values("reminder_id")
            .annotate(n=Count("id"))
            .filter(n__gt=1)
            .count()
        )
        print(
            f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"Django {django_version()}, {connection.vendor}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        )
        print(
            f"{args.pending:,} pending, {args.due:,} due in one minute, {args.users} users; model: {args.model}; "
            f"{args.deliverers} deliverer(s), batch {args.batch}, concurrency {args.concurrency}"
        )
        print(f"delivered: {delivered:,} of {args.due:,} in {elapsed:.2f} s ({delivered / elapsed:,.0f}/s)")
        print(f"queries per delivery, all threads: {counted.count / max(1, delivered):.1f} ({counted.count:,} in all)")
        print("queries of one delivery, step by step: " + ", ".join(f"{k} {v}" for k, v in breakdown.items()))
        print(f"duplicates: {duplicates}; failed deliveries: {sum(failed)}")
        if errors:
            print(f"errors: {errors!r}")
    finally:
        connection.close()
        connection.creation.destroy_test_db(original, verbosity=0)
        if directory:
            shutil.rmtree(directory, ignore_errors=True)


def django_version() -> str:
    import django

    return django.get_version()


class _NoModel:
    """No model configured: every scheduled message is its fallback text."""

    name = "none"
    configured = False
    default_model = ""

    async def complete(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("not configured: never called")

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("not configured: never called")


class _QueryCounter:
    """Counts every query of every connection opened after `install` is connected."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def install(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        # A thread's DatabaseWrapper is reused when it reconnects: one wrapper each, not one per connection.
        if self._wrapper not in connection.execute_wrappers:
            connection.execute_wrappers.append(self._wrapper)

    def _wrapper(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        with self._lock:
            self.count += 1
        return execute(sql, params, many, context)


def _database_create(connection: Any) -> tuple[str, str | None]:
    original = connection.settings_dict["NAME"]
    directory: str | None = None
    if connection.vendor == "sqlite":
        directory = tempfile.mkdtemp(prefix="bench-reminders-")
        name = os.path.join(directory, "bench.sqlite3")
    else:
        name = f"bench_reminders_{os.getpid()}"
    connection.settings_dict["TEST"]["NAME"] = name
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    return str(original), directory


def _reminders_create(args: argparse.Namespace) -> None:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.utils import timezone

    from accounts.models import Profile
    from avatars.models import Avatar
    from conversations.models import Conversation
    from secretary.models import Reminder

    avatar = Avatar.objects.create(slug="bench-ada", name="Ada", personality="Precise and kind.", is_public=True)
    users = User.objects.bulk_create([User(username=f"bench-{i}") for i in range(args.users)])
    Profile.objects.bulk_create([Profile(user=user, timezone="Europe/Paris") for user in users])
    conversations = Conversation.objects.bulk_create([Conversation(user=user, avatar=avatar) for user in users])
    now = timezone.now()
    # Due within the last 50 s: every one due now, none of them late (more than a minute overdue).
    due_at = [now - timedelta(seconds=i % 50) for i in range(args.due)]
    later = now + timedelta(days=1)
    rows = []
    for i in range(args.pending):
        conversation = conversations[i % len(conversations)]
        rows.append(
            Reminder(
                user_id=conversation.user_id,
                conversation=conversation,
                text=f"thing number {i}",
                due_at=due_at[i] if i < args.due else later + timedelta(minutes=i % 600),
                timezone="Europe/Paris",
                recurrence="weekdays" if i % 4 == 0 else "",
            )
        )
    Reminder.objects.bulk_create(rows, batch_size=1000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def _one_delivery_queries() -> dict[str, int]:
    """One delivery's queries on this thread, step by step (claimed, then released again)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from conversations.turns.request import ScheduledMessage
    from conversations.turns.scheduled import ScheduledPlan, WrittenText, scheduled_message_store, scheduled_plan_make
    from secretary.delivery import reminder_brief, reminder_fallback, reminder_sent_mark, reminders_claim_due
    from secretary.models import Reminder, ReminderStatus

    steps: dict[str, int] = {}
    with CaptureQueriesContext(connection) as queries:
        (claim,) = reminders_claim_due(now=timezone.now(), limit=1)
    steps["claim (per batch)"] = len(queries)
    message = ScheduledMessage(
        origin="reminder",
        user_id=claim.user_id,
        conversation_id=claim.conversation_id,
        brief=reminder_brief(claim, late=False),
        fallback=reminder_fallback(claim, late=False),
        commit=lambda _id: reminder_sent_mark(claim, now=timezone.now()),
        reminder_id=claim.reminder_id,
    )
    with CaptureQueriesContext(connection) as queries:
        plan: ScheduledPlan = scheduled_plan_make(message)
    steps["prompt"] = len(queries)
    with CaptureQueriesContext(connection) as queries:
        stored = scheduled_message_store(plan, WrittenText(text=message.fallback))
    steps["store + commit"] = len(queries)
    assert stored is not None
    # Back as it was: the timed run delivers it like the others.
    from conversations.models import Message

    Message.objects.filter(pk=stored["id"]).delete()
    Reminder.objects.filter(pk=claim.reminder_id).update(
        status=ReminderStatus.PENDING, due_at=claim.due_at, sent_count=0, last_sent_at=None, attempts=0
    )
    return steps


if __name__ == "__main__":
    main()
