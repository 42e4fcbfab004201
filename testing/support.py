"""Test support shared by every app's tests: factories and helpers for real services.

Kept in one place (STYLE.md: factories in one place, fixtures in conftest.py).
"""

import asyncio
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import factory
import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User

from accounts.models import Profile
from avatars.models import Avatar
from conversations.models import Conversation, Message, Role
from conversations.turns import EventSink, TurnResult, turn_start
from conversations.turns.request import Regenerate
from core.background import in_process_tasks_wait
from core.modes import Mode
from llm.base import LLMProvider


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def skip_or_fail(reason: str) -> None:
    """Outside CI a missing service skips the test; in CI it fails it (never a silent skip)."""
    if in_ci():
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@contextmanager
def logger_captured(caplog: pytest.LogCaptureFixture, name: str) -> Iterator[pytest.LogCaptureFixture]:
    """Every record of one `companion.*` logger in `caplog`, at every level.

    The "companion" loggers do not propagate to the root, where caplog listens: its handler
    is attached to the logger for the duration, unless pytest already reaches it.
    """
    logger = logging.getLogger(name)
    caplog.set_level(logging.DEBUG, logger=name)
    attach = caplog.handler not in _handlers_reached(logger)
    if attach:
        logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        if attach:
            logger.removeHandler(caplog.handler)


def _handlers_reached(logger: logging.Logger) -> list[logging.Handler]:
    reached: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        reached.extend(current.handlers)
        current = current.parent if current.propagate else None
    return reached


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "correct-horse-battery-staple")

    @factory.post_generation
    def profile(obj: User, create: bool, extracted: Any, **kwargs: Any) -> None:
        if create:
            obj.save()
            Profile.objects.get_or_create(user=obj, defaults={"display_name": obj.username.title(), **kwargs})


class AvatarFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Avatar

    slug = factory.Sequence(lambda n: f"avatar-{n}")
    name = factory.Sequence(lambda n: f"Avatar {n}")
    is_public = True
    owner = None
    personality = "Calm, attentive and precise."
    scenario = "Helps the user through the day."
    first_message = "Hello! How can I help today?"
    fallback_lines = factory.LazyFunction(
        lambda: ["Sorry, my thoughts are elsewhere for a moment. Try again soon?", "Give me a moment, please."]
    )


class ConversationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Conversation

    user = factory.SubFactory(UserFactory)
    avatar = factory.SubFactory(AvatarFactory)
    mode = Mode.SECRETARY


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    conversation = factory.SubFactory(ConversationFactory)
    role = Role.USER
    content = factory.Sequence(lambda n: f"message {n}")
    mode = Mode.SECRETARY


async def turn_complete(
    *,
    user_id: int,
    conversation_id: int,
    message: dict[str, Any] | Regenerate,
    provider: LLMProvider,
    listener: EventSink | None = None,
    cancel: asyncio.Event | None = None,
) -> TurnResult:
    """A whole turn through the door, as the batch REST endpoint runs it: start, then wait for the end.

    Setting `cancel` stops the reply, like a client's stop.
    """
    running = await turn_start(
        user_id=user_id, conversation_id=conversation_id, message=message, provider=provider, listener=listener
    )
    return await running.result_or_stop(cancel) if cancel is not None else await running.result()


def turn_frames(
    conversation: Conversation,
    content: str,
    provider: LLMProvider,
    *,
    cancel: asyncio.Event | None = None,
    **fields: Any,
) -> list[dict[str, Any]]:
    """Run one whole turn from sync test code, its background work included; the frames its
    listener got, in order."""
    frames: list[dict[str, Any]] = []

    async def listen(event: Any) -> None:
        frames.append(event.frame())

    async_to_sync(turn_complete)(
        user_id=conversation.user_id,
        conversation_id=conversation.pk,
        message={"content": content, **fields},
        provider=provider,
        listener=listen,
        cancel=cancel,
    )
    # The turn's background work (memory, titles) writes on a thread of its own: done before the
    # test reads or writes again, since SQLite's shared in-memory test database locks a table
    # for every other connection while one writes.
    in_process_tasks_wait(timeout=30)
    return frames


def regenerate_frames(
    conversation: Conversation,
    provider: LLMProvider,
    regenerate: Regenerate | None = None,
    *,
    cancel: asyncio.Event | None = None,
) -> list[dict[str, Any]]:
    """Run one whole regeneration (or edit) from sync test code; the frames its listener got, in order."""
    frames: list[dict[str, Any]] = []

    async def listen(event: Any) -> None:
        frames.append(event.frame())

    async_to_sync(turn_complete)(
        user_id=conversation.user_id,
        conversation_id=conversation.pk,
        message=regenerate or Regenerate(),
        provider=provider,
        listener=listen,
        cancel=cancel,
    )
    # The turn's background work (memory, titles) writes on a thread of its own: done before the
    # test reads or writes again, since SQLite's shared in-memory test database locks a table
    # for every other connection while one writes.
    in_process_tasks_wait(timeout=30)
    return frames


# --- websockets through Channels' test communicator ------------------------------------------


def ws_application() -> Any:
    """The websocket routes alone, as the ASGI application serves them (no origin check)."""
    from channels.routing import URLRouter

    from conversations.routing import websocket_urlpatterns

    return URLRouter(websocket_urlpatterns)


async def ws_connect(conversation: Conversation) -> Any:
    """A connected `WebsocketCommunicator` on the conversation, with a ticket of its owner."""
    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator

    from conversations.tickets import ws_ticket_issue

    ticket = await database_sync_to_async(ws_ticket_issue)(user=conversation.user, conversation_id=conversation.pk)
    communicator = WebsocketCommunicator(
        ws_application(), f"/ws/conversations/{conversation.pk}/?ticket={ticket.ticket}"
    )
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def ws_receive_until(communicator: Any, frame_type: str, timeout: float = 10) -> list[dict[str, Any]]:  # noqa: ASYNC109 - passed on to receive_from
    """The frames received up to and including the first of `frame_type`."""
    import json

    frames: list[dict[str, Any]] = []
    while True:
        frame = json.loads(await communicator.receive_from(timeout=timeout))
        frames.append(frame)
        if frame["type"] == frame_type:
            return frames
