"""End to end: the Redis of `REDIS_URL` goes away and comes back, under a live uvicorn server.

Each test starts its own `redis-server` on a free port (no persistence), points a server
process at it, kills it by its PID (SIGKILL, as a crash) and starts it again on the same
port. What a client sees is checked over HTTP and a real websocket: 503 `unavailable`
(never a 500), an `error` frame and close code 1011 on sockets, the reply in flight still
delivered and stored, and everything working again without restarting the server.
"""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from llm.testing import LlmockServer, llmock_server
from testing.live_server import LiveDatabase, LiveServer, live_database, live_server
from testing.redis_server import RedisServer, redis_server, redis_server_binary
from testing.support import skip_or_fail

pytestmark = [pytest.mark.e2e, pytest.mark.llmock]

PASSWORD = "correct-horse-battery-staple-9"
REPLY = " ".join(f"word{i}" for i in range(80))  # 80 chunks, 25 ms apart: about 2 s
FRAME_TIMEOUT = 15.0
RECOVERY_TIMEOUT = 20.0
UNAVAILABLE_BODY_KEYS = {"detail", "code", "field", "retryable"}


@pytest.fixture(scope="module")
def redis_binary() -> str:
    binary = redis_server_binary()
    if binary is None:
        skip_or_fail("redis-server is not on PATH")
    assert binary is not None
    return binary


@pytest.fixture(scope="module")
def database() -> Iterator[LiveDatabase]:
    with live_database() as db:
        yield db


@pytest.fixture(scope="module")
def model() -> Iterator[LlmockServer]:
    with llmock_server(chunk_delay_ms=25) as llm:
        yield llm


@pytest.fixture
def redis(redis_binary: str) -> Iterator[RedisServer]:
    with redis_server(binary=redis_binary) as server:
        yield server


async def _account(http: httpx.AsyncClient) -> dict[str, str]:
    username = f"outage-{uuid.uuid4().hex[:8]}"
    assert (await http.post("/api/auth/register", json={"username": username, "password": PASSWORD})).status_code == 201
    pair = await http.post("/api/auth/token", json={"username": username, "password": PASSWORD})
    assert pair.status_code == 200, pair.text
    return {"username": username, "Authorization": f"Bearer {pair.json()['access']}"}


async def _conversation(http: httpx.AsyncClient, headers: dict[str, str]) -> int:
    avatars = (await http.get("/api/avatars", headers=headers)).json()
    created = await http.post("/api/conversations", json={"avatar_id": avatars[0]["id"]}, headers=headers)
    assert created.status_code == 201, created.text
    conversation_id: int = created.json()["id"]
    return conversation_id


async def _ticket(http: httpx.AsyncClient, headers: dict[str, str], conversation_id: int) -> httpx.Response:
    return await http.post("/api/ws-ticket", json={"conversation_id": conversation_id}, headers=headers)


async def _socket(server: LiveServer, conversation_id: int, ticket: str) -> ClientConnection:
    url = f"{server.ws_url}/ws/conversations/{conversation_id}/?ticket={ticket}"
    return await connect(url, origin=Origin(server.url))


async def _frame(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(FRAME_TIMEOUT):
        frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


async def _frames_until(ws: ClientConnection, frame_type: str) -> list[dict[str, Any]]:
    frames = [await _frame(ws)]
    while frames[-1]["type"] != frame_type:
        frames.append(await _frame(ws))
    return frames


async def _closed_with(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(FRAME_TIMEOUT):
            await ws.recv()
    return ws.close_code


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == UNAVAILABLE_BODY_KEYS
    assert (body["code"], body["retryable"]) == ("unavailable", True)
    assert "Traceback" not in response.text
    assert response.headers["Retry-After"] == "5"


async def _ready(http: httpx.AsyncClient) -> httpx.Response:
    """/readyz once it answers 200 (polls: Redis was just started again)."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    while True:
        ready = await http.get("/readyz")
        if ready.status_code == 200 or time.monotonic() > deadline:
            return ready
        await asyncio.sleep(0.2)


@pytest.fixture
async def http_server(
    database: LiveDatabase, model: LlmockServer, redis: RedisServer
) -> AsyncIterator[tuple[httpx.AsyncClient, LiveServer]]:
    model.reset()
    model.scenario({"type": "reply", "text": REPLY, "match": {"stream": True}})
    with live_server(database=database, llm_base_url=model.base_url, redis_url=redis.url) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=FRAME_TIMEOUT) as http:
            yield http, server


async def test_redis_killed_mid_reply_then_restarted(
    http_server: tuple[httpx.AsyncClient, LiveServer], redis: RedisServer
) -> None:
    http, server = http_server
    headers = await _account(http)
    conversation_id = await _conversation(http, headers)
    ws = await _socket(server, conversation_id, (await _ticket(http, headers, conversation_id)).json()["ticket"])

    # Given a reply streaming to the socket
    await ws.send(json.dumps({"type": "message", "content": "tell me a long story"}))
    before = await _frames_until(ws, "token")

    # When Redis is killed mid-reply
    redis.kill()

    # Then the socket still gets the rest of its reply, promptly, and the reply is stored whole
    after = await _frames_until(ws, "reply.end")
    end = after[-1]
    assert (end["status"], end["content"]) == ("complete", REPLY)
    tokens = [frame["delta"] for frame in before + after if frame["type"] == "token"]
    assert "".join(tokens) == REPLY  # each token once, none lost at the switch
    stored = (await http.get(f"/api/conversations/{conversation_id}/messages", headers=headers)).json()["items"]
    assert (stored[-1]["role"], stored[-1]["status"], stored[-1]["content"]) == ("assistant", "complete", REPLY)

    # And the next message is refused with a retryable error frame and a clean 1011, not a 1006
    await ws.send(json.dumps({"type": "message", "content": "and then?"}))
    refused = await _frame(ws)
    assert (refused["type"], refused["code"], refused["retryable"]) == ("error", "unavailable", True)
    assert await _closed_with(ws) == 1011
    stored_after = (await http.get(f"/api/conversations/{conversation_id}/messages", headers=headers)).json()["items"]
    assert len(stored_after) == len(stored)  # the refused message wrote nothing

    # And requests that need Redis are a 503 `unavailable` in the one error shape, never a 500
    _assert_unavailable(await http.post("/api/auth/token", json={"username": headers["username"], "password": "x"}))
    _assert_unavailable(await _ticket(http, headers, conversation_id))
    _assert_unavailable(
        await http.post(f"/api/conversations/{conversation_id}/messages", json={"content": "hi"}, headers=headers)
    )
    # And /readyz names what is down
    ready = await http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["down"] == ["celery_broker", "channel_layer", "redis"]
    # And a handshake is accepted, told why, and closed with 1011 (not an HTTP 500)
    handshake = await _socket(server, conversation_id, "any-ticket")
    frame = await _frame(handshake)
    assert (frame["type"], frame["code"], frame["retryable"]) == ("error", "unavailable", True)
    assert await _closed_with(handshake) == 1011

    # When Redis is back on the same port (empty: it kept nothing)
    redis.start()

    # Then everything works again without restarting the server
    assert (await _ready(http)).status_code == 200
    ticket = await _ticket(http, headers, conversation_id)
    assert ticket.status_code == 200, ticket.text
    async with await _socket(server, conversation_id, ticket.json()["ticket"]) as again:
        await again.send(json.dumps({"type": "message", "content": "are you back?"}))
        frames = await _frames_until(again, "reply.end")
    assert frames[0]["type"] == "message.created"
    assert frames[-1]["status"] == "complete"  # llmock's default answer: the scenario above was used up

    # And the log never claimed that the stored reply failed to store, nor had a 500
    log = server.log_path.read_text()
    assert "storing the reply failed" not in log
    assert "Internal Server Error" not in log
    assert "Exception in ASGI application" not in log


async def test_a_server_started_while_redis_is_down_says_so_and_recovers(
    database: LiveDatabase, model: LlmockServer, redis: RedisServer
) -> None:
    # Given Redis down before the server starts
    redis.kill()

    with live_server(database=database, llm_base_url=model.base_url, redis_url=redis.url) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=FRAME_TIMEOUT) as http:
            # Then the server starts, says which Redis it cannot reach, and is live but not ready
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 503
            startup = [line for line in server.log_tail(20000).splitlines() if "is unreachable" in line]
            assert len(startup) == 1
            assert f"Redis at redis://127.0.0.1:{redis.port}/0 is unreachable" in startup[0]
            _assert_unavailable(await http.post("/api/auth/token", json={"username": "nobody", "password": "x"}))

            # When Redis comes up
            redis.start()

            # Then the same process serves requests that need it
            assert (await _ready(http)).status_code == 200
            headers = await _account(http)
            conversation_id = await _conversation(http, headers)
            assert (await _ticket(http, headers, conversation_id)).status_code == 200
