"""Clients of a live server for end-to-end tests: accounts, conversations and websockets.

Used with `testing.live_server` (the server processes) and `llm.testing` (llmock): they speak
to the server only as a client does, over HTTP and websockets, so they need no Django set-up.

    with live_database() as database, llmock_server() as llm, live_server(...) as server:
        account = account_register(server, "alice")
        async with httpx.AsyncClient(base_url=server.url) as http:
            conversation_id, frames = await turn_over_a_new_socket(server, http, account, {"content": "hi"})
"""

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from testing.live_server import LiveServer

if TYPE_CHECKING:
    from llm.testing import LlmockServer

PASSWORD = "correct-horse-battery-staple-9"
FRAME_TIMEOUT = 15.0


@dataclass(frozen=True)
class Account:
    username: str
    headers: dict[str, str]


def account_register(server: LiveServer, name: str) -> Account:
    username = f"e2e-{name}-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=server.url, timeout=10) as http:
        created = http.post("/api/auth/register", json={"username": username, "password": PASSWORD})
        assert created.status_code == 201, created.text
        token = http.post("/api/auth/token", json={"username": username, "password": PASSWORD})
        assert token.status_code == 200, token.text
    return Account(username=username, headers={"Authorization": f"Bearer {token.json()['access']}"})


async def conversation_create(http: httpx.AsyncClient, account: Account) -> int:
    avatars = (await http.get("/api/avatars", headers=account.headers)).json()
    ada = next(a for a in avatars if a["slug"] == "ada")
    created = await http.post("/api/conversations", json={"avatar_id": ada["id"]}, headers=account.headers)
    assert created.status_code == 201, created.text
    conversation_id: int = created.json()["id"]
    return conversation_id


async def ticket_get(http: httpx.AsyncClient, account: Account, conversation_id: int) -> str:
    answer = await http.post("/api/ws-ticket", json={"conversation_id": conversation_id}, headers=account.headers)
    assert answer.status_code == 200, answer.text
    ticket: str = answer.json()["ticket"]
    return ticket


def socket_url(server: LiveServer, conversation_id: int, ticket: str | None) -> str:
    query = f"?ticket={ticket}" if ticket is not None else ""
    return f"{server.ws_url}/ws/conversations/{conversation_id}/{query}"


async def socket_open(server: LiveServer, http: httpx.AsyncClient, account: Account, conversation_id: int) -> Any:
    ticket = await ticket_get(http, account, conversation_id)
    return await connect(socket_url(server, conversation_id, ticket), origin=Origin(server.url))


async def socket_refused_status(url: str, server: LiveServer) -> int:
    """The HTTP status the handshake was refused with (fails the test if the socket opened)."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, origin=Origin(server.url)):
            pass
    status: int = refused.value.response.status_code
    return status


async def send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    await ws.send(json.dumps(frame))


async def frame_next(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(FRAME_TIMEOUT):
        frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


async def frames_until(ws: ClientConnection, frame_type: str, *, count: int = 1) -> list[dict[str, Any]]:
    """Frames up to and including the `count`-th of `frame_type`."""
    frames: list[dict[str, Any]] = []
    seen = 0
    while seen < count:
        frames.append(await frame_next(ws))
        seen += frames[-1]["type"] == frame_type
    return frames


async def turn_over_a_new_socket(
    server: LiveServer, http: httpx.AsyncClient, account: Account, message: dict[str, Any]
) -> tuple[int, list[dict[str, Any]]]:
    """A new conversation, one `message` frame over a new socket: its id and the frames up to `reply.end`."""
    conversation_id = await conversation_create(http, account)
    async with await socket_open(server, http, account, conversation_id) as ws:
        await send(ws, {"type": "message", **message})
        frames = await frames_until(ws, "reply.end")
    return conversation_id, frames


async def messages_get(http: httpx.AsyncClient, account: Account, conversation_id: int) -> list[dict[str, Any]]:
    page = await http.get(f"/api/conversations/{conversation_id}/messages", headers=account.headers)
    assert page.status_code == 200, page.text
    items: list[dict[str, Any]] = page.json()["items"]
    return items


async def reply_settled(http: httpx.AsyncClient, account: Account, conversation_id: int) -> dict[str, Any]:
    """The last assistant message once it is no longer streaming (polls; the turn ends on its own)."""
    async with asyncio.timeout(FRAME_TIMEOUT):
        while True:
            last = (await messages_get(http, account, conversation_id))[-1]
            if last["role"] == "assistant" and last["status"] != "streaming":
                return last
            await asyncio.sleep(0.05)


def stream_requests(model: "LlmockServer") -> list[dict[str, Any]]:
    """The chat streams llmock served since its reset (the journal waits for those in flight)."""
    return [r for r in model.requests() if r["stream"]]


def tokens_by_seq(*frame_lists: list[dict[str, Any]]) -> dict[int, str]:
    """Token deltas by `seq`, duplicates dropped, as a client does after a resume."""
    tokens: dict[int, str] = {}
    for frames in frame_lists:
        for frame in frames:
            if frame["type"] == "token":
                tokens.setdefault(frame["seq"], frame["delta"])
    return tokens


def turn_shape(frames: list[dict[str, Any]]) -> list[str]:
    """The frame types with the run of tokens collapsed, e.g. ["message.created", "reply.start", "token*", ...]."""
    shape: list[str] = []
    for frame in frames:
        kind = "token*" if frame["type"] == "token" else frame["type"]
        if not shape or shape[-1] != kind or kind != "token*":
            shape.append(kind)
    return shape
