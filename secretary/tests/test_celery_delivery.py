"""Reminder delivery on two real Celery workers over the Redis of REDIS_URL and the PostgreSQL of DATABASE_URL.

The workers are started as memory's worker tests start theirs (fixtures reused from
`memory.tests.test_celery_worker`, see conftest.py: a queue of the test's own, workers stopped by PID).
Without REDIS_URL or PostgreSQL these tests skip, and fail when CI=true.

    REDIS_URL=redis://127.0.0.1:6379/5 DATABASE_URL=postgres://postgres@127.0.0.1:5432/companion \\
        .venv/bin/pytest secretary/tests/test_celery_delivery.py
"""

import os
import signal
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
import redis
from django.utils import timezone

from conversations.models import Message, Origin
from llm.testing import llmock_server
from memory.tests.test_celery_worker import Worker, wait_until
from secretary import tasks
from secretary.models import Reminder, ReminderStatus
from testing.support import ConversationFactory

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

REMINDERS = 24
RUNS = 12  # as if beat fired several times while the workers were busy, and a run was redelivered


def test_two_workers_and_repeated_runs_send_exactly_one_message_per_reminder(
    start_worker: Callable[..., Worker], queue: str, redis_client: redis.Redis
) -> None:
    # Given two workers (small claim batches, so their runs interleave) and 24 due reminders
    env = {"LLM_PROVIDER": "fake", "REMINDER_DELIVERY_BATCH": "3"}
    workers = [start_worker(env=env), start_worker(env=env)]
    conversations = [ConversationFactory() for _ in range(4)]
    due = timezone.now() - timedelta(seconds=1)
    reminders = [
        Reminder.objects.create(
            user_id=conversations[i % 4].user_id,
            conversation=conversations[i % 4],
            text=f"thing {i}",
            due_at=due,
            timezone="UTC",
        )
        for i in range(REMINDERS)
    ]

    # When the delivery task is sent again and again, as beat does every 2 s
    for _ in range(RUNS):
        tasks.reminders_deliver_due.apply_async(queue=queue)

    # Then every reminder is sent, each with exactly one message
    def all_sent() -> bool:
        return not Reminder.objects.exclude(status=ReminderStatus.SENT).exists()

    wait_until(all_sent, what="every reminder to be sent", worker=workers[0])
    for worker in workers:
        worker.wait_idle(queue, redis_client)
    per_reminder = sorted(Message.objects.filter(origin=Origin.REMINDER).values_list("reminder_id", flat=True))
    assert per_reminder == sorted(r.pk for r in reminders)
    assert set(Reminder.objects.values_list("sent_count", flat=True)) == {1}
    assert set(Message.objects.values_list("content", flat=True)) == {"Hello from the fake model."}
    # And both workers took part
    for worker in workers:
        assert "secretary.reminders_deliver_due" in worker.log()


def test_a_worker_killed_mid_delivery_leaves_one_message_sent_by_the_next(
    start_worker: Callable[..., Worker], queue: str, redis_client: redis.Redis
) -> None:
    # Given a worker whose model takes long to write the reminder (llmock answers after 30 s)
    with llmock_server(latency_ms=30_000) as slow_model:
        lease = {"REMINDER_CLAIM_LEASE_SECONDS": "2"}
        doomed = start_worker(
            env={
                **lease,
                "LLM_PROVIDER": "openai",
                "LLM_BASE_URL": slow_model.base_url,
                "LLM_API_KEY": "test-key",
                "SCHEDULED_MODEL_TIMEOUT": "60",
            }
        )
        conversation = ConversationFactory()
        reminder = Reminder.objects.create(
            user_id=conversation.user_id,
            conversation=conversation,
            text="stretch",
            due_at=timezone.now() - timedelta(seconds=1),
            timezone="UTC",
        )
        tasks.reminders_deliver_due.apply_async(queue=queue)

        # When it is killed while it waits for the model, its claim held
        def claimed_and_writing() -> bool:
            reminder.refresh_from_db()
            return reminder.status == ReminderStatus.SENDING and bool(slow_model.requests())

        wait_until(claimed_and_writing, what="the first worker to claim the reminder and call the model", worker=doomed)
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.process.wait(timeout=10)

    # and another worker runs the next delivery (beat sends one every 2 s), after the claim expired
    survivor = start_worker(env={**lease, "LLM_PROVIDER": "fake"})
    time.sleep(2.5)
    tasks.reminders_deliver_due.apply_async(queue=queue)

    # Then the reminder is sent once, by the survivor, and nothing was stored by the killed one
    def sent() -> bool:
        reminder.refresh_from_db()
        return reminder.status == ReminderStatus.SENT

    wait_until(sent, what="the survivor to send the reminder", worker=survivor)
    survivor.wait_idle(queue, redis_client)
    messages = list(Message.objects.filter(origin=Origin.REMINDER).values_list("reminder_id", "content"))
    assert messages == [(reminder.pk, "Hello from the fake model.")]
    assert (reminder.sent_count, reminder.attempts) == (1, 2)
