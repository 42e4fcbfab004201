"""No secret reaches a log across a websocket session (#18): tickets, tokens and message text.

A real uvicorn process logging at DEBUG (our loggers) and INFO with its access log on (as the
production command runs it), llmock as the model; a client that fails to authenticate, opens
a socket, sends bad frames, has a turn succeed and a turn fail. Then the server's whole log
is searched for every secret it was given.
"""

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from llm.testing import LlmockServer, llmock_server
from testing.e2e import (
    FRAME_TIMEOUT,
    account_register,
    conversation_create,
    frames_until,
    send,
    socket_url,
    ticket_get,
)
from testing.live_server import LiveServer, live_database, live_server

pytestmark = [pytest.mark.e2e, pytest.mark.llmock]

MESSAGE = "planted secret message 8812"
FAILING_MESSAGE = "planted secret failing turn 4471"
BAD_FRAME_TEXT = "planted secret in a bad frame 3390"
FORGED_TICKET = "planted-forged-ticket-5150"
REPLY = "planted secret reply 6021"


@pytest.fixture(scope="module")
def model() -> Iterator[LlmockServer]:
    with llmock_server() as llm:
        yield llm


@pytest.fixture(scope="module")
def server(model: LlmockServer) -> Iterator[LiveServer]:
    # No retries: the failing turn fails at once.
    extra_env = {"LOG_LEVEL": "DEBUG", "LLM_MAX_RETRIES": "0"}
    with (
        live_database() as database,
        live_server(database=database, llm_base_url=model.base_url, extra_env=extra_env, log_level="info") as live,
    ):
        yield live


async def test_no_ticket_token_or_message_text_is_logged_across_a_websocket_session(
    server: LiveServer, model: LlmockServer
) -> None:
    account = account_register(server, "logs")
    token = account.headers["Authorization"].partition(" ")[2]
    secrets = [token, MESSAGE, FAILING_MESSAGE, BAD_FRAME_TEXT, FORGED_TICKET, REPLY]
    async with httpx.AsyncClient(base_url=server.url, timeout=FRAME_TIMEOUT) as http:
        conversation_id = await conversation_create(http, account)

        # Auth failures: a forged ticket, a bad bearer token for a ticket
        with pytest.raises(InvalidStatus):
            async with connect(socket_url(server, conversation_id, FORGED_TICKET), origin=Origin(server.url)):
                pass
        refused = await http.post(
            "/api/ws-ticket", json={"conversation_id": conversation_id}, headers={"Authorization": f"Bearer {token}x"}
        )
        assert refused.status_code == 401

        ticket = await ticket_get(http, account, conversation_id)
        secrets.append(ticket)
        async with connect(socket_url(server, conversation_id, ticket), origin=Origin(server.url)) as ws:
            # Bad frames, each carrying the planted text
            for bad in (
                '{"type": "message", "content": "' + BAD_FRAME_TEXT,
                json.dumps({"type": BAD_FRAME_TEXT}),
                json.dumps({"type": "message", "content": [BAD_FRAME_TEXT]}),
                json.dumps({"type": "message", "content": BAD_FRAME_TEXT, "model": BAD_FRAME_TEXT}),
                json.dumps({"type": "message", "content": BAD_FRAME_TEXT * 3000}),
                json.dumps({"type": "set_mode", "mode": BAD_FRAME_TEXT}),
            ):
                await ws.send(bad)
                error = json.loads(await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT))
                assert error["type"] == "error", error
            await ws.send(BAD_FRAME_TEXT.encode())
            assert json.loads(await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT))["code"] == "invalid_frame"

            # A turn that succeeds, then one that fails upstream
            model.scenario({"type": "reply", "text": REPLY, "match": {"stream": True}})
            await send(ws, {"type": "message", "content": MESSAGE})
            assert (await frames_until(ws, "reply.end"))[-1]["status"] == "complete"
            model.scenario({"type": "fail", "status": 500, "times": 5})
            await send(ws, {"type": "message", "content": FAILING_MESSAGE})
            ended = (await frames_until(ws, "reply.end"))[-1]
            assert ended["status"] in {"failed", "fallback"}, ended

        # The ticket was used: a second socket with it is refused
        with pytest.raises((InvalidStatus, ConnectionClosed)):
            async with connect(socket_url(server, conversation_id, ticket), origin=Origin(server.url)) as again:
                await again.recv()

    await asyncio.sleep(0.5)  # the server writes its last lines
    log = server.log_path.read_text(errors="replace")
    assert "WebSocket /ws/conversations/" in log, "uvicorn's own lines are missing: the test would prove nothing"
    assert '"logger": "companion' in log, "our loggers wrote nothing: the test would prove nothing"
    leaks = [(secret[:12], line[:300]) for line in log.splitlines() for secret in secrets if secret in line]
    assert leaks == [], "\n".join(map(str, leaks))
