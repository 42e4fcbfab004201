"""End to end with `LLM_PROVIDER=anyllm`: one whole turn through the websocket, for Anthropic and Gemini.

A real server process (`testing.live_server`) whose model is llmock speaking Anthropic's
Messages API or Gemini's API through any-llm; a real websocket client. The journal shows the
turn reached the native endpoint, read to its end.
"""

from collections.abc import Iterator

import httpx
import pytest

from llm.testing import LlmockServer, llmock_server
from testing.e2e import (
    FRAME_TIMEOUT,
    Account,
    account_register,
    turn_over_a_new_socket,
    turn_shape,
)
from testing.live_server import LiveDatabase, LiveServer, live_database, live_server

pytestmark = pytest.mark.e2e

REPLY = " ".join(f"word{i}" for i in range(40))

DIALECTS = {
    "anthropic": ("anthropic:claude-haiku-4-5", "/anthropic/v1/messages"),
    "gemini": ("gemini:gemini-2.0-flash", "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent"),
}


@pytest.fixture(scope="module")
def database() -> Iterator[LiveDatabase]:
    with live_database() as db:
        yield db


@pytest.fixture(scope="module")
def model_process() -> Iterator[LlmockServer]:
    with llmock_server(chunk_delay_ms=5) as llm:
        yield llm


@pytest.fixture(scope="module", params=sorted(DIALECTS))
def dialect(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def server(database: LiveDatabase, model_process: LlmockServer, dialect: str) -> Iterator[LiveServer]:
    model, _path = DIALECTS[dialect]
    extra_env = {"LLM_PROVIDER": "anyllm", "LLM_MODEL": model, "LLM_BASE_URL": f"{model_process.url}/{dialect}"}
    with live_server(database=database, llm_base_url=model_process.base_url, extra_env=extra_env) as live:
        yield live


async def test_a_whole_turn_through_the_websocket(
    server: LiveServer, model_process: LlmockServer, dialect: str
) -> None:
    model_process.reset()
    model_process.scenario({"type": "reply", "text": REPLY, "match": {"stream": True}})
    account: Account = account_register(server, f"anyllm-{dialect}")

    async with httpx.AsyncClient(base_url=server.url, timeout=FRAME_TIMEOUT) as http:
        _conversation_id, frames = await turn_over_a_new_socket(server, http, account, {"content": "hello"})

    shape = turn_shape(frames)
    assert shape[0] == "message.created"
    assert shape[-3:] == ["reply.start", "token*", "reply.end"]
    end = frames[-1]
    assert (end["status"], end["finish_reason"], end["content"]) == ("complete", "stop", REPLY)
    assert "".join(f["delta"] for f in frames if f["type"] == "token") == REPLY
    assert end["usage"]["completion_tokens"] > 0
    _model, path = DIALECTS[dialect]
    streamed = [r for r in model_process.requests() if r["stream"]]
    assert [(r["path"], r["status"], r["completed"]) for r in streamed] == [(path, 200, True)]
