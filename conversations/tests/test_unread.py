"""`unread` on conversations and `POST /api/conversations/{id}/read`."""

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from conversations.models import Conversation, Message, Origin, Role
from conversations.services import conversation_create
from testing.support import AvatarFactory, MessageFactory

pytestmark = pytest.mark.django_db

Headers = Callable[[User], dict[str, str]]


def with_reminders(user: User, count: int) -> Conversation:
    """A new conversation (its greeting read), then `count` reminder messages."""
    conversation = conversation_create(user=user, avatar_id=AvatarFactory().pk)
    for _ in range(count):
        MessageFactory(conversation=conversation, role=Role.ASSISTANT, origin=Origin.REMINDER)
    return conversation


def test_a_list_shows_each_conversations_unread_count_in_one_query(
    client: Client, user: User, bearer_for: Headers
) -> None:
    # Given three conversations: greeting only, one reminder, two reminders and a user message
    headers = bearer_for(user)
    first, second, third = with_reminders(user, 0), with_reminders(user, 1), with_reminders(user, 2)
    MessageFactory(conversation=third, role=Role.USER)

    # When the list is read
    with CaptureQueriesContext(connection) as queries:
        answer = client.get("/api/conversations", headers=headers)

    # Then each shows its unread assistant messages (user messages never count)
    unread = {c["id"]: c["unread"] for c in answer.json()}
    assert unread == {first.pk: 0, second.pk: 1, third.pk: 2}
    # And the count is part of the list's query: no query per conversation
    listing = [q["sql"] for q in queries.captured_queries if "conversations_conversation" in q["sql"]]
    assert len(listing) == 1


def test_read_clears_unread_up_to_the_newest_message_by_default(
    client: Client, user: User, bearer_for: Headers
) -> None:
    conversation = with_reminders(user, 2)
    headers = bearer_for(user)

    # With no body at all (the body is optional)
    answer = client.generic("POST", f"/api/conversations/{conversation.pk}/read", headers=headers)

    assert answer.status_code == 200
    assert answer.json()["unread"] == 0
    newest = Message.objects.filter(conversation=conversation).order_by("-id").first()
    assert newest is not None
    conversation.refresh_from_db()
    assert conversation.last_read_message_id == newest.pk
    assert client.get(f"/api/conversations/{conversation.pk}", headers=headers).json()["unread"] == 0


def test_read_up_to_a_message_leaves_the_later_ones_unread_and_never_moves_back(
    client: Client, user: User, bearer_for: Headers
) -> None:
    conversation = with_reminders(user, 3)
    headers = bearer_for(user)
    first, _, third = Message.objects.filter(conversation=conversation, origin=Origin.REMINDER).order_by("id")
    url = f"/api/conversations/{conversation.pk}/read"

    assert (
        client.post(url, {"message_id": first.pk}, content_type="application/json", headers=headers).json()["unread"]
        == 2
    )
    assert (
        client.post(url, {"message_id": third.pk}, content_type="application/json", headers=headers).json()["unread"]
        == 0
    )
    # An older message read on another device does not unread the newer ones
    assert (
        client.post(url, {"message_id": first.pk}, content_type="application/json", headers=headers).json()["unread"]
        == 0
    )


def test_read_of_another_users_conversation_is_a_404_and_changes_nothing(
    client: Client, user: User, other_user: User, bearer_for: Headers
) -> None:
    theirs = with_reminders(other_user, 1)
    before = Conversation.objects.get(pk=theirs.pk).last_read_message_id

    answer = client.post(
        f"/api/conversations/{theirs.pk}/read", {}, content_type="application/json", headers=bearer_for(user)
    )

    assert answer.status_code == 404
    assert Conversation.objects.get(pk=theirs.pk).last_read_message_id == before


def test_read_up_to_a_message_of_another_conversation_is_a_404(client: Client, user: User, bearer_for: Headers) -> None:
    mine, other = with_reminders(user, 1), with_reminders(user, 1)
    elsewhere = Message.objects.filter(conversation=other).order_by("-id").first()
    assert elsewhere is not None

    answer = client.post(
        f"/api/conversations/{mine.pk}/read",
        {"message_id": elsewhere.pk},
        content_type="application/json",
        headers=bearer_for(user),
    )

    assert answer.status_code == 404
    assert answer.json()["field"] == "message_id"
    assert client.get(f"/api/conversations/{mine.pk}", headers=bearer_for(user)).json()["unread"] == 1
