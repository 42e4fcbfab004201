"""The conversations REST API: CRUD, message pages, turns as JSON and as SSE, cross-user 404s, bad input."""

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.http import StreamingHttpResponse
from django.test import AsyncClient, Client

from conversations.models import Conversation, Message, Role, Status
from llm.testing import provider_configured
from memory.models import Summary
from testing.support import AvatarFactory, ConversationFactory, MessageFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

Headers = Callable[[User], dict[str, str]]


@pytest.fixture(autouse=True)
def fake_model() -> Iterator[None]:
    with provider_configured("llm.fake.FakeProvider"):
        yield


@pytest.fixture
def client() -> Client:
    return Client()


def post_json(client: Client, path: str, body: Any, headers: dict[str, str]) -> Any:
    return client.post(path, data=json.dumps(body), content_type="application/json", headers=headers)


def test_creating_a_conversation_returns_it_with_the_greeting_stored(client: Client, bearer_for: Headers) -> None:
    user = UserFactory()
    avatar = AvatarFactory(first_message="Good morning.", alternate_greetings=[])

    response = post_json(client, "/api/conversations", {"avatar_id": avatar.pk}, bearer_for(user))

    assert response.status_code == 201
    body = response.json()
    assert body["avatar"]["id"] == avatar.pk
    assert (body["mode"], body["mode_locked"]) == ("secretary", False)
    conversation = Conversation.objects.get(pk=body["id"])
    assert conversation.user_id == user.pk
    assert list(conversation.messages.values_list("role", "content")) == [("assistant", "Good morning.")]


def test_another_users_private_avatar_cannot_start_a_conversation(client: Client, bearer_for: Headers) -> None:
    owner, stranger = UserFactory(), UserFactory()
    private = AvatarFactory(is_public=False, owner=owner)

    response = post_json(client, "/api/conversations", {"avatar_id": private.pk}, bearer_for(stranger))

    assert response.status_code == 404
    assert not Conversation.objects.exists()


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("get", ""), ("delete", ""), ("patch", ""), ("get", "/messages"), ("post", "/messages"), ("get", "/summary")],
)
def test_another_users_conversation_is_a_404_everywhere(
    client: Client, bearer_for: Headers, method: str, suffix: str
) -> None:
    conversation = ConversationFactory()
    MessageFactory(conversation=conversation, content="private words")
    stranger = UserFactory()
    path = f"/api/conversations/{conversation.pk}{suffix}"

    headers = bearer_for(stranger)
    if method in {"post", "patch"}:
        body = json.dumps({"content": "hi", "mode": "secretary"})
        response = getattr(client, method)(path, data=body, content_type="application/json", headers=headers)
    else:
        response = getattr(client, method)(path, headers=headers)

    assert response.status_code == 404
    assert "private words" not in response.content.decode()
    assert Conversation.objects.filter(pk=conversation.pk).exists()
    assert Message.objects.filter(conversation=conversation).count() == 1


def test_the_list_holds_only_the_users_own_conversations(client: Client, bearer_for: Headers) -> None:
    user = UserFactory()
    mine = ConversationFactory(user=user)
    ConversationFactory()

    response = client.get("/api/conversations", headers=bearer_for(user))

    assert response.status_code == 200
    assert [c["id"] for c in response.json()] == [mine.pk]


def test_messages_page_backwards_oldest_first_within_a_page(client: Client, bearer_for: Headers) -> None:
    conversation = ConversationFactory()
    ids = [MessageFactory(conversation=conversation, content=f"m{i}").pk for i in range(5)]
    headers = bearer_for(conversation.user)

    first = client.get(f"/api/conversations/{conversation.pk}/messages?limit=2", headers=headers).json()
    second = client.get(
        f"/api/conversations/{conversation.pk}/messages?limit=2&before={first['next']}", headers=headers
    ).json()
    last = client.get(
        f"/api/conversations/{conversation.pk}/messages?limit=2&before={second['next']}", headers=headers
    ).json()

    assert [m["id"] for m in first["items"]] == ids[3:5]
    assert [m["id"] for m in second["items"]] == ids[1:3]
    assert [m["id"] for m in last["items"]] == ids[0:1]
    assert last["next"] is None


def test_posting_a_message_returns_the_finished_turn(client: Client, bearer_for: Headers) -> None:
    conversation = ConversationFactory()

    response = post_json(
        client,
        f"/api/conversations/{conversation.pk}/messages",
        {"content": "add milk to my shopping list", "client_id": "phone-1"},
        bearer_for(conversation.user),
    )

    assert response.status_code == 201
    body = response.json()
    assert body["user_message"]["content"] == "add milk to my shopping list"
    assert body["user_message"]["client_id"] == "phone-1"
    assert body["assistant_message"]["content"] == "Hello from the fake model."
    assert body["assistant_message"]["status"] == "complete"
    assert body["mode"] == "secretary"
    assert Message.objects.filter(conversation=conversation).count() == 2


def test_a_repeated_client_id_returns_the_first_turn_without_a_second_row(client: Client, bearer_for: Headers) -> None:
    conversation = ConversationFactory()
    headers = bearer_for(conversation.user)
    path = f"/api/conversations/{conversation.pk}/messages"
    first = post_json(client, path, {"content": "hello", "client_id": "x1"}, headers).json()

    again = post_json(client, path, {"content": "hello", "client_id": "x1"}, headers)

    assert again.status_code == 201
    assert again.json()["duplicate"] is True
    assert again.json()["assistant_message"]["id"] == first["assistant_message"]["id"]
    assert Message.objects.filter(conversation=conversation).count() == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "content"),
        ({"content": ""}, "content"),
        ({"content": "x" * 8001}, "content"),
        ({"content": 12}, "content"),
        ({"content": "hi", "temperature": 3}, "temperature"),
        ({"content": "hi", "max_tokens": 0}, "max_tokens"),
        ({"content": "hi", "max_tokens": 10**6}, "max_tokens"),
        ({"content": "hi", "model": "bad model"}, "model"),
    ],
)
def test_bad_messages_are_422_naming_the_field_and_store_nothing(
    client: Client, bearer_for: Headers, body: dict[str, Any], field: str
) -> None:
    conversation = ConversationFactory()

    response = post_json(client, f"/api/conversations/{conversation.pk}/messages", body, bearer_for(conversation.user))

    assert response.status_code == 422
    assert field in json.dumps(response.json())
    assert not Message.objects.filter(conversation=conversation).exists()
    # And the refusal holds no lock: the next message is answered, not refused as busy
    again = post_json(
        client, f"/api/conversations/{conversation.pk}/messages", {"content": "hi"}, bearer_for(conversation.user)
    )
    assert again.status_code == 201


def test_malformed_json_is_a_400_not_a_500(client: Client, bearer_for: Headers) -> None:
    conversation = ConversationFactory()

    response = client.post(
        f"/api/conversations/{conversation.pk}/messages",
        data="{not json",
        content_type="application/json",
        headers=bearer_for(conversation.user),
    )

    assert response.status_code == 400
    assert response.json()["code"] == "malformed"
    assert not Message.objects.filter(conversation=conversation).exists()


def test_patch_locks_a_mode_and_auto_releases_it(client: Client, bearer_for: Headers) -> None:
    conversation = ConversationFactory()
    headers = bearer_for(conversation.user)
    path = f"/api/conversations/{conversation.pk}"

    def patch(body: dict[str, Any]) -> Any:
        return client.patch(path, data=json.dumps(body), content_type="application/json", headers=headers)

    locked = patch({"mode": "secretary"})
    released = patch({"mode": "auto"})

    assert (locked.json()["mode"], locked.json()["mode_locked"]) == ("secretary", True)
    assert (released.json()["mode"], released.json()["mode_locked"]) == ("secretary", False)


def test_patch_to_intimate_without_opt_in_is_refused_with_the_reason(client: Client, bearer_for: Headers) -> None:
    conversation = ConversationFactory()

    response = client.patch(
        f"/api/conversations/{conversation.pk}",
        data=json.dumps({"mode": "intimate"}),
        content_type="application/json",
        headers=bearer_for(conversation.user),
    )

    assert response.status_code == 403
    assert response.json()["code"] == "intimate_blocked"
    assert response.json()["reason"] == "adult_required"
    conversation.refresh_from_db()
    assert (conversation.mode, conversation.mode_locked) == ("secretary", False)


def test_the_summary_is_a_404_until_one_exists(client: Client, bearer_for: Headers) -> None:
    conversation = ConversationFactory()
    headers = bearer_for(conversation.user)
    path = f"/api/conversations/{conversation.pk}/summary"
    assert client.get(path, headers=headers).status_code == 404
    covered = MessageFactory(conversation=conversation)
    Summary.objects.create(conversation=conversation, text="They planned the week.", covers_until=covered)

    response = client.get(path, headers=headers)

    assert response.status_code == 200
    assert response.json()["text"] == "They planned the week."
    assert response.json()["covers_until"] == covered.pk


def test_deleting_a_conversation_removes_its_messages_and_summary(client: Client, bearer_for: Headers) -> None:
    conversation = ConversationFactory()
    covered = MessageFactory(conversation=conversation)
    Summary.objects.create(conversation=conversation, text="s", covers_until=covered)

    response = client.delete(f"/api/conversations/{conversation.pk}", headers=bearer_for(conversation.user))

    assert response.status_code == 204
    assert not Conversation.objects.exists()
    assert not Message.objects.exists()
    assert not Summary.objects.exists()


async def test_sse_streams_the_turn_events_in_contract_order(bearer_for: Headers) -> None:
    from channels.db import database_sync_to_async

    conversation = await database_sync_to_async(ConversationFactory)()
    headers = await database_sync_to_async(bearer_for)(conversation.user)
    client = AsyncClient()

    response = await client.post(
        f"/api/conversations/{conversation.pk}/messages",
        data=json.dumps({"content": "what's on tomorrow"}),
        content_type="application/json",
        headers={**headers, "Accept": "text/event-stream"},
    )
    assert isinstance(response, StreamingHttpResponse)
    chunks = [bytes(chunk).decode() async for chunk in response.streaming_content]

    assert response.status_code == 201
    assert response["Content-Type"].startswith("text/event-stream")
    events = [chunk.split("\n")[0].removeprefix("event: ") for chunk in chunks]
    assert events[0] == "message.created"
    assert events[1] == "notice"  # the AI notice: the conversation's first turn
    assert events[2] == "reply.start"
    assert events[-1] == "reply.end"
    assert set(events[3:-1]) == {"token"}
    end = json.loads(chunks[-1].split("\n")[1].removeprefix("data: "))
    assert end["status"] == "complete"
    reply = await database_sync_to_async(Message.objects.get)(conversation=conversation, role=Role.ASSISTANT)
    assert (reply.status, reply.content) == (Status.COMPLETE, end["content"])


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("offset=10000000000000000000&limit=5", "offset"),
        ("offset=-1", "offset"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("avatar_id=99999999999999999999", "avatar_id"),
    ],
)
def test_conversation_list_bounds_are_a_422_naming_the_field_not_a_500(
    client: Client, bearer_for: Headers, query: str, field: str
) -> None:
    conversation = ConversationFactory()

    response = client.get(f"/api/conversations?{query}", headers=bearer_for(conversation.user))

    assert response.status_code == 422
    assert field in json.dumps(response.json())


def test_a_busy_refusal_does_not_count_toward_the_message_rate(
    client: Client, bearer_for: Headers, settings: Any
) -> None:
    # Given a user allowed one message a minute, whose conversation is busy with a reply
    settings.MESSAGE_RATE_PER_MINUTE = 1
    conversation = ConversationFactory()
    headers = bearer_for(conversation.user)
    path = f"/api/conversations/{conversation.pk}/messages"
    cache.set(f"turn-lock:{conversation.pk}", 1)

    # When a message is refused as busy, and the user sends again once the reply is done
    busy = post_json(client, path, {"content": "are you there?"}, headers)
    cache.delete(f"turn-lock:{conversation.pk}")
    answered = post_json(client, path, {"content": "are you there?"}, headers)

    # Then the refusal was a 409, and the next message is answered, not throttled
    assert busy.status_code == 409
    assert answered.status_code == 201


def test_a_message_over_the_rate_is_a_429_with_retry_after(client: Client, bearer_for: Headers, settings: Any) -> None:
    # Given a user allowed one message a minute, who has sent it
    settings.MESSAGE_RATE_PER_MINUTE = 1
    conversation = ConversationFactory()
    headers = bearer_for(conversation.user)
    path = f"/api/conversations/{conversation.pk}/messages"
    assert post_json(client, path, {"content": "one"}, headers).status_code == 201

    # When a second one comes within the minute
    refused = post_json(client, path, {"content": "two"}, headers)

    # Then it is a 429 in the one error shape, telling when to come back (1 to 60 s), and nothing is stored
    assert refused.status_code == 429
    assert (refused.json()["code"], refused.json()["field"]) == ("throttled", None)
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert not conversation.messages.filter(content="two").exists()
