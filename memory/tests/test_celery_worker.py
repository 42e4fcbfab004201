"""Memory work on a real Celery worker process, over the Redis of REDIS_URL and the PostgreSQL of DATABASE_URL.

Each test starts its own worker (`celery -A memory.tests.celery_worker_app worker`,
the project's app on a queue of its own, see that module) from a fixture and stops it by its
PID. The worker reads the test database (pytest-django's `test_<name>`, passed as its
DATABASE_URL) and answers with `fake_summary_provider.FakeSummaryProvider` through
LLM_PROVIDER. Without REDIS_URL or PostgreSQL these tests skip, and fail when CI=true.

Run locally, e.g.:
    REDIS_URL=redis://127.0.0.1:6379/5 DATABASE_URL=postgres://postgres@127.0.0.1:5432/companion_memory \\
        .venv/bin/pytest memory/tests/test_celery_worker.py
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from companion.celery import app
from conversations.models import Conversation, Message, Role
from core import background
from memory import tasks
from memory.models import Memory, Summary
from memory.selectors import memory_list_for_prompt, summary_is_due
from memory.services import conversation_memory_schedule
from testing.support import AvatarFactory, ConversationFactory, MessageFactory, UserFactory, skip_or_fail

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

WORKER_START_TIMEOUT = 60.0
WAIT_TIMEOUT = 60.0
SUMMARY_MODEL = "fake-summary-model"
# Fixed here, in the test process and the worker alike, whatever the project's defaults: the
# newest 20 counted messages stay out of a summary; more than 20 older ones trigger one.
KEEP_RECENT = 20
TRIGGER_MESSAGES = 20


@dataclass
class Worker:
    process: "subprocess.Popen[bytes]"
    node: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Warm shutdown by PID; a worker that does not exit (or its pool children) is killed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)  # its own session: the group is the worker and its children
                self.process.wait(timeout=10)

    def wait_idle(self, queue: str, client: redis.Redis) -> None:
        """Until the queue is empty and the worker reports nothing running or reserved, twice in a row."""
        quiet = 0

        def idle() -> bool:
            nonlocal quiet
            inspect = app.control.inspect(destination=[self.node], timeout=1.0)
            active, reserved = inspect.active() or {}, inspect.reserved() or {}
            now_quiet = client.llen(queue) == 0 and active.get(self.node) == [] and reserved.get(self.node) == []
            quiet = quiet + 1 if now_quiet else 0
            return quiet >= 2

        wait_until(idle, what="the worker to be idle", worker=self)


def wait_until(condition: Callable[[], bool], *, what: str, worker: Worker | None = None) -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT
    while time.monotonic() < deadline:
        if condition():
            return
        if worker is not None and worker.process.poll() is not None:
            pytest.fail(f"the worker exited while waiting for {what}:\n{worker.log()[-4000:]}")
        time.sleep(0.1)
    log = worker.log()[-4000:] if worker is not None else ""
    pytest.fail(f"timed out after {WAIT_TIMEOUT}s waiting for {what}\n{log}")


@pytest.fixture
def services() -> None:
    if not settings.REDIS_URL:
        skip_or_fail("REDIS_URL is not set: the Celery worker tests need Redis")
    if connection.vendor != "postgresql":
        skip_or_fail("DATABASE_URL is not PostgreSQL: a worker process cannot share SQLite's test database")


@pytest.fixture
def queue(services: None, settings: Any) -> Iterator[str]:
    """A queue of this test's own; what the test process sends goes there too."""
    name = f"memory-test-{uuid.uuid4().hex[:12]}"
    settings.MEMORY_TASK_QUEUE = name
    settings.SUMMARY_KEEP_RECENT = KEEP_RECENT
    settings.SUMMARY_TRIGGER_MESSAGES = TRIGGER_MESSAGES
    yield name
    redis.Redis.from_url(settings.REDIS_URL).delete(name)


@pytest.fixture
def redis_client(services: None) -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


@pytest.fixture
def start_worker(transactional_db: Any, queue: str, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start workers on this test's queue; every one is stopped before the test database is flushed."""
    started: list[Worker] = []

    def start(*, pool: str = "solo", env: dict[str, str] | None = None) -> Worker:
        node = f"memtest-{uuid.uuid4().hex[:8]}@{os.uname().nodename}"
        log_path = tmp_path / f"{node.split('@')[0]}.log"
        command = [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "memory.tests.celery_worker_app",
            "worker",
            f"--pool={pool}",
            "--concurrency=1",
            "-Q",
            queue,
            "-n",
            node,
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=settings.BASE_DIR,
                env=_worker_env(queue, env or {}),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(process=process, node=node, log_path=log_path)
        started.append(worker)
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while " ready." not in worker.log():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Celery worker did not start:\n{worker.log()[-4000:]}")
            time.sleep(0.1)
        return worker

    yield start
    for worker in started:
        worker.stop()


def _worker_env(queue: str, extra: dict[str, str]) -> dict[str, str]:
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{credentials}@{host}/{quote(db['NAME'], safe='')}",
        "REDIS_URL": settings.REDIS_URL,
        "LLM_PROVIDER": "memory.tests.fake_summary_provider.FakeSummaryProvider",
        "LLM_SUMMARY_MODEL": SUMMARY_MODEL,
        "SUMMARY_KEEP_RECENT": str(KEEP_RECENT),
        "SUMMARY_TRIGGER_MESSAGES": str(TRIGGER_MESSAGES),
        "MEMORY_TEST_QUEUE": queue,
        "PYTHONPATH": str(settings.BASE_DIR),
        "DJANGO_SETTINGS_MODULE": "companion.settings",
    }
    env.pop("FAKE_LLM_HANG_MARKER", None)
    env.pop("MEMORY_TEST_VISIBILITY_TIMEOUT", None)
    return {**env, **extra}


# --- helpers ---------------------------------------------------------------------------------------


def new_conversation() -> Conversation:
    return ConversationFactory(
        user=UserFactory(username="sam"), avatar=AvatarFactory(name="Luna"), last_message_at=timezone.now()
    )


def history(conversation: Conversation, count: int, *, start: int = 0, first: str | None = None) -> list[Message]:
    """`count` messages alternating user and assistant (user at even positions), oldest first."""
    return [
        MessageFactory(
            conversation=conversation,
            role=Role.USER if (start + i) % 2 == 0 else Role.ASSISTANT,
            content=first if (first is not None and i == 0) else f"line {start + i}",
        )
        for i in range(count)
    ]


def turn_stored(conversation: Conversation, user_message: Message) -> None:
    """What the orchestrator does after each stored turn."""
    with transaction.atomic():
        conversation_memory_schedule(conversation_id=conversation.pk, message_id=user_message.pk)


def marker_pid(marker: Path) -> int | None:
    text = marker.read_text() if marker.exists() else ""
    return int(text) if text.strip() else None


# --- the tests -------------------------------------------------------------------------------------


def test_a_long_conversation_gets_exactly_one_summary_covering_an_older_message(
    start_worker: Callable[..., Worker], queue: str, redis_client: redis.Redis
) -> None:
    # Given a worker and a conversation of 45 messages: 25 older than the newest 20
    worker = start_worker()
    conversation = new_conversation()
    messages = history(conversation, 45)

    # When the last turn is stored, and the same summary is sent twice more (a duplicate and a sweep)
    turn_stored(conversation, messages[-1])
    background.task_enqueue(tasks.summarize_conversation, conversation_id=conversation.pk)
    background.task_enqueue(tasks.summarize_conversation, conversation_id=conversation.pk)
    worker.wait_idle(queue, redis_client)

    # Then there is exactly one summary, covering up to the newest message outside the window
    summary = Summary.objects.get()
    assert summary.conversation_id == conversation.pk
    assert summary.covers_until_id == messages[-KEEP_RECENT - 1].pk == messages[24].pk
    assert summary.text == "They talked through 25 more messages, the last one being 'line 24'."
    assert summary.model == SUMMARY_MODEL
    # And the newest 20 are not summarised away; the extraction of "line 44" remembered nothing
    assert summary_is_due(conversation_id=conversation.pk) is False
    assert not Memory.objects.exists()


def test_a_worker_killed_mid_summary_has_it_redelivered_and_leaves_one_summary(
    start_worker: Callable[..., Worker], queue: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given a solo worker whose model hangs on the first summary, and a short visibility timeout
    marker = tmp_path / "hang"
    env = {"FAKE_LLM_HANG_MARKER": str(marker), "MEMORY_TEST_VISIBILITY_TIMEOUT": "3"}
    first = start_worker(env=env)
    conversation = new_conversation()
    messages = history(conversation, 45)
    background.task_enqueue(tasks.summarize_conversation, conversation_id=conversation.pk)
    wait_until(lambda: marker_pid(marker) is not None, what="the summary to start", worker=first)
    assert marker_pid(marker) == first.pid  # the solo pool runs tasks in the worker process itself

    # When the whole worker is killed mid-task
    os.kill(first.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    assert not Summary.objects.exists()

    # Then a new worker gets the unacknowledged task once the visibility timeout has passed, and finishes it
    second = start_worker(env=env)
    wait_until(Summary.objects.exists, what="the redelivered summary", worker=second)
    second.wait_idle(queue, redis_client)
    assert list(Summary.objects.values_list("conversation_id", "covers_until_id")) == [
        (conversation.pk, messages[24].pk)
    ]


def test_a_pool_child_killed_mid_summary_is_requeued_by_reject_on_worker_lost(
    start_worker: Callable[..., Worker], queue: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given a prefork worker (default visibility timeout: an hour) whose model hangs on the first summary
    marker = tmp_path / "hang"
    worker = start_worker(pool="prefork", env={"FAKE_LLM_HANG_MARKER": str(marker)})
    conversation = new_conversation()
    messages = history(conversation, 45)
    background.task_enqueue(tasks.summarize_conversation, conversation_id=conversation.pk)
    wait_until(lambda: marker_pid(marker) is not None, what="the summary to start", worker=worker)
    child = marker_pid(marker)
    assert child is not None
    assert child != worker.pid

    # When the pool child running it is killed
    os.kill(child, signal.SIGKILL)

    # Then the worker requeues the message at once (not after an hour) and a new child finishes it
    wait_until(Summary.objects.exists, what="the requeued summary", worker=worker)
    worker.wait_idle(queue, redis_client)
    assert list(Summary.objects.values_list("conversation_id", "covers_until_id")) == [
        (conversation.pk, messages[24].pk)
    ]
    assert "WorkerLostError" in worker.log()


def test_facts_are_deduplicated_by_key_and_by_text(
    start_worker: Callable[..., Worker], queue: str, redis_client: redis.Redis
) -> None:
    # Given a worker and four user messages that say two things, each twice
    worker = start_worker()
    conversation = new_conversation()
    said = [
        "My name is Sam.",
        "Please call me Sam, everyone does.",
        "I work night shifts.",
        "Night shifts are my thing, honestly.",
    ]
    user_messages = []
    for text in said:
        user_messages.append(MessageFactory(conversation=conversation, role=Role.USER, content=text))
        MessageFactory(conversation=conversation, role=Role.ASSISTANT, content="Noted!")

    # When each turn is stored
    for message in user_messages:
        turn_stored(conversation, message)
    worker.wait_idle(queue, redis_client)

    # Then two facts are remembered: the name once, the shifts updated in place under their first key
    assert list(Memory.objects.order_by("id").values_list("key", "text", "source_message_id", "pinned")) == [
        ("name", "The user's name is Sam.", user_messages[0].pk, False),
        ("work_schedule", "The user works the night shift.", user_messages[3].pk, False),
    ]
    assert set(Memory.objects.values_list("user_id", "avatar_id")) == {(conversation.user_id, conversation.avatar_id)}


def test_a_pinned_fact_survives_ten_later_summaries(
    start_worker: Callable[..., Worker], queue: str, redis_client: redis.Redis
) -> None:
    # Given a pinned fact and 40 messages (not yet due)
    worker = start_worker()
    conversation = new_conversation()
    pinned_text = "The user's sister Ana's birthday is 3 May."
    pinned = Memory.objects.create(
        user=conversation.user, avatar=conversation.avatar, key="sister_birthday", text=pinned_text, pinned=True
    )
    messages = history(conversation, 40)

    for round_number in range(10):
        # When 21 more messages come, the first one claiming another birthday, and a summary follows
        new = history(conversation, 21, start=len(messages), first="Actually my sister Ana's birthday is 4 June.")
        messages += new
        turn_stored(conversation, new[0])
        expected_until = messages[-KEEP_RECENT - 1].pk

        def summarised(until: int = expected_until) -> bool:
            return Summary.objects.filter(covers_until_id=until).exists()

        wait_until(summarised, what=f"summary {round_number + 1}", worker=worker)
        worker.wait_idle(queue, redis_client)

        # Then the summary kept the pinned fact, and the fact itself is untouched
        summary = Summary.objects.get()
        assert summary.text.endswith(f"Pinned facts kept: {pinned_text}"), summary.text
        assert list(Memory.objects.values_list("pk", "key", "text", "pinned", "source_message_id")) == [
            (pinned.pk, "sister_birthday", pinned_text, True, None)
        ]

    # And fifty messages later and beyond, the prompt still carries it first
    assert len(messages) == 250
    assert Summary.objects.count() == 1
    assert memory_list_for_prompt(user_id=conversation.user_id, avatar_id=conversation.avatar_id, limit=40) == (
        pinned_text,
    )
