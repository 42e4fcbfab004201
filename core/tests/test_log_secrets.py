"""No secret reaches a log (#18): passwords, tokens, Authorization headers and message text.

Every logger is opened at DEBUG and captured, propagating or not (`companion` and
`django.request` do not propagate), with each record's arguments, extra data and traceback.
"""

import base64
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from conversations.models import Role
from conversations.titles import conversation_title_generate
from core.background import in_process_tasks_wait
from llm.base import TextDelta
from llm.errors import Unavailable
from llm.fake import FakeProvider
from llm.models import UsageRecord
from llm.prompts.titles import title_from_words
from llm.testing import provider_configured
from memory.services import memory_extract
from testing.support import AvatarFactory, ConversationFactory, MessageFactory, ws_connect, ws_receive_until

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "Planted-Secret-Pw-7731"
MESSAGE = "planted secret message 5521"


_STANDARD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", None, None)))


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.formatter_ = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        parts = [record.name, record.getMessage(), json.dumps(getattr(record, "data", None), default=str)]
        parts += [repr(value) for key, value in vars(record).items() if key not in _STANDARD_ATTRIBUTES]
        if record.exc_info:
            parts.append(self.formatter_.formatException(record.exc_info))
        self.lines.append(" ".join(parts))


# Django's SQL log carries every query's parameters (message text, token hashes) by design, and
# redis-py's push log every channel-layer payload; settings pin both at WARNING so that no
# LOG_LEVEL turns them on, and the tests check that pin.
SQL_LOGGER = "django.db.backends"
PINNED_LOGGERS = (SQL_LOGGER, "push_response")


@pytest.fixture
def captured() -> Iterator[_Everything]:
    handler = _Everything()
    names = ["", *logging.root.manager.loggerDict, "companion", "django.request", "django.server", "uvicorn", "ninja"]
    loggers = [logging.getLogger(name) for name in dict.fromkeys(names) if not name.startswith(PINNED_LOGGERS)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def _post(client: Client, path: str, body: Any, **headers: str) -> Any:
    return client.post(path, data=json.dumps(body), content_type="application/json", headers=headers)


def test_no_password_token_header_or_message_text_is_logged(captured: _Everything, settings: Any) -> None:
    in_process_tasks_wait(timeout=30)  # earlier tests' background work is not this test's
    settings.DEBUG = True  # ninja logs more with DEBUG on: the worst case
    client = Client()
    avatar = AvatarFactory()
    secrets = [PASSWORD, MESSAGE]

    with provider_configured("llm.fake.FakeProvider"):
        # register, a failed and a good login, refresh, a message, logout
        assert _post(client, "/api/auth/register", {"username": "casey", "password": PASSWORD}).status_code == 201
        assert _post(client, "/api/auth/token", {"username": "casey", "password": PASSWORD + "x"}).status_code == 401
        pair = _post(client, "/api/auth/token", {"username": "casey", "password": PASSWORD}).json()
        refreshed = _post(client, "/api/auth/refresh", {"refresh": pair["refresh"]}).json()
        bearer = f"Bearer {refreshed['access']}"
        conversation = _post(client, "/api/conversations", {"avatar_id": avatar.pk}, Authorization=bearer).json()
        sent = _post(
            client, f"/api/conversations/{conversation['id']}/messages", {"content": MESSAGE}, Authorization=bearer
        )
        assert sent.status_code == 201
        # Its background work runs now, in threads sharing the test's in-memory database, whose
        # table locks (unlike a file's) do not wait: let it finish before the next writes.
        in_process_tasks_wait(timeout=30)
        # a reused refresh token, and an Authorization header of every scheme
        assert _post(client, "/api/auth/refresh", {"refresh": pair["refresh"]}).status_code == 401
        basic = base64.b64encode(f"casey:{PASSWORD}".encode()).decode()
        headers = [f"Basic {basic}", f"Token {refreshed['access']}", f"Bearer {pair['access']}x", f"Digest {PASSWORD}"]
        for header in headers:
            assert client.get("/api/me", headers={"Authorization": header}).status_code == 401
            secrets.append(header.partition(" ")[2])
        assert _post(client, "/api/auth/logout", {"refresh": refreshed["refresh"]}).status_code == 204
        secrets += [pair["access"], pair["refresh"], refreshed["access"], refreshed["refresh"]]
        # The message's background work (memory, titles) logs too: all of it inside the capture.
        in_process_tasks_wait(timeout=30)

    assert captured.lines, "the capture saw no log at all: it would prove nothing"
    assert all(logging.getLogger(name).level >= logging.WARNING for name in PINNED_LOGGERS)  # set, not inherited
    leaks = [(secret, line[:200]) for line in captured.lines for secret in secrets if secret in line]
    assert leaks == []


class _EchoingProvider(FakeProvider):
    """A provider that breaks its contract with an untyped error quoting the prompt, as an SDK's
    error repeating the request it refused can: when the call starts, or mid-stream."""

    at_start: bool = False

    def stream(self, messages: Any, *, params: Any = None) -> Any:
        if self.at_start:
            raise RuntimeError(f"could not encode the request: {messages[-1].content!r}")
        return self._failing(messages[-1].content)

    async def _failing(self, content: str) -> Any:
        yield TextDelta("Let me ")
        raise RuntimeError(f"could not encode the request: {content!r}")


@pytest.mark.parametrize("at_start", [False, True], ids=["mid-stream", "at-start"])
def test_a_websocket_turn_whose_provider_fails_quoting_the_message_logs_no_message_text(
    captured: _Everything, monkeypatch: pytest.MonkeyPatch, at_start: bool
) -> None:
    in_process_tasks_wait(timeout=30)
    conversation = ConversationFactory()
    provider = _EchoingProvider()
    provider.at_start = at_start
    monkeypatch.setattr("conversations.consumers.provider_get", lambda: provider)

    async def session() -> list[dict[str, Any]]:
        ws = await ws_connect(conversation)
        await ws.send_to(text_data=json.dumps({"type": "message", "content": MESSAGE}))
        frames = await ws_receive_until(ws, "reply.end")
        await ws.send_to(text_data=json.dumps({"type": "ping"}))
        frames += await ws_receive_until(ws, "pong")  # the socket is still up
        await ws.disconnect()
        return frames

    frames = async_to_sync(session)()
    in_process_tasks_wait(timeout=30)

    # Failing before or after the first token, the reply ends as any provider failure does
    ended = next(f for f in frames if f["type"] == "reply.end")
    assert (ended["status"], ended["error"]["code"]) in {("failed", "llm_unavailable"), ("fallback", "llm_unavailable")}
    assert frames[-1]["type"] == "pong"
    assert any("RuntimeError" in line for line in captured.lines), "the failure itself must still be logged"
    assert all(logging.getLogger(name).level >= logging.WARNING for name in PINNED_LOGGERS)  # set, not inherited
    assert [line[:200] for line in captured.lines if MESSAGE in line] == []


def test_server_access_log_keeps_no_search_words_nor_ticket() -> None:
    """uvicorn's access and handshake lines carry the query string: a search's words and a ticket."""
    handler = _Everything()
    access, handshake = logging.getLogger("uvicorn.access"), logging.getLogger("uvicorn.error")
    for logger in (access, handshake):
        logger.addHandler(handler)
    try:
        access.warning(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", f"/api/conversations?limit=5&q={MESSAGE}", "1.1", 200
        )
        handshake.warning('%s - "WebSocket %s" [accepted]', "127.0.0.1:5", "/ws/conversations/7/?ticket=tk-planted-991")
    finally:
        for logger in (access, handshake):
            logger.removeHandler(handler)
    text = "\n".join(handler.lines)
    assert MESSAGE not in text
    assert "tk-planted-991" not in text
    assert "limit=5&q=[redacted]" in text
    assert "?ticket=[redacted]" in text


@pytest.mark.parametrize("at_start", [False, True], ids=["mid-stream", "at-start"])
def test_a_rest_turn_whose_provider_fails_quoting_the_message_is_a_failed_reply_and_logs_no_message_text(
    captured: _Everything, monkeypatch: pytest.MonkeyPatch, at_start: bool, bearer_for: Any
) -> None:
    in_process_tasks_wait(timeout=30)
    conversation = ConversationFactory()
    provider = _EchoingProvider()
    provider.at_start = at_start
    monkeypatch.setattr("conversations.api.provider_get", lambda: provider)

    sent = Client().post(
        f"/api/conversations/{conversation.pk}/messages",
        data=json.dumps({"content": MESSAGE}),
        content_type="application/json",
        headers=bearer_for(conversation.user),
    )
    in_process_tasks_wait(timeout=30)

    # Then the user's message is answered like any other provider failure: no 500
    assert sent.status_code == 201, sent.content
    reply = sent.json()["assistant_message"]
    assert (reply["status"], reply["error_code"]) in {("failed", "llm_unavailable"), ("fallback", "llm_unavailable")}
    assert any("RuntimeError" in line for line in captured.lines), "the failure itself must still be logged"
    assert [line[:200] for line in captured.lines if MESSAGE in line] == []


class _EchoingCompletions(FakeProvider):
    """A provider whose batch calls (background work) break their contract quoting the prompt."""

    async def complete(self, messages: Any, *, params: Any = None) -> Any:
        raise RuntimeError(f"could not encode the request: {messages[-1].content!r}")


def test_background_calls_whose_provider_fails_quoting_the_message_log_no_message_text(captured: _Everything) -> None:
    in_process_tasks_wait(timeout=30)
    conversation = ConversationFactory()
    worth = f"My sister Ana lives in Lisbon and works nights, {MESSAGE}"
    message = MessageFactory(conversation=conversation, content=worth)
    MessageFactory(conversation=conversation, role=Role.ASSISTANT, content="Noted.", reply_to=message)
    provider = _EchoingCompletions()

    # When the facts and the title of the exchange are asked of it
    with pytest.raises(Unavailable):
        memory_extract(message_id=message.pk, provider=provider)
    title = conversation_title_generate(conversation_id=conversation.pk, provider=provider)

    # Then the facts fail as an unavailable model (retried by their task), the title falls back
    # to the first words, each call is recorded, and no log line quotes the message
    assert title == title_from_words(worth)
    outcomes = sorted(UsageRecord.objects.filter(user=conversation.user).values_list("kind", "outcome"))
    assert outcomes == [("facts", "llm_unavailable"), ("title", "llm_unavailable")]
    failures = [line for line in captured.lines if "provider raised an untyped error" in line]
    assert {line.partition(" ")[0] for line in failures} == {"companion.memory", "companion.conversations"}
    assert all("RuntimeError" in line for line in failures)
    assert [line[:200] for line in captured.lines if MESSAGE in line] == []
