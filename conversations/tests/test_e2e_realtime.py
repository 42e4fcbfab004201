"""End to end: real server processes, a real websocket client, and llmock as the model.

Each server is a uvicorn process started by `testing.live_server` against a database of
its own (migrated and seeded by subprocesses), so these tests do not use pytest-django's
database: they see only what a client sees, through the REST API and the sockets. llmock
paces its chunks (`CHUNK_DELAY_MS`), so a reply lasts long enough to stop, drop and resume
in the middle of it; its request journal shows, from the model's side, whether our server
read a stream to the end or hung up on it.

The tests marked `redis` start two server processes sharing one Redis (a phone on one, a
tablet on the other): they need `REDIS_URL` (skipped without it outside CI, failed in CI)
and use database 7 of that Redis, which they flush before and after.
"""

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Origin

from llm.testing import LlmockServer, llmock_server
from testing.e2e import (
    FRAME_TIMEOUT,
    Account,
    account_register,
    conversation_create,
    frame_next,
    frames_until,
    messages_get,
    reply_settled,
    send,
    socket_open,
    socket_refused_status,
    socket_url,
    stream_requests,
    ticket_get,
    tokens_by_seq,
    turn_over_a_new_socket,
    turn_shape,
)
from testing.live_server import LiveDatabase, LiveServer, live_database, live_server
from testing.support import skip_or_fail

pytestmark = pytest.mark.e2e

CHUNK_DELAY_MS = 25
REPLY_WORDS = 40
REPLY = " ".join(f"word{i}" for i in range(REPLY_WORDS))  # 40 chunks, 25 ms apart: a reply lasts about 1 s
# For a stop or a resume that comes after a few round trips (a ticket, a handshake, another
# process): 3 s, so the model is still generating whatever the load on the machine.
LONG_REPLY_WORDS = 120
LONG_REPLY = " ".join(f"word{i}" for i in range(LONG_REPLY_WORDS))
REDIS_TEST_DB = 7


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def database() -> Iterator[LiveDatabase]:
    with live_database() as db:
        yield db


@pytest.fixture(scope="module")
def model_process() -> Iterator[LlmockServer]:
    with llmock_server(chunk_delay_ms=CHUNK_DELAY_MS) as llm:
        yield llm


@pytest.fixture
def model(model_process: LlmockServer) -> LlmockServer:
    """llmock with an empty journal; the next streamed request answers `REPLY`."""
    model_process.reset()
    model_process.scenario({"type": "reply", "text": REPLY, "match": {"stream": True}})
    return model_process


@pytest.fixture
def long_model(model: LlmockServer) -> LlmockServer:
    """llmock whose next streamed request answers `LONG_REPLY`."""
    model.reset()
    model.scenario({"type": "reply", "text": LONG_REPLY, "match": {"stream": True}})
    return model


@pytest.fixture(scope="module")
def server(database: LiveDatabase, model_process: LlmockServer) -> Iterator[LiveServer]:
    with live_server(database=database, llm_base_url=model_process.base_url) as live:
        yield live


@pytest.fixture(scope="module")
def alice(server: LiveServer) -> Account:
    return account_register(server, "alice")


@pytest.fixture(scope="module")
def bob(server: LiveServer) -> Account:
    return account_register(server, "bob")


@pytest.fixture
async def http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=FRAME_TIMEOUT) as client:
        yield client


# --- streaming -----------------------------------------------------------------------------------


async def test_a_message_streams_its_reply_in_contract_order(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, model: LlmockServer
) -> None:
    message = {"content": "hello", "client_id": "c-1"}
    conversation_id, frames = await turn_over_a_new_socket(server, http, alice, message)

    assert turn_shape(frames) == ["message.created", "notice", "reply.start", "token*", "reply.end"]
    created, _notice, start, *tokens, end = frames
    assert (created["message"]["content"], created["message"]["client_id"]) == ("hello", "c-1")
    assert start["message_id"] == end["message_id"]
    assert [t["seq"] for t in tokens] == list(range(REPLY_WORDS))
    assert {t["message_id"] for t in tokens} == {start["message_id"]}
    assert "".join(t["delta"] for t in tokens) == REPLY
    assert (end["status"], end["finish_reason"], end["content"]) == ("complete", "stop", REPLY)
    stored = await messages_get(http, alice, conversation_id)
    assert [(m["role"], m["content"], m["status"]) for m in stored[1:]] == [
        ("user", "hello", "complete"),
        ("assistant", REPLY, "complete"),
    ]
    (upstream,) = stream_requests(model)
    assert upstream["completed"] is True


async def test_stop_ends_the_reply_as_cancelled_stores_its_text_and_closes_the_upstream_stream(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, model: LlmockServer
) -> None:
    conversation_id = await conversation_create(http, alice)
    async with await socket_open(server, http, alice, conversation_id) as ws:
        await send(ws, {"type": "message", "content": "ramble"})
        before_stop = await frames_until(ws, "token", count=3)

        await send(ws, {"type": "stop"})
        after_stop = await frames_until(ws, "reply.end")

    end = after_stop[-1]
    tokens = tokens_by_seq(before_stop, after_stop)
    assert (end["status"], end["finish_reason"]) == ("cancelled", "cancelled")
    assert sorted(tokens) == list(range(len(tokens)))
    assert end["content"] == "".join(tokens[seq] for seq in sorted(tokens))
    assert 3 <= len(tokens) < REPLY_WORDS
    assert REPLY.startswith(end["content"])
    reply = (await messages_get(http, alice, conversation_id))[-1]
    assert (reply["id"], reply["status"], reply["content"]) == (end["message_id"], "cancelled", end["content"])
    # From the model's side: we hung up before the end, so it stopped generating.
    (upstream,) = stream_requests(model)
    assert upstream["completed"] is False
    assert upstream["chunks_sent"] < REPLY_WORDS


async def test_a_model_connection_dropped_mid_reply_is_resumed_and_the_user_sees_every_word_once(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, model: LlmockServer
) -> None:
    model.reset()
    model.scenario(
        {"type": "reply", "text": REPLY, "times": 2, "match": {"stream": True}},
        {"type": "stream_fault", "kind": "disconnect", "after_chunks": 10},
    )
    conversation_id, frames = await turn_over_a_new_socket(server, http, alice, {"content": "tell me everything"})

    assert turn_shape(frames) == ["message.created", "notice", "reply.start", "token*", "reply.end"]  # no error frame
    tokens = [f for f in frames if f["type"] == "token"]
    assert [t["seq"] for t in tokens] == list(range(len(tokens)))
    assert "".join(t["delta"] for t in tokens) == REPLY  # each word once, none missing
    end = frames[-1]
    assert (end["status"], end["content"]) == ("complete", REPLY)
    assert (await messages_get(http, alice, conversation_id))[-1]["content"] == REPLY
    dropped, replayed = stream_requests(model)
    assert (dropped["fault"], dropped["completed"], replayed["completed"]) == ("stream:disconnect@10", False, True)
    assert replayed["body"] == dropped["body"]
    model.verdict_assert_clean()


async def test_a_replay_that_differs_keeps_the_text_shown_and_ends_the_reply_as_failed(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, model: LlmockServer
) -> None:
    model.reset()
    model.scenario(
        {"type": "reply", "text": REPLY, "match": {"stream": True}},
        {"type": "stream_fault", "kind": "disconnect", "after_chunks": 10},
        {"type": "reply", "text": "Something else entirely.", "match": {"stream": True}},
    )
    conversation_id, frames = await turn_over_a_new_socket(server, http, alice, {"content": "tell me everything"})

    shown = "".join(f["delta"] for f in frames if f["type"] == "token")
    assert shown == REPLY[: len(shown)]
    assert 0 < len(shown) < len(REPLY)
    assert "Something" not in shown
    end = frames[-1]
    assert (end["status"], end["content"], end["error"]["code"]) == ("failed", shown, "llm_connection_dropped")
    stored = (await messages_get(http, alice, conversation_id))[-1]
    assert (stored["status"], stored["content"]) == ("failed", shown)


async def test_a_message_while_a_reply_streams_is_refused_as_busy_and_not_stored(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, model: LlmockServer
) -> None:
    conversation_id = await conversation_create(http, alice)
    async with await socket_open(server, http, alice, conversation_id) as ws:
        await send(ws, {"type": "message", "content": "first"})
        await frames_until(ws, "token")

        await send(ws, {"type": "message", "content": "second"})
        frames = await frames_until(ws, "reply.end")

    errors = [f for f in frames if f["type"] == "error"]
    assert [(e["code"], e["retryable"]) for e in errors] == [("busy", True)]
    assert frames[-1]["status"] == "complete"
    stored = await messages_get(http, alice, conversation_id)
    assert [m["content"] for m in stored if m["role"] == "user"] == ["first"]
    assert len(stream_requests(model)) == 1  # the refused message never reached the model


BAD_FRAMES: list[tuple[str | bytes, str]] = [
    ("not json", "invalid_json"),
    (b"\x00binary", "invalid_frame"),
    ("[1, 2]", "invalid_frame"),
    (json.dumps({"content": "no type"}), "invalid_frame"),
    (json.dumps({"type": "dance"}), "unknown_type"),
    (json.dumps({"type": "message"}), "invalid"),
    (json.dumps({"type": "message", "content": 42}), "invalid"),
    (json.dumps({"type": "message", "content": "hi", "max_tokens": "lots"}), "invalid"),
    (json.dumps({"type": "message", "content": "hi", "colour": "red"}), "invalid"),
    (json.dumps({"type": "resume", "after": "x"}), "invalid"),
    (json.dumps({"type": "message", "content": "x" * (64 * 1024 + 1)}), "too_large"),
]


async def test_bad_frames_get_an_error_frame_with_a_code_and_the_socket_stays_usable(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, model: LlmockServer
) -> None:
    conversation_id = await conversation_create(http, alice)
    async with await socket_open(server, http, alice, conversation_id) as ws:
        answers = []
        for raw, _ in BAD_FRAMES:
            await ws.send(raw)
            answers.append(await frame_next(ws))
        await send(ws, {"type": "ping"})
        pong = await frame_next(ws)
        await send(ws, {"type": "message", "content": "still-there"})
        turn = await frames_until(ws, "reply.end")

    assert [(a["type"], a["code"]) for a in answers] == [("error", code) for _, code in BAD_FRAMES]
    assert pong == {"type": "pong"}
    assert turn[-1]["status"] == "complete"
    stored = await messages_get(http, alice, conversation_id)
    assert [m["content"] for m in stored if m["role"] == "user"] == ["still-there"]  # nothing refused was stored


# --- resume ----------------------------------------------------------------------------------------


async def test_a_dropped_socket_resumes_without_losing_a_word(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, long_model: LlmockServer
) -> None:
    conversation_id = await conversation_create(http, alice)
    phone = await socket_open(server, http, alice, conversation_id)
    await send(phone, {"type": "message", "content": "story"})
    before_drop = await frames_until(phone, "token", count=3)
    user_message_id = before_drop[0]["message"]["id"]
    phone.transport.abort()  # the network goes: no closing handshake

    async with await socket_open(server, http, alice, conversation_id) as phone_again:
        await send(phone_again, {"type": "resume", "after": user_message_id})
        after_resume = await frames_until(phone_again, "reply.end")

    end = after_resume[-1]
    tokens = tokens_by_seq(before_drop, after_resume)
    assert sorted(tokens) == list(range(LONG_REPLY_WORDS))  # every seq, once duplicates are dropped
    assert "".join(tokens[seq] for seq in sorted(tokens)) == LONG_REPLY == end["content"]
    assert "reply.start" in [f["type"] for f in after_resume]  # the resumed reply is announced again
    assert end["status"] == "complete"  # the reply outlived the socket that asked for it
    reply = (await messages_get(http, alice, conversation_id))[-1]
    assert (reply["status"], reply["content"]) == ("complete", LONG_REPLY)


async def test_resume_sends_the_messages_the_client_missed(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, model: LlmockServer
) -> None:
    conversation_id = await conversation_create(http, alice)
    greeting_id = (await messages_get(http, alice, conversation_id))[0]["id"]
    async with await socket_open(server, http, alice, conversation_id) as ws:
        await send(ws, {"type": "message", "content": "hello"})
        await frames_until(ws, "reply.end")

    async with await socket_open(server, http, alice, conversation_id) as later:
        await send(later, {"type": "resume", "after": greeting_id})
        missed = [await frame_next(later), await frame_next(later)]
        await send(later, {"type": "ping"})
        pong = await frame_next(later)

    assert [(f["type"], f["resumed"], f["message"]["role"]) for f in missed] == [
        ("message.created", True, "user"),
        ("message.created", True, "assistant"),
    ]
    assert missed[1]["message"]["content"] == REPLY
    assert pong == {"type": "pong"}  # no reply in flight: nothing else was sent


# --- who may connect ---------------------------------------------------------------------------


async def test_another_users_conversation_gets_neither_a_ticket_nor_a_socket(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, bob: Account, model: LlmockServer
) -> None:
    alices = await conversation_create(http, alice)
    bobs = await conversation_create(http, bob)

    foreign_ticket = await http.post("/api/ws-ticket", json={"conversation_id": alices}, headers=bob.headers)
    bobs_ticket = await ticket_get(http, bob, bobs)
    with_bobs_ticket = await socket_refused_status(socket_url(server, alices, bobs_ticket), server)
    forged = await socket_refused_status(socket_url(server, alices, "forged-" + uuid.uuid4().hex), server)
    without = await socket_refused_status(socket_url(server, alices, None), server)

    assert foreign_ticket.status_code == 404
    assert foreign_ticket.json()["code"] == "not_found"
    assert (with_bobs_ticket, forged, without) == (403, 403, 403)
    assert [m["role"] for m in await messages_get(http, alice, alices)] == ["assistant"]  # only the greeting
    assert stream_requests(model) == []


async def test_a_ticket_opens_one_socket_only(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, model: LlmockServer
) -> None:
    conversation_id = await conversation_create(http, alice)
    ticket = await ticket_get(http, alice, conversation_id)
    url = socket_url(server, conversation_id, ticket)

    async with connect(url, origin=Origin(server.url)) as first:
        await send(first, {"type": "ping"})
        assert await frame_next(first) == {"type": "pong"}
        reused = await socket_refused_status(url, server)

    assert reused == 403


# --- SSE -----------------------------------------------------------------------------------------


class SseReader:
    """Server-sent events of one response, read as they come (one reader per response: httpx streams once)."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def frames_until(self, frame_type: str, *, count: int = 1) -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = []
        fields: dict[str, str] = {}
        seen = 0
        async with asyncio.timeout(FRAME_TIMEOUT):
            while seen < count:
                line = await anext(self.lines)
                if line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                    continue
                frame: dict[str, Any] = json.loads(fields.pop("data"))
                assert fields.pop("event") == frame["type"]
                frames.append(frame)
                seen += frame["type"] == frame_type
        return frames


async def test_sse_streams_the_same_events_as_the_websocket(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, model: LlmockServer
) -> None:
    conversation_id = await conversation_create(http, alice)
    async with await socket_open(server, http, alice, conversation_id) as watcher:
        async with http.stream(
            "POST",
            f"/api/conversations/{conversation_id}/messages",
            json={"content": "hello"},
            headers={**alice.headers, "Accept": "text/event-stream"},
        ) as response:
            sse = await SseReader(response).frames_until("reply.end")
        on_socket = await frames_until(watcher, "reply.end")

    assert (response.status_code, response.headers["content-type"]) == (201, "text/event-stream")
    assert turn_shape(sse) == ["message.created", "notice", "reply.start", "token*", "reply.end"]
    assert sse == on_socket
    assert (sse[-1]["status"], sse[-1]["content"]) == ("complete", REPLY)


async def test_an_sse_client_that_disconnects_cancels_the_reply(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, model: LlmockServer
) -> None:
    conversation_id = await conversation_create(http, alice)
    async with http.stream(
        "POST",
        f"/api/conversations/{conversation_id}/messages",
        json={"content": "ramble"},
        headers={**alice.headers, "Accept": "text/event-stream"},
    ) as response:
        received = await SseReader(response).frames_until("token", count=3)
    # Leaving the block closed the connection mid-stream.

    reply = await reply_settled(http, alice, conversation_id)
    assert reply["status"] == "cancelled"
    assert reply["id"] == received[2]["message_id"]  # after message.created and the AI notice
    words = reply["content"].split()
    assert 3 <= len(words) < REPLY_WORDS
    assert REPLY.startswith(reply["content"])
    (upstream,) = stream_requests(model)
    assert upstream["completed"] is False
    assert upstream["chunks_sent"] < REPLY_WORDS


async def test_a_batch_client_that_hangs_up_still_gets_its_reply_stored(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, model: LlmockServer
) -> None:
    conversation_id = await conversation_create(http, alice)

    with pytest.raises(httpx.ReadTimeout):  # the client gives up long before the reply is done
        await http.post(
            f"/api/conversations/{conversation_id}/messages",
            json={"content": "hello"},
            headers=alice.headers,
            timeout=httpx.Timeout(10, read=0.3),
        )

    reply = await reply_settled(http, alice, conversation_id)
    assert (reply["status"], reply["content"]) == ("complete", REPLY)
    (upstream,) = stream_requests(model)
    assert upstream["completed"] is True


# --- two server processes sharing Redis ------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    a: LiveServer
    b: LiveServer


def redis_test_url() -> str:
    """The Redis of REDIS_URL, database `REDIS_TEST_DB`: ours alone, so flushing it harms no one."""
    configured = os.environ.get("REDIS_URL", "")
    if not configured:
        skip_or_fail("REDIS_URL is not set: the fan-out across processes needs a shared Redis")
    return urlsplit(configured)._replace(path=f"/{REDIS_TEST_DB}").geturl()


@pytest.fixture(scope="module")
def pair(database: LiveDatabase, model_process: LlmockServer) -> Iterator[Pair]:
    import redis

    url = redis_test_url()
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        skip_or_fail(f"Redis at {url} is unreachable: {exc}")
    client.flushdb()
    try:
        with ExitStack() as stack:
            a, b = (
                stack.enter_context(live_server(database=database, llm_base_url=model_process.base_url, redis_url=url))
                for _ in range(2)
            )
            yield Pair(a=a, b=b)
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(scope="module")
def carol(pair: Pair) -> Account:
    return account_register(pair.a, "carol")


@pytest.mark.redis
async def test_a_socket_stays_open_while_its_process_waits_on_redis_longer_than_a_blocking_read(
    pair: Pair, carol: Account, model: LlmockServer
) -> None:
    # channels_redis waits for messages with a 5 s BZPOPMIN; a Redis client whose socket timeout
    # is not longer than that (redis-py 8 defaults to 5 s) fails the read and kills the socket.
    async with httpx.AsyncClient(base_url=pair.a.url, timeout=FRAME_TIMEOUT) as http_a:
        conversation_id = await conversation_create(http_a, carol)
        async with await socket_open(pair.b, http_a, carol, conversation_id) as quiet:
            await asyncio.sleep(6.5)  # not a timing assertion: a quiet spell longer than one blocking read
            await send(quiet, {"type": "ping"})
            pong = await frame_next(quiet)

    assert pong == {"type": "pong"}


@pytest.mark.redis
async def test_two_devices_on_two_server_processes_see_the_same_reply_stream(
    pair: Pair, carol: Account, model: LlmockServer
) -> None:
    async with httpx.AsyncClient(base_url=pair.a.url, timeout=FRAME_TIMEOUT) as http_a:
        conversation_id = await conversation_create(http_a, carol)
        async with (
            await socket_open(pair.a, http_a, carol, conversation_id) as phone,
            await socket_open(pair.b, http_a, carol, conversation_id) as tablet,
        ):
            await send(phone, {"type": "message", "content": "hello"})
            on_phone = await frames_until(phone, "reply.end")
            on_tablet = await frames_until(tablet, "reply.end")

    assert turn_shape(on_phone) == ["message.created", "notice", "reply.start", "token*", "reply.end"]
    assert on_tablet == on_phone
    assert on_phone[-1]["content"] == REPLY


@pytest.mark.redis
async def test_stop_from_a_device_on_the_other_process_cancels_the_reply(
    pair: Pair, carol: Account, long_model: LlmockServer
) -> None:
    async with httpx.AsyncClient(base_url=pair.a.url, timeout=FRAME_TIMEOUT) as http_a:
        conversation_id = await conversation_create(http_a, carol)
        async with (
            await socket_open(pair.a, http_a, carol, conversation_id) as phone,
            await socket_open(pair.b, http_a, carol, conversation_id) as tablet,
        ):
            await send(phone, {"type": "message", "content": "ramble"})  # the turn runs on process a
            await frames_until(tablet, "token", count=3)
            await send(tablet, {"type": "stop"})  # from process b
            on_tablet = await frames_until(tablet, "reply.end")
            on_phone = await frames_until(phone, "reply.end")
        reply = (await messages_get(http_a, carol, conversation_id))[-1]

    assert on_tablet[-1]["status"] == on_phone[-1]["status"] == "cancelled"
    assert (reply["status"], reply["content"]) == ("cancelled", on_phone[-1]["content"])
    (upstream,) = stream_requests(long_model)
    assert upstream["completed"] is False


@pytest.mark.redis
async def test_a_phone_that_drops_resumes_on_the_other_process_without_losing_a_word(
    pair: Pair, carol: Account, long_model: LlmockServer
) -> None:
    async with httpx.AsyncClient(base_url=pair.a.url, timeout=FRAME_TIMEOUT) as http_a:
        conversation_id = await conversation_create(http_a, carol)
        phone = await socket_open(pair.a, http_a, carol, conversation_id)
        await send(phone, {"type": "message", "content": "story"})
        before_drop = await frames_until(phone, "token", count=3)
        phone.transport.abort()  # the turn keeps running on process a, with no socket of its own there
        await asyncio.sleep(0.3)  # not a timing assertion: let process a see the drop before the phone is back

        async with await socket_open(pair.b, http_a, carol, conversation_id) as phone_again:
            await send(phone_again, {"type": "resume", "after": before_drop[0]["message"]["id"]})
            after_resume = await frames_until(phone_again, "reply.end")

    tokens = tokens_by_seq(before_drop, after_resume)
    assert sorted(tokens) == list(range(LONG_REPLY_WORDS))
    assert "".join(tokens[seq] for seq in sorted(tokens)) == LONG_REPLY == after_resume[-1]["content"]


@pytest.mark.redis
async def test_a_reply_streaming_over_sse_on_one_process_is_resumed_and_stopped_from_the_other(
    pair: Pair, carol: Account, long_model: LlmockServer
) -> None:
    async with httpx.AsyncClient(base_url=pair.a.url, timeout=FRAME_TIMEOUT) as http_a:
        conversation_id = await conversation_create(http_a, carol)
        async with http_a.stream(
            "POST",
            f"/api/conversations/{conversation_id}/messages",
            json={"content": "ramble"},
            headers={**carol.headers, "Accept": "text/event-stream"},
        ) as response:
            # The turn runs on process a, where no websocket of this conversation is open.
            reader = SseReader(response)
            on_sse = await reader.frames_until("token", count=3)
            async with await socket_open(pair.b, http_a, carol, conversation_id) as tablet:
                await send(tablet, {"type": "resume", "after": on_sse[0]["message"]["id"]})
                resumed = await frames_until(tablet, "reply.start")  # live tokens may come first
                await send(tablet, {"type": "stop"})
                on_tablet = resumed + await frames_until(tablet, "reply.end")
            on_sse += await reader.frames_until("reply.end")
        reply = (await messages_get(http_a, carol, conversation_id))[-1]

    assert resumed[-1] == {"type": "reply.start", "message_id": reply["id"], "mode": "secretary"}
    tokens = tokens_by_seq(on_tablet)
    assert sorted(tokens) == list(range(len(tokens)))  # from seq 0: the reply so far, then live
    assert on_tablet[-1]["status"] == on_sse[-1]["status"] == reply["status"] == "cancelled"
    assert "".join(tokens[seq] for seq in sorted(tokens)) == on_sse[-1]["content"] == reply["content"]
    (upstream,) = stream_requests(long_model)
    assert upstream["completed"] is False
