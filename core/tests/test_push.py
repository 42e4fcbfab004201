"""The push hook's webhook backend against a real HTTP server on 127.0.0.1 (a free port)."""

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from core.push import SIGNATURE_HEADER, PushPayload, push_send
from testing.support import logger_captured

SECRET = "test-webhook-secret"
PREVIEW = "Time to call your mum before she leaves for the airport"


@dataclass
class Receiver:
    url: str
    status: int = 204
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A gateway stand-in: records each POST's headers and raw body, answers `status`."""
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/push"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def webhook(settings: Any, receiver: Receiver) -> Receiver:
    settings.PUSH_BACKEND = "core.push.push_webhook"
    settings.PUSH_WEBHOOK_URL = receiver.url
    settings.PUSH_WEBHOOK_SECRET = SECRET
    settings.PUSH_WEBHOOK_TIMEOUT = 2.0
    return receiver


def payload() -> PushPayload:
    return PushPayload.of(user_id=7, conversation_id=11, message_id=42, origin="reminder", text=PREVIEW)


def test_the_webhook_posts_the_payload_signed_with_hmac_sha256_of_the_body(webhook: Receiver) -> None:
    # When a push is sent
    push_send(payload()).result(timeout=5)

    # Then the receiver got one JSON body whose signature verifies with the shared secret
    ((headers, body),) = webhook.received
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers[SIGNATURE_HEADER.lower()], expected)
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "user_id": 7,
        "conversation_id": 11,
        "message_id": 42,
        "origin": "reminder",
        "preview": PREVIEW,
    }
    # And a signature under another secret would not verify
    forged = "sha256=" + hmac.new(b"another-secret", body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER.lower()] != forged


def test_a_failing_gateway_is_logged_without_the_text_and_raises_nothing(
    webhook: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    webhook.status = 500

    with logger_captured(caplog, "companion.push"):
        push_send(payload()).result(timeout=5)

    assert len(webhook.received) == 1
    (record,) = [r for r in caplog.records if r.name == "companion.push"]
    assert record.getMessage() == "push failed"
    assert record.levelno == logging.WARNING
    assert record.data == {"user_id": 7, "message_id": 42, "origin": "reminder", "error": "HTTPStatusError"}  # type: ignore[attr-defined]
    assert "call your mum" not in caplog.text


def test_an_unreachable_gateway_gives_up_within_the_timeout(settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    # A port nobody listens on: the connection is refused at once
    settings.PUSH_BACKEND = "core.push.push_webhook"
    settings.PUSH_WEBHOOK_URL = "http://127.0.0.1:9/push"
    settings.PUSH_WEBHOOK_TIMEOUT = 1.0

    with logger_captured(caplog, "companion.push"):
        push_send(payload()).result(timeout=5)

    assert [r.getMessage() for r in caplog.records if r.name == "companion.push"] == ["push failed"]


def test_the_preview_is_one_short_line() -> None:
    long = PushPayload.of(user_id=1, conversation_id=2, message_id=3, origin="proactive", text="word\n" * 100)

    assert len(long.preview) == 120
    assert "\n" not in long.preview
    assert long.preview.endswith("…")
