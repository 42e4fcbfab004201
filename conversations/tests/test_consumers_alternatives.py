"""The websocket frames regenerate, edit, select and forget, with a slow fake model from the registry."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async

from conversations.models import Conversation, Message, Role, Status
from conversations.tests.providers import SlowFakeProvider
from llm.testing import provider_configured
from testing.support import ConversationFactory, MessageFactory, ws_connect, ws_receive_until

pytestmark = pytest.mark.django_db(transaction=True)

PIECES = len(SlowFakeProvider().pieces())


@pytest.fixture(autouse=True)
def fake_model() -> Iterator[None]:
    with provider_configured("conversations.tests.providers.SlowFakeProvider"):
        yield


@pytest.fixture
async def conversation() -> Conversation:
    return await database_sync_to_async(ConversationFactory)()


async def _exchange(ws: Any, content: str) -> list[dict[str, Any]]:
    await ws.send_to(text_data=json.dumps({"type": "message", "content": content}))
    return await ws_receive_until(ws, "reply.end")


async def test_regenerate_streams_to_every_socket_and_select_switches_back(conversation: Conversation) -> None:
    phone = await ws_connect(conversation)
    tablet = await ws_connect(conversation)
    first_turn = await _exchange(phone, "hello")
    await ws_receive_until(tablet, "reply.end")
    first_id = first_turn[-1]["message_id"]

    # When the phone asks for another reply
    await phone.send_to(text_data=json.dumps({"type": "regenerate"}))
    on_phone = await ws_receive_until(phone, "reply.end")
    on_tablet = await ws_receive_until(tablet, "reply.end")

    # Then both sockets see it streamed like a reply, seq from 0, announced as an alternative
    assert on_phone == on_tablet
    assert on_phone[0]["type"] == "reply.start"
    second_id = on_phone[0]["message_id"]
    assert on_phone[0]["alternatives"] == [first_id, second_id]
    assert [f["seq"] for f in on_phone if f["type"] == "token"] == list(range(PIECES))
    assert on_phone[-1]["status"] == "complete"

    # When the tablet selects the first reply again
    await tablet.send_to(text_data=json.dumps({"type": "select", "message_id": first_id}))
    selected_phone = await ws_receive_until(phone, "alternative.selected")
    selected_tablet = await ws_receive_until(tablet, "alternative.selected")
    assert selected_phone[-1] == selected_tablet[-1]
    assert (selected_phone[-1]["message_id"], selected_phone[-1]["alternatives"]) == (first_id, [first_id, second_id])
    superseded = await database_sync_to_async(
        lambda: dict(Message.objects.filter(pk__in=[first_id, second_id]).values_list("id", "superseded"))
    )()
    assert superseded == {first_id: False, second_id: True}
    await phone.disconnect()
    await tablet.disconnect()


async def test_a_stop_reaches_a_regeneration_and_resume_replays_it(conversation: Conversation) -> None:
    ws = await ws_connect(conversation)
    await _exchange(ws, "tell me everything")
    await ws.send_to(text_data=json.dumps({"type": "regenerate"}))
    start = (await ws_receive_until(ws, "reply.start"))[-1]
    await ws_receive_until(ws, "token")

    # A second device resumes mid-regeneration: it gets the reply so far with its seq
    late = await ws_connect(conversation)
    await late.send_to(text_data=json.dumps({"type": "resume", "after": start["message_id"]}))
    resumed = await ws_receive_until(late, "token")
    assert resumed[0] == {"type": "reply.start", "message_id": start["message_id"], "mode": "secretary"}
    assert resumed[-1]["seq"] == 0

    # And a regenerate while it streams is busy; a stop ends it cancelled
    await ws.send_to(text_data=json.dumps({"type": "regenerate"}))
    assert (await ws_receive_until(ws, "error"))[-1]["code"] == "busy"
    await ws.send_to(text_data=json.dumps({"type": "stop"}))
    end = (await ws_receive_until(ws, "reply.end"))[-1]
    assert end["status"] == "cancelled"
    reply = await database_sync_to_async(Message.objects.get)(pk=start["message_id"])
    assert (reply.status, reply.superseded) == (Status.CANCELLED, False)
    assert (
        await database_sync_to_async(Message.objects.filter(conversation=conversation, role=Role.ASSISTANT).count)()
        == 2
    )
    await ws.disconnect()
    await late.disconnect()


async def test_edit_and_forget_frames(conversation: Conversation) -> None:
    ws = await ws_connect(conversation)
    first = await _exchange(ws, "hello")
    user_id = first[0]["message"]["id"]

    await ws.send_to(text_data=json.dumps({"type": "edit", "message_id": user_id, "content": "good evening"}))
    frames = await ws_receive_until(ws, "reply.end")
    assert frames[0]["type"] == "message.updated"
    assert frames[0]["message"]["content"] == "good evening"
    assert frames[-1]["status"] == "complete"

    await ws.send_to(text_data=json.dumps({"type": "forget", "message_id": user_id}))
    deleted = (await ws_receive_until(ws, "message.deleted"))[-1]
    assert deleted["message_ids"][0] == user_id
    assert len(deleted["message_ids"]) == 2
    assert not await database_sync_to_async(Message.objects.filter(conversation=conversation).exists)()
    await ws.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "select"}, "invalid"),
        ({"type": "select", "message_id": "7"}, "invalid"),
        ({"type": "forget", "message_id": True}, "invalid"),
        ({"type": "edit", "message_id": 1}, "invalid"),
        ({"type": "regenerate"}, "conflict"),  # nothing of the user's to answer again
        ({"type": "regenerate", "message_id": 0}, "invalid"),
    ],
)
async def test_bad_frames_are_refused_and_store_nothing(
    conversation: Conversation, frame: dict[str, object], code: str
) -> None:
    ws = await ws_connect(conversation)

    await ws.send_to(text_data=json.dumps(frame))

    error = (await ws_receive_until(ws, "error"))[-1]
    assert error["code"] == code
    assert not await database_sync_to_async(Message.objects.filter(conversation=conversation).exists)()
    await ws.disconnect()


async def test_another_conversations_or_users_message_is_not_found(conversation: Conversation) -> None:
    foreign = await database_sync_to_async(MessageFactory)(role=Role.ASSISTANT)
    own_elsewhere = await database_sync_to_async(MessageFactory)(
        conversation=await database_sync_to_async(ConversationFactory)(user=conversation.user), role=Role.USER
    )
    ws = await ws_connect(conversation)

    for frame in [
        {"type": "select", "message_id": foreign.pk},
        {"type": "forget", "message_id": foreign.pk},
        {"type": "forget", "message_id": own_elsewhere.pk},
        {"type": "edit", "message_id": own_elsewhere.pk, "content": "x"},
    ]:
        await ws.send_to(text_data=json.dumps(frame))
        assert (await ws_receive_until(ws, "error"))[-1]["code"] == "not_found", frame

    assert await database_sync_to_async(Message.objects.filter(pk__in=[foreign.pk, own_elsewhere.pk]).count)() == 2
    await ws.disconnect()
