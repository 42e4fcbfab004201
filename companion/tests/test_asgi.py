"""The ASGI entry point: loaded in a fresh interpreter as a server process loads it, and its lifespan."""

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from companion.lifespan import Lifespan
from conversations.models import Message
from llm.registry import provider_reset
from secretary.models import Reminder
from testing.support import ConversationFactory

PROJECT_DIR = Path(__file__).resolve().parents[2]
PROBE = """
import gc
import companion.asgi
print(gc.get_freeze_count())
"""


def test_loading_the_application_moves_the_startup_heap_out_of_the_garbage_collectors_reach() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "companion.settings"}

    output = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, check=True
    )

    frozen = int(output.stdout.strip().splitlines()[-1])
    assert frozen > 20_000  # Django, the apps, openai and pydantic (about 86,000 objects today)


# --- The lifespan: the in-process scheduler of embedded defaults ------------------------------


class NotServing:
    """The application the lifespan wraps: never reached by a lifespan scope."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError(f"the lifespan handler passed on a {scope['type']} scope")


def test_the_served_application_answers_the_lifespan() -> None:
    # The server process loads companion.asgi:application; its lifespan is ours
    output = subprocess.run(
        [sys.executable, "-c", "import companion.asgi as a; print(type(a.application).__name__)"],
        cwd=PROJECT_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "companion.settings"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert output.stdout.strip().splitlines()[-1] == "Lifespan"


class LifespanDriver:
    """Speaks the server's side of the ASGI lifespan protocol to the application."""

    def __init__(self, application: Any) -> None:
        self.inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.task = asyncio.ensure_future(application({"type": "lifespan"}, self.inbox.get, self._send))

    async def _send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def startup(self) -> None:
        await self.inbox.put({"type": "lifespan.startup"})
        await self._until(1)

    async def shutdown(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(self.task, timeout=15)

    async def _until(self, count: int) -> None:
        for _ in range(500):
            if len(self.sent) >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"no answer from the application: {self.sent}")


@pytest.fixture
def fake_model(settings: Any) -> Iterator[None]:
    settings.LLM_PROVIDER = "fake"
    provider_reset()
    yield
    provider_reset()


@pytest.mark.django_db(transaction=True)
async def test_the_server_starts_a_scheduler_that_delivers_a_due_reminder_and_stops_it(
    settings: Any, fake_model: None
) -> None:
    # Given embedded defaults (no Redis: the scheduler runs in the server) and a reminder due now
    application = Lifespan(NotServing())
    settings.SCHEDULER_IN_PROCESS = True
    settings.SCHEDULER_TICK_SECONDS = 0.05
    conversation = await database_sync_to_async(ConversationFactory)()
    reminder = await database_sync_to_async(Reminder.objects.create)(
        user_id=conversation.user_id,
        conversation=conversation,
        text="stand up",
        due_at=timezone.now() + timedelta(milliseconds=300),
        timezone="UTC",
    )
    server = LifespanDriver(application)

    # When the server starts
    await server.startup()
    assert server.sent == [{"type": "lifespan.startup.complete"}]
    assert application.ticker is not None
    assert application.ticker.running

    # Then the reminder is delivered within the 5 s the contract allows, once
    delivered = database_sync_to_async(Message.objects.filter(reminder_id=reminder.pk).count)
    started = time.monotonic()
    while await delivered() == 0 and time.monotonic() - started < 5:
        await asyncio.sleep(0.05)
    assert await delivered() == 1

    # And when the server stops, the scheduler stops with it
    ticker = application.ticker
    await server.shutdown()
    assert server.sent[-1] == {"type": "lifespan.shutdown.complete"}
    assert application.ticker is None
    assert not ticker.running
    assert await delivered() == 1


async def test_with_redis_the_server_leaves_scheduling_to_beat(settings: Any) -> None:
    application = Lifespan(NotServing())
    settings.SCHEDULER_IN_PROCESS = False
    server = LifespanDriver(application)

    await server.startup()
    await server.shutdown()

    assert server.sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert application.ticker is None
