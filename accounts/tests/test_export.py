"""GET /api/me/export: everything stored about the user, streamed, in the documented format."""

import json
import tracemalloc
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import jsonschema
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.http import StreamingHttpResponse
from django.test import AsyncClient, Client
from django.utils import timezone

from accounts.export import CHUNK_CHARS, user_export_chunks
from accounts.services import token_pair_create
from accounts.tests.conftest import bearer
from avatars.models import AvatarPhrase
from conversations.models import Message, Role
from memory.models import Memory, Summary
from secretary.models import Reminder, Task
from testing.support import AvatarFactory, ConversationFactory, MessageFactory, UserFactory

pytestmark = pytest.mark.django_db

SCHEMA = json.loads((Path(settings.BASE_DIR) / "docs" / "export.schema.json").read_text())


def export(client: Client, user: User) -> Any:
    return client.get("/api/me/export", headers=bearer(token_pair_create(user=user).access))


@pytest.fixture
def account() -> dict[str, Any]:
    user = UserFactory(username="sam")
    catalogue = AvatarFactory(name="Ada")
    own = AvatarFactory(owner=user, is_public=False, name="Pip", slug="pip")
    AvatarPhrase.objects.create(avatar=own, mode="intimate", text="miss you")
    conversation = ConversationFactory(user=user, avatar=catalogue, title="Plans")
    first = MessageFactory(conversation=conversation, content="Remind me to call Ana", route={"mode": "secretary"})
    reply = MessageFactory(
        conversation=conversation,
        role=Role.ASSISTANT,
        content="Done.",
        reply_to=first,
        model="gpt-test",
        prompt_tokens=100,
        completion_tokens=20,
        actions=[{"name": "reminder_create", "arguments": {"text": "call Ana"}, "result": {}, "error": None}],
    )
    Summary.objects.create(conversation=conversation, text="Sam plans calls.", covers_until=reply)
    Memory.objects.create(user=user, avatar=catalogue, key="sister", text="Sam's sister is Ana.", pinned=True)
    Reminder.objects.create(
        user=user, conversation=conversation, text="call Ana", due_at=timezone.now() + timedelta(days=1), timezone="UTC"
    )
    Task.objects.create(user=user, title="Buy flowers")

    other = UserFactory(username="alex")
    other_chat = ConversationFactory(user=other, avatar=catalogue, title="Alex's")
    MessageFactory(conversation=other_chat, content="not Sam's")
    Memory.objects.create(user=other, avatar=catalogue, key="name", text="Alex")
    return {"user": user, "catalogue": catalogue, "own": own, "conversation": conversation, "first": first}


def test_a_real_export_is_valid_against_the_documented_schema(client: Client, account: dict[str, Any]) -> None:
    response = export(client, account["user"])

    assert response.status_code == 200
    document = json.loads(b"".join(response.streaming_content))
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    errors = [
        f"{list(error.absolute_path)}: {error.message}"
        for error in jsonschema.Draft202012Validator(SCHEMA).iter_errors(document)
    ]
    assert errors == []
    # The schema names every section the export writes, and no other.
    assert set(document) == set(SCHEMA["properties"])
    for section, values in document.items():
        items = SCHEMA["properties"][section].get("items", {}).get("properties")
        if items and isinstance(values, list) and values:
            assert set(values[0]) == set(items), section


def test_the_export_holds_the_users_data_and_nobody_elses(client: Client, account: dict[str, Any]) -> None:
    response = export(client, account["user"])

    document = json.loads(b"".join(response.streaming_content))
    assert (document["format"], document["version"]) == ("companion.export", 1)
    assert (document["user"]["username"], document["profile"]["display_name"]) == ("sam", "Sam")
    assert [a["name"] for a in document["avatars"]] == ["Pip"]
    assert [p["text"] for p in document["avatar_phrases"]] == ["miss you"]
    assert [c["title"] for c in document["conversations"]] == ["Plans"]
    assert [(m["role"], m["content"]) for m in document["messages"]] == [
        ("user", "Remind me to call Ana"),
        ("assistant", "Done."),
    ]
    assert document["messages"][0]["route"] == {"mode": "secretary"}
    assert document["messages"][1]["reply_to_id"] == account["first"].pk
    assert document["messages"][1]["actions"][0]["name"] == "reminder_create"
    assert [s["text"] for s in document["summaries"]] == ["Sam plans calls."]
    assert [(m["text"], m["pinned"]) for m in document["memories"]] == [("Sam's sister is Ana.", True)]
    assert [r["text"] for r in document["reminders"]] == ["call Ana"]
    assert [t["title"] for t in document["tasks"]] == ["Buy flowers"]
    assert document["images"] == []
    assert [(u["model"], u["replies"], u["prompt_tokens"]) for u in document["usage"]] == [
        ("", 0, 0),
        ("gpt-test", 1, 100),
    ]
    assert len(document["sessions"]) == 2  # the pair this request was made with
    assert all("token_hash" not in s for s in document["sessions"])
    assert "not Sam's" not in json.dumps(document)
    assert "Alex" not in json.dumps(document)


def test_it_is_an_attachment_streamed_and_never_cached(client: Client, account: dict[str, Any]) -> None:
    response = export(client, account["user"])

    assert response.streaming
    assert response["Content-Type"] == "application/json; charset=utf-8"
    day = timezone.localdate().isoformat()
    assert response["Content-Disposition"] == f'attachment; filename="companion-export-sam-{day}.json"'
    assert response["Cache-Control"] == "no-store"


def test_without_a_token_it_is_a_401(client: Client, account: dict[str, Any]) -> None:
    assert client.get("/api/me/export").status_code == 401


def test_a_large_account_comes_in_many_pieces(account: dict[str, Any]) -> None:
    conversation = account["conversation"]
    Message.objects.bulk_create(
        Message(conversation=conversation, role=Role.USER, content="x" * 200, mode="secretary") for _ in range(2_000)
    )

    pieces = list(user_export_chunks(user=account["user"]))

    assert len(pieces) > 4
    assert all(len(piece) < CHUNK_CHARS + 10_000 for piece in pieces)
    assert len(json.loads("".join(pieces))["messages"]) == 2_002


def _peak_bytes_exporting(user: User) -> int:
    tracemalloc.start()
    try:
        for _ in user_export_chunks(user=user):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_messages(
    account: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given rows read 500 at a time, and the same account with 3,000 then 15,000 messages of 300 characters
    monkeypatch.setattr("accounts.export.ROWS_PER_QUERY", 500)
    conversation = account["conversation"]

    def add(count: int) -> None:
        Message.objects.bulk_create(
            (
                Message(conversation=conversation, role=Role.USER, content="y" * 300, mode="secretary")
                for _ in range(count)
            ),
            batch_size=1_000,
        )

    add(3_000)
    small = _peak_bytes_exporting(account["user"])
    add(12_000)

    large = _peak_bytes_exporting(account["user"])

    # Then the peak of Python allocations is that of two batches of rows (the one being written
    # and the next being fetched), whatever the size of the account (4.5 MB of text here)
    assert large < small * 1.2, (small, large)
    assert large < 1_500_000, (small, large)


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_the_export_is_streamed_as_it_is_read(account: dict[str, Any]) -> None:
    access = await sync_to_async(lambda: token_pair_create(user=account["user"]).access)()

    response = cast(StreamingHttpResponse, await AsyncClient().get("/api/me/export", headers=bearer(access)))

    assert response.status_code == 200
    assert response.is_async  # Django would read a synchronous iterator whole before sending it
    body = b"".join([piece async for piece in cast(AsyncIterator[bytes], response.streaming_content)])
    assert [m["content"] for m in json.loads(body)["messages"]] == ["Remind me to call Ana", "Done."]
