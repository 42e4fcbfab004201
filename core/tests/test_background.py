"""Sending tasks: the in-process thread (no broker) retries as the task asks; with a broker, the task's queue."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Task, shared_task
from celery.exceptions import Retry

from core import background

attempts: list[int] = []

# A task option Celery sets as an attribute of the task (as the memory tasks pass theirs).
_OPTIONS: dict[str, Any] = {"queue_setting": "TEST_QUEUE"}


@shared_task(bind=True, name="companion.tests.flaky", max_retries=2, ignore_result=True, **_OPTIONS)
def flaky(self: Task[Any, Any], failures: int) -> None:
    """Asks for a retry (no pause) `failures` times, then succeeds."""
    attempts.append(self.request.retries or 0)
    if len(attempts) <= failures:
        raise Retry(exc=RuntimeError("not yet"), when=datetime.now(UTC))


def eager_set(value: bool) -> Iterator[None]:
    conf = flaky.app.conf
    before = conf.task_always_eager
    conf.task_always_eager = value
    attempts.clear()
    yield
    conf.task_always_eager = before


@pytest.fixture
def in_process() -> Iterator[None]:
    """No broker, as without REDIS_URL, even when the test run has one (CI)."""
    yield from eager_set(True)


@pytest.fixture
def with_broker() -> Iterator[None]:
    yield from eager_set(False)


@pytest.mark.django_db(transaction=True)  # the thread checks its own database connection
def test_in_process_a_task_is_retried_until_it_succeeds(in_process: None) -> None:
    background.task_enqueue(flaky, failures=2)

    assert background.in_process_tasks_wait(timeout=30)
    assert attempts == [0, 1, 2]


@pytest.mark.django_db(transaction=True)  # the thread checks its own database connection
def test_in_process_a_task_is_retried_at_most_its_max_retries(in_process: None) -> None:
    background.task_enqueue(flaky, failures=10)

    assert background.in_process_tasks_wait(timeout=30)
    assert attempts == [0, 1, 2]  # max_retries=2: the first run and two retries, then it stops


def test_the_retry_pause_is_the_one_the_task_asked_for() -> None:
    later = datetime.now(UTC) + timedelta(seconds=5)

    assert 4.0 < background._retry_pause(Retry(when=later)) <= 5.0
    assert background._retry_pause(Retry(when=datetime.now(UTC) - timedelta(seconds=5))) == 0.0
    assert background._retry_pause(SimpleNamespace(when=2)) == 2.0  # Celery also takes seconds
    assert background._retry_pause(Retry()) == 0.0


def test_with_a_broker_the_task_goes_to_the_queue_its_setting_names(
    with_broker: None, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(flaky, "apply_async", lambda **options: sent.append(options))
    settings.TEST_QUEUE = "memory-work"

    background.task_enqueue(flaky, failures=0)
    settings.TEST_QUEUE = ""
    background.task_enqueue(flaky, failures=0)

    assert [(options["kwargs"], options.get("queue")) for options in sent] == [
        ({"failures": 0}, "memory-work"),
        ({"failures": 0}, None),  # unset: Celery's default queue
    ]
    assert attempts == []  # nothing ran in this process
