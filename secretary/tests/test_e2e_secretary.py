"""End to end, as a user in New York lives it: "remind me to stretch", the action, then the reminder.

A real uvicorn server on embedded defaults (its in-process scheduler delivers reminders, as
`make run` does), llmock as the model scripting the tool call over real HTTP, and two
sockets of the same user: the reminder arrives on both, stored once.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from llm.testing import LlmockServer, llmock_server
from testing.e2e import (
    FRAME_TIMEOUT,
    Account,
    account_register,
    conversation_create,
    frame_next,
    frames_until,
    messages_get,
    send,
    socket_open,
)
from testing.live_server import LiveDatabase, LiveServer, live_database, live_server

pytestmark = pytest.mark.e2e

NEW_YORK = ZoneInfo("America/New_York")
CONFIRMATION_WORDS = "Done, I'll remind you."
DELIVERY_TIMEOUT = 20.0  # the due time is at most a minute back (see due_now), so this is the scheduler's delay


@pytest.fixture(scope="module")
def database() -> Iterator[LiveDatabase]:
    with live_database() as db:
        yield db


@pytest.fixture(scope="module")
def model() -> Iterator[LlmockServer]:
    with llmock_server() as llm:
        yield llm


@pytest.fixture(scope="module")
def server(database: LiveDatabase, model: LlmockServer) -> Iterator[LiveServer]:
    # As `make run` serves on embedded defaults: its own scheduler delivers (test servers have it off).
    with live_server(
        database=database, llm_base_url=model.base_url, extra_env={"SCHEDULER_IN_PROCESS": "true"}
    ) as live:
        yield live


@pytest.fixture
async def http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=FRAME_TIMEOUT) as client:
        yield client


async def due_now() -> str:
    """This minute in New York, as the model would give it: due at once, yet not refused as past
    (a minute of grace), provided a few seconds of the minute are left."""
    now = datetime.now(NEW_YORK)
    if now.second > 45:
        await asyncio.sleep(61 - now.second)
        now = datetime.now(NEW_YORK)
    return now.strftime("%Y-%m-%dT%H:%M")


async def test_a_new_yorker_asks_for_a_reminder_sees_the_action_and_gets_it_on_every_device_once(
    server: LiveServer, http: httpx.AsyncClient, model: LlmockServer
) -> None:
    # Given a user in New York with a secretary conversation open on two devices
    alice: Account = account_register(server, "ny")
    profile = await http.patch("/api/me", json={"timezone": "America/New_York"}, headers=alice.headers)
    assert profile.status_code == 200, profile.text
    conversation_id = await conversation_create(http, alice)
    due = await due_now()
    model.reset()
    model.scenario(
        {
            "type": "reply",
            "tool_calls": [{"name": "reminder_create", "arguments": {"text": "Stretch", "due_local": due}}],
            "match": {"tools": True},
        },
        {"type": "reply", "text": CONFIRMATION_WORDS, "match": {"stream": True}},
    )
    phone = await socket_open(server, http, alice, conversation_id)
    tablet = await socket_open(server, http, alice, conversation_id)
    try:
        # When they ask, in secretary mode
        await send(phone, {"type": "message", "content": "remind me to stretch in a moment"})
        turn = await frames_until(phone, "reply.end")

        # Then the action says when, in their zone, before the reply's words end
        (action,) = [f for f in turn if f["type"] == "action"]
        local = datetime.strptime(due, "%Y-%m-%dT%H:%M")
        assert action["name"] == "reminder_create"
        assert action["error"] is None
        assert action["result"]["confirmation"] == f"Reminder set for {local:%a} {local.day} {local:%b %H:%M}"
        assert turn[-1]["content"] == CONFIRMATION_WORDS
        # and the model's second round saw the tool's answer
        second = [r for r in model.requests() if r["stream"]][-1]
        assert any(m.get("role") == "tool" for m in second["body"]["messages"])
        reminders = (await http.get("/api/reminders", headers=alice.headers)).json()
        assert [(r["text"], r["timezone"]) for r in reminders] == [("Stretch", "America/New_York")]

        # And when it falls due, both devices get the avatar's reminder, once
        async def reminder_on(ws: Any) -> dict[str, Any]:
            async with asyncio.timeout(DELIVERY_TIMEOUT):
                while True:
                    frame = await frame_next(ws)
                    if frame["type"] == "message.created" and frame["message"].get("origin") == "reminder":
                        return frame["message"]

        on_phone, on_tablet = await asyncio.gather(reminder_on(phone), reminder_on(tablet))
    finally:
        await phone.close()
        await tablet.close()

    assert on_phone["id"] == on_tablet["id"]
    assert on_phone["reminder_id"] == reminders[0]["id"]
    assert on_phone["role"] == "assistant"
    assert on_phone["content"]
    stored = [m for m in await messages_get(http, alice, conversation_id) if m["origin"] == "reminder"]
    assert [m["id"] for m in stored] == [on_phone["id"]]
    assert stored[0]["late"] is False  # on time; the REST page says so as the frame does
    sent = (await http.get("/api/reminders?status=sent", headers=alice.headers)).json()
    assert [r["id"] for r in sent] == [reminders[0]["id"]]
    listed = (await http.get(f"/api/conversations/{conversation_id}", headers=alice.headers)).json()
    assert listed["unread"] == 1
    # Nothing more arrives later: one reminder, one message.
    await asyncio.sleep(2)
    again = [m for m in await messages_get(http, alice, conversation_id) if m["origin"] == "reminder"]
    assert len(again) == 1
    assert timedelta(0) <= datetime.now(NEW_YORK) - local.replace(tzinfo=NEW_YORK) < timedelta(minutes=3)
