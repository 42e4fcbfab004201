"""The chat websocket through Channels' WebsocketCommunicator, with a fake model from the registry."""

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis.exceptions
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from conversations.consumers import FRAME_MAX_BYTES
from conversations.models import Conversation, Message, Role, Status
from conversations.tests.providers import SlowFakeProvider
from conversations.tickets import ws_ticket_issue
from llm.testing import provider_configured
from testing.support import ConversationFactory, UserFactory, ws_application, ws_connect, ws_receive_until

pytestmark = pytest.mark.django_db(transaction=True)

PIECES = len(SlowFakeProvider().pieces())


@pytest.fixture(autouse=True)
def fake_model() -> Iterator[None]:
    with provider_configured("conversations.tests.providers.SlowFakeProvider"):
        yield


@pytest.fixture
async def conversation() -> Conversation:
    return await database_sync_to_async(ConversationFactory)()


async def test_a_message_streams_a_reply_in_contract_order(conversation: Conversation) -> None:
    ws = await ws_connect(conversation)

    await ws.send_to(text_data=json.dumps({"type": "message", "content": "hello", "client_id": "a1"}))
    frames = await ws_receive_until(ws, "reply.end")

    types = [f["type"] for f in frames]
    assert types[0] == "message.created"
    assert frames[0]["message"]["client_id"] == "a1"
    assert types[1:3] == ["notice", "reply.start"]  # the AI notice: the conversation's first turn
    tokens = [f for f in frames if f["type"] == "token"]
    assert [t["seq"] for t in tokens] == list(range(PIECES))
    assert frames[-1]["status"] == "complete"
    assert frames[-1]["content"] == "".join(t["delta"] for t in tokens)
    await ws.disconnect()


async def test_stop_ends_the_reply_as_cancelled_and_keeps_its_text(conversation: Conversation) -> None:
    ws = await ws_connect(conversation)
    await ws.send_to(text_data=json.dumps({"type": "message", "content": "tell me everything"}))
    await ws_receive_until(ws, "token")

    await ws.send_to(text_data=json.dumps({"type": "stop"}))
    frames = await ws_receive_until(ws, "reply.end")

    end = frames[-1]
    assert end["status"] == "cancelled"
    reply = await database_sync_to_async(Message.objects.get)(conversation=conversation, role=Role.ASSISTANT)
    assert reply.status == Status.CANCELLED
    assert reply.content == end["content"]
    assert 0 < len(reply.content.split()) < 40
    await ws.disconnect()


async def test_a_second_message_while_streaming_gets_busy_and_is_not_stored(conversation: Conversation) -> None:
    ws = await ws_connect(conversation)
    await ws.send_to(text_data=json.dumps({"type": "message", "content": "first"}))
    await ws_receive_until(ws, "token")

    await ws.send_to(text_data=json.dumps({"type": "message", "content": "second"}))
    frames = await ws_receive_until(ws, "error")

    assert frames[-1]["code"] == "busy"
    assert frames[-1]["retryable"] is True
    await ws_receive_until(ws, "reply.end")
    contents = await database_sync_to_async(
        lambda: list(
            Message.objects.filter(conversation=conversation, role=Role.USER).values_list("content", flat=True)
        )
    )()
    assert contents == ["first"]
    await ws.disconnect()


async def test_two_sockets_of_the_same_user_see_the_same_stream(conversation: Conversation) -> None:
    phone = await ws_connect(conversation)
    tablet = await ws_connect(conversation)

    await phone.send_to(text_data=json.dumps({"type": "message", "content": "hi both"}))
    on_phone = await ws_receive_until(phone, "reply.end")
    on_tablet = await ws_receive_until(tablet, "reply.end")

    assert on_phone == on_tablet
    await phone.disconnect()
    await tablet.disconnect()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_frame"),
        (json.dumps({"content": "no type"}), "invalid_frame"),
        (json.dumps({"type": "dance"}), "unknown_type"),
        (json.dumps({"type": "message"}), "invalid"),
        (json.dumps({"type": "message", "content": 42}), "invalid"),
        (json.dumps({"type": "message", "content": ""}), "invalid"),
        (json.dumps({"type": "message", "content": "hi", "model": "bad model"}), "invalid"),
        (json.dumps({"type": "message", "content": "hi", "mood": "sunny"}), "invalid"),
        (json.dumps({"type": "set_mode", "mode": "party"}), "invalid"),
        (json.dumps({"type": "resume", "after": "x"}), "invalid"),
        (json.dumps({"type": "message", "content": "x" * (FRAME_MAX_BYTES + 1)}), "too_large"),
    ],
)
async def test_bad_frames_get_an_error_frame_and_the_socket_stays_usable(
    conversation: Conversation, raw: str, code: str
) -> None:
    ws = await ws_connect(conversation)

    await ws.send_to(text_data=raw)
    error = json.loads(await ws.receive_from(timeout=5))
    await ws.send_to(text_data=json.dumps({"type": "ping"}))
    pong = json.loads(await ws.receive_from(timeout=5))

    assert error["type"] == "error"
    assert error["code"] == code
    assert pong == {"type": "pong"}
    assert not await database_sync_to_async(Message.objects.filter(conversation=conversation).exists)()
    await ws.disconnect()


async def test_a_ticket_works_once_and_only_for_its_conversation(conversation: Conversation) -> None:
    ticket = await database_sync_to_async(ws_ticket_issue)(user=conversation.user, conversation_id=conversation.pk)
    other = await database_sync_to_async(ConversationFactory)(user=conversation.user)

    wrong = WebsocketCommunicator(ws_application(), f"/ws/conversations/{other.pk}/?ticket={ticket.ticket}")
    assert (await wrong.connect())[0] is False
    # The mismatched attempt consumed the ticket: it is single-use whatever happened.
    again = WebsocketCommunicator(ws_application(), f"/ws/conversations/{conversation.pk}/?ticket={ticket.ticket}")
    assert (await again.connect())[0] is False
    missing = WebsocketCommunicator(ws_application(), f"/ws/conversations/{conversation.pk}/")
    assert (await missing.connect())[0] is False


async def test_no_ticket_for_another_users_conversation(conversation: Conversation) -> None:
    from core.errors import NotFound

    stranger = await database_sync_to_async(UserFactory)(username="stranger")

    with pytest.raises(NotFound):
        await database_sync_to_async(ws_ticket_issue)(user=stranger, conversation_id=conversation.pk)


async def test_set_mode_locks_and_every_socket_hears_it(conversation: Conversation) -> None:
    phone = await ws_connect(conversation)
    tablet = await ws_connect(conversation)

    await phone.send_to(text_data=json.dumps({"type": "set_mode", "mode": "secretary"}))
    frame = json.loads(await tablet.receive_from(timeout=5))

    assert frame["type"] == "mode"
    assert frame["locked"] is True
    assert frame["reason"]["source"] == "user"
    refreshed = await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)
    assert refreshed.mode_locked is True
    await phone.disconnect()
    await tablet.disconnect()


async def test_intimate_mode_cannot_be_set_without_opt_in(conversation: Conversation) -> None:
    ws = await ws_connect(conversation)

    await ws.send_to(text_data=json.dumps({"type": "set_mode", "mode": "intimate"}))
    frame = json.loads(await ws.receive_from(timeout=5))

    assert frame["type"] == "error"
    assert frame["code"] == "intimate_blocked"
    refreshed = await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)
    assert refreshed.mode == "secretary"
    await ws.disconnect()


async def test_resume_sends_missed_messages_then_the_reply_so_far(conversation: Conversation) -> None:
    phone = await ws_connect(conversation)
    await phone.send_to(text_data=json.dumps({"type": "message", "content": "long answer please"}))
    first = await ws_receive_until(phone, "token")
    user_message_id = first[0]["message"]["id"]
    await phone.disconnect()  # the phone drops mid-reply

    phone_again = await ws_connect(conversation)
    await phone_again.send_to(text_data=json.dumps({"type": "resume", "after": user_message_id - 1}))
    frames = await ws_receive_until(phone_again, "reply.end")

    resumed = [f for f in frames if f["type"] == "message.created"]
    assert [m["message"]["id"] for m in resumed] == [user_message_id]
    tokens: dict[int, str] = {}
    for frame in frames:
        if frame["type"] == "token":
            tokens.setdefault(frame["seq"], frame["delta"])
    assert sorted(tokens) == list(range(PIECES))  # nothing lost once duplicates are dropped by seq
    assert "".join(tokens[i] for i in sorted(tokens)) == frames[-1]["content"]
    assert frames[-1]["status"] == "complete"
    await phone_again.disconnect()


async def test_a_reply_completes_and_is_stored_when_the_asking_socket_drops(conversation: Conversation) -> None:
    ws = await ws_connect(conversation)
    await ws.send_to(text_data=json.dumps({"type": "message", "content": "hello"}))
    await ws_receive_until(ws, "token")

    await ws.disconnect()
    watcher = await ws_connect(conversation)  # another device keeps listening
    await ws_receive_until(watcher, "reply.end")

    reply = await database_sync_to_async(Message.objects.get)(conversation=conversation, role=Role.ASSISTANT)
    assert reply.status == Status.COMPLETE
    assert len(reply.content.split()) == 40
    await watcher.disconnect()


async def test_browsers_from_other_sites_are_refused_and_native_apps_without_origin_are_let_in(
    conversation: Conversation,
) -> None:
    from companion.asgi import application as asgi_application

    async def attempt(headers: list[tuple[bytes, bytes]]) -> bool:
        ticket = await database_sync_to_async(ws_ticket_issue)(user=conversation.user, conversation_id=conversation.pk)
        path = f"/ws/conversations/{conversation.pk}/?ticket={ticket.ticket}"
        communicator = WebsocketCommunicator(asgi_application, path, headers=headers)
        connected, _ = await communicator.connect()
        if connected:
            await communicator.disconnect()
        return bool(connected)

    assert await attempt([(b"origin", b"https://evil.example")]) is False
    assert await attempt([(b"origin", b"http://localhost")]) is True
    assert await attempt([]) is True


async def test_a_refused_message_holds_no_lock_and_the_next_one_is_answered(conversation: Conversation) -> None:
    # Given a socket whose first message names a model no server has
    ws = await ws_connect(conversation)
    await ws.send_to(text_data=json.dumps({"type": "message", "content": "hi", "model": "bad model"}))
    error = json.loads(await ws.receive_from(timeout=5))

    # When the user sends a good message right after
    await ws.send_to(text_data=json.dumps({"type": "message", "content": "hi"}))
    frames = await ws_receive_until(ws, "reply.end")

    # Then the first was refused naming the field, and the second answered, not refused as busy
    assert (error["type"], error["code"], error["field"]) == ("error", "invalid", "model")
    assert [f["type"] for f in frames if f["type"] == "error"] == []
    assert frames[-1]["status"] == "complete"
    await ws.disconnect()


async def test_a_deeply_nested_frame_gets_an_error_frame_and_the_socket_stays_open(conversation: Conversation) -> None:
    # Given a 20 KB frame of nested brackets, within the frame size limit
    ws = await ws_connect(conversation)

    # When it is sent, then a ping
    await ws.send_to(text_data="[" * 10000 + "]" * 10000)
    error = json.loads(await ws.receive_from(timeout=5))
    await ws.send_to(text_data=json.dumps({"type": "ping"}))
    pong = json.loads(await ws.receive_from(timeout=5))

    # Then it is refused with a code, and the socket still answers
    assert (error["type"], error["code"]) == ("error", "invalid_json")
    assert pong == {"type": "pong"}
    await ws.disconnect()


async def test_a_throttled_message_says_when_to_retry(conversation: Conversation, settings: Any) -> None:
    # Given a user over the message rate (none allowed this minute: no minute boundary to race)
    settings.MESSAGE_RATE_PER_MINUTE = 0
    ws = await ws_connect(conversation)

    # When a message comes
    await ws.send_to(text_data=json.dumps({"type": "message", "content": "hello"}))
    error = json.loads(await ws.receive_from(timeout=5))

    # Then the error frame says when to retry, in seconds, and nothing is stored
    assert (error["type"], error["code"], error["retryable"]) == ("error", "throttled", True)
    assert 0 < error["retry_after"] <= 60
    assert not await database_sync_to_async(Message.objects.filter(conversation=conversation).exists)()
    await ws.disconnect()


def _session_ticket(conversation: Conversation) -> tuple[str, str]:
    """A ticket minted with a session's bearer token, as `POST /api/ws-ticket` mints it; and
    that session's refresh token, to log it out."""
    from accounts.selectors import access_token_get
    from accounts.services import token_pair_create

    pair = token_pair_create(user=conversation.user)
    api_token = access_token_get(token=pair.access)
    assert api_token is not None
    ticket = ws_ticket_issue(user=conversation.user, conversation_id=conversation.pk, family=api_token.family)
    return ticket.ticket, pair.refresh


async def test_logout_closes_the_sockets_that_session_opened(conversation: Conversation) -> None:
    from accounts.services import token_family_revoke

    # Given a socket opened with a ticket of a session
    ticket, refresh = await database_sync_to_async(_session_ticket)(conversation)
    ws = WebsocketCommunicator(ws_application(), f"/ws/conversations/{conversation.pk}/?ticket={ticket}")
    assert (await ws.connect())[0] is True

    # When that session logs out
    await database_sync_to_async(token_family_revoke)(refresh=refresh)

    # Then its socket is closed as unauthorized
    closed = await ws.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4401}


async def test_a_ticket_minted_before_a_logout_opens_no_socket(conversation: Conversation) -> None:
    from accounts.services import token_family_revoke

    # Given a ticket of a session that then logs out
    ticket, refresh = await database_sync_to_async(_session_ticket)(conversation)
    await database_sync_to_async(token_family_revoke)(refresh=refresh)

    # When the ticket is used
    ws = WebsocketCommunicator(ws_application(), f"/ws/conversations/{conversation.pk}/?ticket={ticket}")
    connected, _ = await ws.connect()

    # Then no socket opens
    assert connected is False


async def test_another_sessions_logout_leaves_this_socket_open(conversation: Conversation) -> None:
    from accounts.services import token_family_revoke

    # Given a socket of one session, and another session of the same user (another device)
    ticket, _ = await database_sync_to_async(_session_ticket)(conversation)
    _, other_refresh = await database_sync_to_async(_session_ticket)(conversation)
    ws = WebsocketCommunicator(ws_application(), f"/ws/conversations/{conversation.pk}/?ticket={ticket}")
    assert (await ws.connect())[0] is True

    # When the other session logs out
    await database_sync_to_async(token_family_revoke)(refresh=other_refresh)

    # Then this socket still answers
    await ws.send_to(text_data=json.dumps({"type": "ping"}))
    assert json.loads(await ws.receive_from(timeout=5)) == {"type": "pong"}
    await ws.disconnect()


async def test_a_password_change_closes_every_socket_of_the_user_and_voids_their_tickets(
    conversation: Conversation,
) -> None:
    from accounts.services import user_password_change

    # Given two sockets of the user opened by two sessions (a phone, a tablet), one in another
    # conversation, and a ticket of a third session not used yet
    other = await database_sync_to_async(ConversationFactory)(user=conversation.user)
    phone_ticket, _ = await database_sync_to_async(_session_ticket)(conversation)
    tablet_ticket, _ = await database_sync_to_async(_session_ticket)(other)
    unused_ticket, _ = await database_sync_to_async(_session_ticket)(conversation)
    phone = WebsocketCommunicator(ws_application(), f"/ws/conversations/{conversation.pk}/?ticket={phone_ticket}")
    tablet = WebsocketCommunicator(ws_application(), f"/ws/conversations/{other.pk}/?ticket={tablet_ticket}")
    assert (await phone.connect())[0] is True
    assert (await tablet.connect())[0] is True
    # and a socket of another user, which must stay open
    stranger = await database_sync_to_async(ConversationFactory)()
    stranger_ticket, _ = await database_sync_to_async(_session_ticket)(stranger)
    bystander = WebsocketCommunicator(ws_application(), f"/ws/conversations/{stranger.pk}/?ticket={stranger_ticket}")
    assert (await bystander.connect())[0] is True

    # When the user changes their password
    user = conversation.user
    await database_sync_to_async(user.set_password)("old-password-for-test-7")
    await database_sync_to_async(user.save)()
    await database_sync_to_async(user_password_change)(
        user=user, old_password="old-password-for-test-7", new_password="a-new-long-passphrase-8"
    )

    # Then every socket of the user closes as unauthorized
    assert await phone.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
    assert await tablet.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
    # And a ticket minted before the change opens no socket
    late = WebsocketCommunicator(ws_application(), f"/ws/conversations/{conversation.pk}/?ticket={unused_ticket}")
    assert (await late.connect())[0] is False
    # And another user's socket is untouched
    await bystander.send_to(text_data=json.dumps({"type": "ping"}))
    assert json.loads(await bystander.receive_from(timeout=5)) == {"type": "pong"}
    await bystander.disconnect()


class _LayerDown:
    """A channel layer whose Redis is gone: every call raises as channels_redis does."""

    def __init__(self, *, fail_new_channel: bool) -> None:
        self.fail_new_channel = fail_new_channel

    async def new_channel(self, prefix: str = "specific.") -> str:
        if self.fail_new_channel:
            raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")
        return prefix + "x"

    async def receive(self, channel: str) -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def group_add(self, group: str, channel: str) -> None:
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")

    async def group_discard(self, group: str, channel: str) -> None:
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")


@pytest.mark.parametrize("fail_new_channel", [True, False], ids=["before-connect", "at-group-add"])
async def test_a_handshake_while_the_layer_is_down_is_accepted_told_and_closed_with_1011(
    conversation: Conversation, monkeypatch: pytest.MonkeyPatch, fail_new_channel: bool
) -> None:
    # Given a channel layer that does not answer
    import channels.consumer

    layer = _LayerDown(fail_new_channel=fail_new_channel)
    monkeypatch.setattr(channels.consumer, "get_channel_layer", lambda alias=None: layer)
    issued = await database_sync_to_async(ws_ticket_issue)(user=conversation.user, conversation_id=conversation.pk)
    ticket = issued.ticket

    # When a client opens a socket
    ws = WebsocketCommunicator(ws_application(), f"/ws/conversations/{conversation.pk}/?ticket={ticket}")
    connected, _ = await ws.connect()

    # Then it is accepted, told it may retry, and closed with 1011 (not a handshake failure)
    assert connected is True
    error = json.loads(await ws.receive_from(timeout=5))
    assert (error["type"], error["code"], error["retryable"]) == ("error", "unavailable", True)
    assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": 1011}


async def test_a_message_while_the_cache_is_down_is_an_error_frame_then_1011_and_stores_nothing(
    conversation: Conversation, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core.cache import caches

    # Given an open socket, then a cache that does not answer (in every thread: patched on its class)
    ws = await ws_connect(conversation)

    def refused(*args: object, **kwargs: object) -> None:
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")

    monkeypatch.setattr(type(caches["default"]), "add", refused)

    # When the client sends a message
    await ws.send_to(text_data=json.dumps({"type": "message", "content": "hello"}))

    # Then it gets a retryable error frame and a clean close, and nothing is stored
    error = json.loads(await ws.receive_from(timeout=5))
    assert (error["type"], error["code"], error["retryable"]) == ("error", "unavailable", True)
    assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": 1011}
    assert not await database_sync_to_async(Message.objects.filter(conversation=conversation).exists)()
