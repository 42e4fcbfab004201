"""The OpenAI-compatible image provider against llmock's /v1/images/generations, and the download of a `url`."""

import http.server
import io
import socket
import threading
from collections.abc import Iterator

import pytest
from PIL import Image

from images.download import image_url_fetch
from images.errors import ImageFailed, ImageInvalid, ImageRefused
from images.providers.openai import OpenAIImageProvider
from images.tests.conftest import image_requests
from llm.testing import LlmockServer

pytestmark = pytest.mark.llmock

PATH = "*/images/generations"


def _provider(server: LlmockServer, *, response_format: str = "", timeout: float = 2.0) -> OpenAIImageProvider:
    return OpenAIImageProvider(
        model="gpt-image-1",
        api_key="test-key",
        base_url=server.base_url,
        timeout=timeout,
        response_format=response_format,
    )


@pytest.mark.parametrize("response_format", ["url", "b64_json"])
def test_both_answer_shapes_give_the_picture_bytes(llmock: LlmockServer, response_format: str) -> None:
    generated = _provider(llmock, response_format=response_format).generate(
        "a portrait", size="1024x1024", quality="medium"
    )

    assert generated.data.lstrip().startswith(b"<svg")
    assert generated.usage.model == "gpt-image-1"
    [request] = image_requests(llmock)
    assert request["body"]["response_format"] == response_format
    assert request["body"]["size"] == "1024x1024"
    assert request["body"]["quality"] == "medium"


def test_the_content_policy_is_a_refusal(llmock: LlmockServer) -> None:
    llmock.scenario(
        {
            "type": "fail",
            "status": 400,
            "code": "content_policy_violation",
            "message": "Your request was rejected by our safety system",
            "match": {"path": PATH},
        }
    )

    with pytest.raises(ImageRefused) as raised:
        _provider(llmock).generate("x", size="1024x1024", quality="medium")

    assert raised.value.reason == "provider"
    assert "content policy" in raised.value.message
    assert len(image_requests(llmock)) == 1  # one call: no retry inside the provider


@pytest.mark.parametrize(("status", "code"), [(429, "llm_rate_limited"), (500, "llm_unavailable")])
def test_a_failure_that_may_pass_is_retryable(llmock: LlmockServer, status: int, code: str) -> None:
    llmock.scenario({"type": "fail", "status": status, "match": {"path": PATH}})

    with pytest.raises(ImageFailed) as raised:
        _provider(llmock).generate("x", size="1024x1024", quality="medium")

    assert raised.value.retryable is True
    assert raised.value.error_code == code
    assert len(image_requests(llmock)) == 1


def test_a_bad_key_is_terminal(llmock: LlmockServer) -> None:
    llmock.scenario({"type": "fail", "status": 401, "match": {"path": PATH}})

    with pytest.raises(ImageFailed) as raised:
        _provider(llmock).generate("x", size="1024x1024", quality="medium")

    assert raised.value.retryable is False
    assert raised.value.error_code == "llm_auth"
    assert "test-key" not in raised.value.detail


def test_a_provider_slower_than_the_timeout_is_a_retryable_failure(llmock: LlmockServer) -> None:
    llmock.scenario({"type": "delay", "seconds": 2.0, "match": {"path": PATH}})

    with pytest.raises(ImageFailed) as raised:
        _provider(llmock, timeout=0.3).generate("x", size="1024x1024", quality="medium")

    assert raised.value.retryable is True
    assert raised.value.error_code == "llm_timeout"


# --- downloading a `url` ---------------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/picture.png"
    finally:
        listener.close()


@pytest.fixture
def picture_server() -> Iterator[str]:
    """Serves a PNG at /small.png and an endless body at /huge."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (0, 120, 200)).save(buffer, format="PNG")
    png = buffer.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/small.png":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(png)))
                self.end_headers()
                self.wfile.write(png)
                return
            self.send_response(200)
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"\0" * 65536)

        def log_message(self, *args: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # the client abandoning the endless body

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_url_that_does_not_answer_is_a_retryable_failure(silent_server: str) -> None:
    with pytest.raises(ImageFailed) as raised:
        image_url_fetch(silent_server, timeout=0.3, max_bytes=1024 * 1024)

    assert raised.value.retryable is True
    assert raised.value.error_code == "image_download_timeout"


def test_a_url_is_downloaded(picture_server: str) -> None:
    data = image_url_fetch(f"{picture_server}/small.png", timeout=2, max_bytes=1024 * 1024)

    assert Image.open(io.BytesIO(data)).size == (64, 64)


def test_a_download_past_the_cap_is_abandoned(picture_server: str) -> None:
    with pytest.raises(ImageInvalid):
        image_url_fetch(f"{picture_server}/huge", timeout=2, max_bytes=256 * 1024)


def test_only_http_and_data_urls_are_read() -> None:
    with pytest.raises(ImageInvalid):
        image_url_fetch("file:///etc/passwd", timeout=1, max_bytes=1024)
