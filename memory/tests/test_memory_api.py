"""The memories API of the contract: GET /api/avatars/{id}/memories, PATCH and DELETE /api/memories/{id}."""

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts.services import token_pair_create
from conversations.models import Role
from memory.models import Memory
from testing.support import AvatarFactory, ConversationFactory, MessageFactory

pytestmark = [pytest.mark.django_db, pytest.mark.urls("memory.tests.memory_urls")]


def bearer(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_pair_create(user=user).access}"}


def patch(client: Client, url: str, body: dict[str, Any], user: User) -> Any:
    return client.patch(url, json.dumps(body), content_type="application/json", headers=bearer(user))


@pytest.fixture
def facts(user: User, other_user: User) -> dict[str, Memory]:
    avatar = AvatarFactory()
    source = MessageFactory(conversation=ConversationFactory(user=user, avatar=avatar), role=Role.USER)
    return {
        "name": Memory.objects.create(user=user, avatar=avatar, key="name", text="Sam.", source_message=source),
        "pinned": Memory.objects.create(user=user, avatar=avatar, key="sister", text="Ana: 3 May.", pinned=True),
        "elsewhere": Memory.objects.create(user=user, avatar=AvatarFactory(), key="job", text="Nurse."),
        "theirs": Memory.objects.create(user=other_user, avatar=avatar, key="name", text="Alex."),
    }


def test_list_returns_the_users_facts_for_that_avatar_pinned_first(
    anon_client: Client, user: User, facts: dict[str, Memory]
) -> None:
    avatar_id = facts["name"].avatar_id

    response = anon_client.get(f"/api/avatars/{avatar_id}/memories", headers=bearer(user))

    assert response.status_code == 200
    body = response.json()
    assert [(m["id"], m["text"], m["pinned"], m["key"]) for m in body] == [
        (facts["pinned"].pk, "Ana: 3 May.", True, "sister"),
        (facts["name"].pk, "Sam.", False, "name"),
    ]
    assert body[1]["source_message_id"] == facts["name"].source_message_id
    assert body[1]["avatar_id"] == avatar_id
    assert set(body[1]) == {"id", "avatar_id", "key", "text", "pinned", "source_message_id", "created_at", "updated_at"}


def test_list_for_an_avatar_the_user_cannot_see_is_a_404(anon_client: Client, user: User, other_user: User) -> None:
    private = AvatarFactory(is_public=False, owner=other_user)
    Memory.objects.create(user=user, avatar=private, key="k", text="leak?")

    response = anon_client.get(f"/api/avatars/{private.pk}/memories", headers=bearer(user))

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert "leak" not in response.content.decode()


def test_list_needs_a_token(anon_client: Client, facts: dict[str, Memory]) -> None:
    response = anon_client.get(f"/api/avatars/{facts['name'].avatar_id}/memories")
    assert response.status_code == 401


def test_patch_corrects_the_text_and_pins(anon_client: Client, user: User, facts: dict[str, Memory]) -> None:
    fact = facts["name"]

    response = patch(anon_client, f"/api/memories/{fact.pk}", {"text": "  Samantha.  ", "pinned": True}, user)

    assert response.status_code == 200
    assert (response.json()["text"], response.json()["pinned"]) == ("Samantha.", True)
    fact.refresh_from_db()
    assert (fact.text, fact.pinned, fact.key) == ("Samantha.", True, "name")


def test_patch_with_only_pinned_keeps_the_text(anon_client: Client, user: User, facts: dict[str, Memory]) -> None:
    fact = facts["pinned"]

    response = patch(anon_client, f"/api/memories/{fact.pk}", {"pinned": False}, user)

    assert response.status_code == 200
    fact.refresh_from_db()
    assert (fact.text, fact.pinned) == ("Ana: 3 May.", False)


@pytest.mark.parametrize("text", ["", "   ", "x" * 501])
def test_patch_rejects_empty_or_too_long_text(
    anon_client: Client, user: User, facts: dict[str, Memory], text: str
) -> None:
    fact = facts["name"]

    response = patch(anon_client, f"/api/memories/{fact.pk}", {"text": text}, user)

    assert response.status_code == 422
    assert response.json()["code"] == "invalid"
    fact.refresh_from_db()
    assert fact.text == "Sam."


def test_another_users_fact_is_a_404_for_patch_and_delete(
    anon_client: Client, user: User, facts: dict[str, Memory]
) -> None:
    theirs = facts["theirs"]

    assert patch(anon_client, f"/api/memories/{theirs.pk}", {"text": "mine now"}, user).status_code == 404
    assert anon_client.delete(f"/api/memories/{theirs.pk}", headers=bearer(user)).status_code == 404

    theirs.refresh_from_db()
    assert theirs.text == "Alex."


def test_delete_forgets_the_fact(anon_client: Client, user: User, facts: dict[str, Memory]) -> None:
    fact = facts["name"]

    response = anon_client.delete(f"/api/memories/{fact.pk}", headers=bearer(user))

    assert response.status_code == 204
    assert response.content == b""
    assert not Memory.objects.filter(pk=fact.pk).exists()
    assert Memory.objects.count() == 3
    assert anon_client.delete(f"/api/memories/{fact.pk}", headers=bearer(user)).status_code == 404
