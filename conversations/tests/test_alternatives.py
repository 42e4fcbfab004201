"""Regenerate, edit, select, forget and fork: through the turn's door, the services and REST.

The websocket frames of the same operations are in test_consumers_alternatives.py.
"""

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.test import Client

from conversations import services
from conversations.models import Conversation, Message, Role, Status
from conversations.titles import conversation_title_generate
from conversations.turns import Busy, turn_start
from conversations.turns.request import Regenerate
from core.errors import Conflict, InvalidInput, NotFound
from llm.errors import Unavailable
from llm.fake import FakeProvider
from llm.models import UsageDay, UsageRecord
from llm.testing import provider_configured
from memory import services as memory_services
from memory.config import MemorySettings
from memory.models import Summary
from memory.selectors import summary_candidates
from testing.support import ConversationFactory, MessageFactory, UserFactory, regenerate_frames, turn_frames

pytestmark = pytest.mark.django_db(transaction=True)


def exchange(conversation: Conversation, content: str, reply: str) -> tuple[Message, Message]:
    """One whole turn; the user message and its reply as stored."""
    turn_frames(conversation, content, FakeProvider(reply=reply))
    user_message = Message.objects.filter(conversation=conversation, role=Role.USER).latest("id")
    return user_message, Message.objects.get(reply_to=user_message)


def history(conversation: Conversation) -> list[tuple[str, str]]:
    messages = Message.objects.filter(conversation=conversation, superseded=False).order_by("id")
    return list(messages.values_list("role", "content"))


# --- regenerate ---------------------------------------------------------------------------------


def test_regenerate_streams_a_new_reply_and_keeps_the_first_as_a_superseded_alternative() -> None:
    # Given one exchange
    conversation = ConversationFactory()
    question, first = exchange(conversation, "Name a colour", "Blue.")
    provider = FakeProvider(reply="Green, maybe.", chunks=3)

    # When the user asks for another reply
    frames = regenerate_frames(conversation, provider)

    # Then it streams like a reply, announced as another reply to the same message; nothing new from the user
    types = [f["type"] for f in frames]
    assert types == ["reply.start", "token", "token", "token", "reply.end"]
    second = Message.objects.exclude(pk=first.pk).get(reply_to=question)
    assert frames[0] == {
        "type": "reply.start",
        "message_id": second.pk,
        "mode": "secretary",
        "reply_to": question.pk,
        "alternatives": [first.pk, second.pk],
    }
    assert [f["seq"] for f in frames if f["type"] == "token"] == [0, 1, 2]
    assert frames[-1]["status"] == "complete"
    assert frames[-1]["message"]["alternatives"] == [first.pk, second.pk]
    # And the first reply is kept, superseded; the history uses the new one
    first.refresh_from_db()
    assert (first.content, first.superseded) == ("Blue.", True)
    assert (second.content, second.superseded, second.status) == ("Green, maybe.", False, Status.COMPLETE)
    assert Message.objects.filter(conversation=conversation, role=Role.USER).count() == 1
    # And the model was asked the same question without the reply being replaced
    sent = provider.calls[0]
    assert (sent[-1].role, sent[-1].content) == ("user", "Name a colour")
    assert all(m.content != "Blue." for m in sent)
    conversation.refresh_from_db()
    assert conversation.message_count == 3


def test_selecting_an_alternative_changes_what_the_next_prompt_carries() -> None:
    conversation = ConversationFactory()
    question, first = exchange(conversation, "Name a colour", "Blue.")
    regenerate_frames(conversation, FakeProvider(reply="Green."))
    second = Message.objects.get(reply_to=question, superseded=False)

    # When the user picks the first reply back
    event = services.message_alternative_select(user_id=conversation.user_id, message_id=first.pk)

    # Then the history uses it, and the next turn's prompt carries it, not the other
    assert event.frame() == {
        "type": "alternative.selected",
        "message_id": first.pk,
        "reply_to": question.pk,
        "alternatives": [first.pk, second.pk],
        "message": event.message,
    }
    assert history(conversation)[-2:] == [("user", "Name a colour"), ("assistant", "Blue.")]
    provider = FakeProvider(reply="Fine.")
    turn_frames(conversation, "Why that one?", provider)
    contents = [m.content for m in provider.calls[0]]
    assert contents[-3:] == ["Name a colour", "Blue.", "Why that one?"]
    assert "Green." not in contents


def test_regenerate_can_be_stopped_and_then_the_next_turn_is_not_busy() -> None:
    conversation = ConversationFactory()
    question, _first = exchange(conversation, "Tell me a story", "Once upon a time.")
    provider = FakeProvider(reply="one two three four five six seven eight", chunks=8, delay=0.05)
    cancel = asyncio.Event()
    frames: list[dict[str, Any]] = []

    async def listen(event: Any) -> None:
        frames.append(event.frame())
        if event.frame()["type"] == "token" and event.frame()["seq"] == 1:
            cancel.set()

    async def regenerate_then_stop() -> None:
        running = await turn_start(
            user_id=conversation.user_id,
            conversation_id=conversation.pk,
            message=Regenerate(),
            provider=provider,
            listener=listen,
        )
        await running.result_or_stop(cancel)

    async_to_sync(regenerate_then_stop)()

    # Then the new reply ends cancelled with its text so far, still the selected alternative
    end = frames[-1]
    assert end["type"] == "reply.end"
    assert end["status"] == "cancelled"
    stopped = Message.objects.get(pk=end["message_id"])
    assert (stopped.status, stopped.superseded, stopped.content) == (Status.CANCELLED, False, end["content"])
    assert 0 < len(stopped.content.split()) < 8
    assert provider.closed == 1
    # And the lock is free: another regeneration runs at once
    regenerate_frames(conversation, FakeProvider(reply="Again."))
    assert list(Message.objects.filter(reply_to=question).values_list("content", "superseded")) == [
        ("Once upon a time.", True),
        (stopped.content, True),
        ("Again.", False),
    ]


def test_regenerate_while_a_reply_streams_is_busy_and_stores_nothing() -> None:
    conversation = ConversationFactory()
    exchange(conversation, "hello", "Hi.")
    slow = FakeProvider(reply="a b c d e f g h", chunks=8, delay=0.05)

    async def overlap() -> None:
        running = await turn_start(
            user_id=conversation.user_id, conversation_id=conversation.pk, message={"content": "more"}, provider=slow
        )
        with pytest.raises(Busy):
            await turn_start(
                user_id=conversation.user_id,
                conversation_id=conversation.pk,
                message=Regenerate(),
                provider=FakeProvider(),
            )
        await running.result()

    async_to_sync(overlap)()
    assert Message.objects.filter(conversation=conversation, role=Role.ASSISTANT).count() == 2


def test_regenerate_with_no_message_of_the_user_is_a_conflict() -> None:
    conversation = ConversationFactory()
    MessageFactory(conversation=conversation, role=Role.ASSISTANT, content="Hello!")
    provider = FakeProvider()

    with pytest.raises(Conflict):
        regenerate_frames(conversation, provider)

    assert provider.calls == []
    assert Message.objects.filter(conversation=conversation).count() == 1


# --- edit ---------------------------------------------------------------------------------------


def test_editing_the_last_message_reroutes_it_and_replaces_its_reply() -> None:
    conversation = ConversationFactory()
    question, first = exchange(conversation, "hello there", "Hi!")
    provider = FakeProvider(reply="Noted for 9.")

    frames = regenerate_frames(
        conversation, provider, Regenerate(message_id=question.pk, content="  remind me to call mum at 9  ")
    )

    # Then the message is updated (sent to every device first), re-routed, and answered anew
    assert frames[0]["type"] == "message.updated"
    assert frames[0]["message"]["content"] == "remind me to call mum at 9"
    assert "message.created" not in [f["type"] for f in frames]
    question.refresh_from_db()
    assert question.content == "remind me to call mum at 9"
    assert question.route is not None
    assert question.route["mode"] == "secretary"
    # And the old reply, which answered words no longer there, is gone
    assert not Message.objects.filter(pk=first.pk).exists()
    reply = Message.objects.get(reply_to=question)
    assert (reply.content, reply.superseded) == ("Noted for 9.", False)
    assert frames[-1]["message"]["alternatives"] == [reply.pk]
    assert provider.calls[0][-1].content == "remind me to call mum at 9"
    conversation.refresh_from_db()
    assert conversation.message_count == 2


def test_editing_an_older_message_is_a_conflict_and_another_conversations_is_not_found() -> None:
    conversation = ConversationFactory()
    older, _ = exchange(conversation, "first", "One.")
    exchange(conversation, "second", "Two.")
    elsewhere = MessageFactory(conversation=ConversationFactory(user=conversation.user), role=Role.USER)
    provider = FakeProvider()

    with pytest.raises(Conflict):
        regenerate_frames(conversation, provider, Regenerate(message_id=older.pk, content="changed"))
    with pytest.raises(NotFound):
        regenerate_frames(conversation, provider, Regenerate(message_id=elsewhere.pk, content="changed"))
    with pytest.raises(InvalidInput) as empty:
        regenerate_frames(conversation, provider, Regenerate(message_id=older.pk, content="   "))

    assert empty.value.field == "content"
    assert provider.calls == []
    older.refresh_from_db()
    assert older.content == "first"


# --- forget -------------------------------------------------------------------------------------


def test_forgetting_a_user_message_takes_its_replies_and_rebuilds_a_summary_that_read_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conversation = ConversationFactory()
    question, _first = exchange(conversation, "my secret is 1234", "Got it.")
    regenerate_frames(conversation, FakeProvider(reply="Understood."))
    later, later_reply = exchange(conversation, "what's the weather", "Sunny.")
    Summary.objects.create(conversation=conversation, text="They told a secret.", covers_until=later)
    queued: list[tuple[str, dict[str, int]]] = []
    monkeypatch.setattr(memory_services.background, "task_enqueue", lambda task, **kw: queued.append((task.name, kw)))

    event = services.message_forget(user_id=conversation.user_id, message_id=question.pk)

    # Then the message and both its replies are gone, the summary that read them too, and a rebuild is queued
    assert len(event.message_ids) == 3
    assert event.message_ids[0] == question.pk
    assert not Message.objects.filter(pk__in=event.message_ids).exists()
    assert history(conversation) == [("user", "what's the weather"), ("assistant", "Sunny.")]
    assert not Summary.objects.filter(conversation=conversation).exists()
    assert queued == [("conversations.summarize_conversation", {"conversation_id": conversation.pk})]
    # And the next prompt does not carry it
    provider = FakeProvider()
    turn_frames(conversation, "and now?", provider)
    assert all("1234" not in m.content for m in provider.calls[0])
    assert later_reply.pk in Message.objects.values_list("id", flat=True)


def test_forgetting_the_selected_reply_hands_the_selection_to_its_newest_alternative() -> None:
    conversation = ConversationFactory()
    question, first = exchange(conversation, "a colour?", "Blue.")
    regenerate_frames(conversation, FakeProvider(reply="Green."))
    selected = Message.objects.get(reply_to=question, superseded=False)
    Summary.objects.create(conversation=conversation, text="Earlier.", covers_until=question)

    services.message_forget(user_id=conversation.user_id, message_id=selected.pk)

    first.refresh_from_db()
    assert first.superseded is False
    assert history(conversation)[-1] == ("assistant", "Blue.")
    assert Summary.objects.filter(conversation=conversation).exists()  # it covered nothing forgotten


def test_forgetting_another_users_message_is_not_found_and_a_streaming_one_is_busy() -> None:
    conversation = ConversationFactory()
    mine = MessageFactory(conversation=conversation, role=Role.USER)
    streaming = MessageFactory(conversation=conversation, role=Role.ASSISTANT, status=Status.STREAMING, reply_to=mine)

    with pytest.raises(NotFound):
        services.message_forget(user_id=UserFactory().pk, message_id=mine.pk)
    with pytest.raises(Busy):
        services.message_forget(user_id=conversation.user_id, message_id=mine.pk)

    assert Message.objects.filter(pk__in=[mine.pk, streaming.pk]).count() == 2


# --- summaries leave superseded alternatives out ------------------------------------------------


def test_a_superseded_alternative_is_not_summary_input(settings: Any) -> None:
    settings.SUMMARY_KEEP_RECENT = 0
    conversation = ConversationFactory()
    _question, _first = exchange(conversation, "a colour?", "Blue.")
    regenerate_frames(conversation, FakeProvider(reply="Green."))

    candidates = summary_candidates(
        conversation_id=conversation.pk, after_id=0, config=MemorySettings.from_django_settings()
    )

    assert list(candidates.values_list("content", flat=True)) == ["a colour?", "Green."]


# --- fork ---------------------------------------------------------------------------------------


def test_fork_copies_the_history_up_to_the_message_with_the_summary_that_covers_no_more() -> None:
    conversation = ConversationFactory(title="Planning", title_source="user")
    one, _one_reply = exchange(conversation, "first", "One.")
    regenerate_frames(conversation, FakeProvider(reply="Uno."))
    _two, two_reply = exchange(conversation, "second", "Two.")
    exchange(conversation, "third", "Three.")
    Summary.objects.create(conversation=conversation, text="They began.", covers_until=one)

    fork = services.conversation_fork(user=conversation.user, conversation=conversation, message_id=two_reply.pk)

    assert fork.pk != conversation.pk
    assert (fork.avatar_id, fork.user_id, fork.title, fork.title_source) == (
        conversation.avatar_id,
        conversation.user_id,
        "Planning (fork)",
        "user",
    )
    assert history(fork) == [("user", "first"), ("assistant", "Uno."), ("user", "second"), ("assistant", "Two.")]
    assert Message.objects.filter(conversation=fork).count() == 4  # the superseded "One." stays behind
    copied = list(Message.objects.filter(conversation=fork).order_by("id"))
    assert copied[1].reply_to_id == copied[0].pk
    assert copied[3].reply_to_id == copied[2].pk
    assert fork.message_count == 4
    assert fork.last_read_message_id == copied[3].pk
    summary = Summary.objects.get(conversation=fork)
    assert (summary.text, summary.covers_until_id) == ("They began.", copied[0].pk)
    # And the original is untouched
    assert Message.objects.filter(conversation=conversation).count() == 7


def test_fork_before_what_the_summary_covers_leaves_the_summary_to_be_rebuilt() -> None:
    conversation = ConversationFactory()
    one, _ = exchange(conversation, "first", "One.")
    two, _ = exchange(conversation, "second", "Two.")
    Summary.objects.create(conversation=conversation, text="Both.", covers_until=two)

    fork = services.conversation_fork(user=conversation.user, conversation=conversation, message_id=one.pk)

    assert history(fork) == [("user", "first")]
    assert not Summary.objects.filter(conversation=fork).exists()


def test_fork_at_another_conversations_message_is_refused_and_copies_nothing() -> None:
    conversation = ConversationFactory()
    stranger_message = MessageFactory()

    with pytest.raises(InvalidInput):
        services.conversation_fork(user=conversation.user, conversation=conversation, message_id=stranger_message.pk)

    assert Conversation.objects.count() == 2


# --- titles -------------------------------------------------------------------------------------


class _NoModel(FakeProvider):
    @property
    def configured(self) -> bool:
        return False


def test_without_a_model_the_title_is_the_first_words_of_the_first_message() -> None:
    conversation = ConversationFactory(title="Avatar 1")
    exchange(conversation, "Could you help me plan a trip to Lisbon in May please", "Gladly.")

    title = conversation_title_generate(conversation_id=conversation.pk, provider=_NoModel())

    assert title == "Could you help me plan a…"
    conversation.refresh_from_db()
    assert (conversation.title, conversation.title_source) == ("Could you help me plan a…", "auto")


def test_the_model_writes_the_title_once_and_never_over_the_users() -> None:
    conversation = ConversationFactory()
    exchange(conversation, "Could you help me plan a trip to Lisbon", "Gladly.")
    provider = FakeProvider(reply='Title: "Lisbon trip in May."')

    assert conversation_title_generate(conversation_id=conversation.pk, provider=provider) == "Lisbon trip in May"
    assert conversation_title_generate(conversation_id=conversation.pk, provider=provider) is None
    assert len(provider.calls) == 1

    renamed = ConversationFactory(title="Mine", title_source="user")
    exchange(renamed, "hello", "Hi.")
    assert conversation_title_generate(conversation_id=renamed.pk, provider=provider) is None
    renamed.refresh_from_db()
    assert renamed.title == "Mine"


def test_the_title_call_is_counted_as_background_work_on_the_users_day() -> None:
    conversation = ConversationFactory()
    exchange(conversation, "Could you help me plan a trip to Lisbon", "Gladly.")
    spent_before = UsageDay.objects.get(user=conversation.user).tokens
    provider = FakeProvider(reply="Lisbon trip")

    conversation_title_generate(conversation_id=conversation.pk, provider=provider)

    record = UsageRecord.objects.get(kind="title")
    usage = provider._usage(provider.calls[0])
    assert (record.user_id, record.avatar_id, record.conversation_id, record.outcome) == (
        conversation.user_id,
        conversation.avatar_id,
        conversation.pk,
        "ok",
    )
    assert (record.prompt_tokens, record.completion_tokens) == (usage.prompt_tokens, usage.completion_tokens)
    spent = UsageDay.objects.get(user=conversation.user).tokens - spent_before
    assert spent == usage.prompt_tokens + usage.completion_tokens


def test_a_failing_title_model_falls_back_to_the_first_words() -> None:
    conversation = ConversationFactory()
    exchange(conversation, "budget review tomorrow", "Noted.")

    title = conversation_title_generate(
        conversation_id=conversation.pk, provider=FakeProvider(error=Unavailable("down"))
    )

    assert title == "budget review tomorrow"


def test_the_first_exchange_queues_the_title_in_the_background(settings: Any) -> None:
    # (Off elsewhere in the suite: conftest.py.)
    from companion.celery import app

    settings.CONVERSATION_TITLES_AUTO = True
    # In-process, as on embedded defaults, also where REDIS_URL is set (CI): no worker runs here.
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        _title_from_the_first_exchange()
    finally:
        app.conf.task_always_eager = eager


def _title_from_the_first_exchange() -> None:
    from core.background import in_process_tasks_wait

    conversation = ConversationFactory(title="Avatar")
    with provider_configured():  # no key in tests: the first words
        exchange(conversation, "what should I cook tonight", "Pasta.")
        assert in_process_tasks_wait(timeout=30)

    conversation.refresh_from_db()
    assert (conversation.title, conversation.title_source) == ("what should I cook tonight", "auto")


# --- REST ---------------------------------------------------------------------------------------


@pytest.fixture
def fake_model() -> Iterator[None]:
    with provider_configured("llm.fake.FakeProvider"):
        yield


def send(client: Client, method: str, path: str, user: User, body: Any = None) -> Any:
    from accounts.services import token_pair_create

    headers = {"Authorization": f"Bearer {token_pair_create(user=user).access}"}
    data = json.dumps(body) if body is not None else None
    return client.generic(method, path, data=data or "", content_type="application/json", headers=headers)


@pytest.mark.usefixtures("fake_model")
def test_rest_regenerate_alternatives_select_edit_forget_and_fork() -> None:
    client = Client()
    conversation = ConversationFactory()
    user = conversation.user
    question, first = exchange(conversation, "a colour?", "Blue.")

    regenerated = send(client, "POST", f"/api/conversations/{conversation.pk}/regenerate", user)
    assert regenerated.status_code == 201
    body = regenerated.json()
    second_id = body["assistant_message"]["id"]
    assert body["user_message"]["id"] == question.pk
    assert body["assistant_message"]["alternatives"] == [first.pk, second_id]

    alternatives = send(client, "GET", f"/api/messages/{first.pk}/alternatives", user).json()
    assert [m["id"] for m in alternatives["items"]] == [first.pk, second_id]
    assert alternatives["selected"] == second_id
    page = send(client, "GET", f"/api/conversations/{conversation.pk}/messages", user).json()
    assert [m["id"] for m in page["items"]][-2:] == [question.pk, second_id]

    selected = send(client, "POST", f"/api/messages/{first.pk}/select", user)
    assert selected.status_code == 200
    assert (selected.json()["id"], selected.json()["superseded"]) == (first.pk, False)
    page = send(client, "GET", f"/api/conversations/{conversation.pk}/messages", user).json()
    assert [m["id"] for m in page["items"]][-2:] == [question.pk, first.pk]

    edited = send(client, "PATCH", f"/api/messages/{question.pk}", user, {"content": "a number?"})
    assert edited.status_code == 200
    assert edited.json()["user_message"]["content"] == "a number?"
    assert Message.objects.filter(reply_to=question).count() == 1

    forked = send(client, "POST", f"/api/conversations/{conversation.pk}/fork", user, {"message_id": question.pk})
    assert forked.status_code == 201
    assert forked.json()["message_count"] == 1
    assert Message.objects.get(conversation_id=forked.json()["id"]).content == "a number?"

    forgotten = send(client, "DELETE", f"/api/messages/{question.pk}", user)
    assert forgotten.status_code == 204
    assert not Message.objects.filter(conversation=conversation, role=Role.USER).exists()


@pytest.mark.usefixtures("fake_model")
def test_rest_refuses_another_users_ids_and_bad_input() -> None:
    client = Client()
    conversation = ConversationFactory()
    question, reply = exchange(conversation, "hello", "Hi.")
    exchange(conversation, "again", "Hi again.")
    stranger = UserFactory()
    owner = conversation.user

    for method, path, body in [
        ("POST", f"/api/conversations/{conversation.pk}/regenerate", None),
        ("PATCH", f"/api/messages/{question.pk}", {"content": "x"}),
        ("GET", f"/api/messages/{reply.pk}/alternatives", None),
        ("POST", f"/api/messages/{reply.pk}/select", None),
        ("DELETE", f"/api/messages/{question.pk}", None),
        ("POST", f"/api/conversations/{conversation.pk}/fork", {"message_id": question.pk}),
    ]:
        assert send(client, method, path, stranger, body).status_code == 404, path

    # Editing a message that is not the last: 409; bad bodies: 422; a fork at a foreign message: 422
    assert send(client, "PATCH", f"/api/messages/{question.pk}", owner, {"content": "x"}).status_code == 409
    assert send(client, "PATCH", f"/api/messages/{reply.pk}", owner, {"content": "x"}).status_code == 404
    assert send(client, "PATCH", f"/api/messages/{question.pk}", owner, {"content": ""}).status_code == 422
    assert send(client, "POST", f"/api/messages/{question.pk}/select", owner).status_code == 422
    foreign = MessageFactory()
    fork = send(client, "POST", f"/api/conversations/{conversation.pk}/fork", owner, {"message_id": foreign.pk})
    assert (fork.status_code, fork.json()["field"]) == (422, "message_id")
    assert send(client, "POST", f"/api/conversations/{conversation.pk}/fork", owner, {}).status_code == 422
    assert Message.objects.filter(conversation=conversation).count() == 4
    assert Conversation.objects.filter(user=owner).count() == 1


def test_rest_rename_and_search() -> None:
    client = Client()
    user = UserFactory()
    trip = ConversationFactory(user=user, title="Avatar")
    MessageFactory(conversation=trip, content="Let us plan the Lisbon trip")
    groceries = ConversationFactory(user=user, title="Avatar")
    MessageFactory(conversation=groceries, content="eggs and milk")
    hidden = MessageFactory(conversation=groceries, role=Role.ASSISTANT, content="Lisbon?", superseded=True)
    ConversationFactory(title="Lisbon").messages.create(role=Role.USER, content="Lisbon", mode="secretary")

    renamed = send(client, "PATCH", f"/api/conversations/{groceries.pk}", user, {"title": "  Shopping   list "})
    assert renamed.status_code == 200
    assert (renamed.json()["title"], renamed.json()["title_source"]) == ("Shopping list", "user")
    assert send(client, "PATCH", f"/api/conversations/{groceries.pk}", user, {"title": " "}).status_code == 422
    assert send(client, "PATCH", f"/api/conversations/{groceries.pk}", user, {"title": "x" * 201}).status_code == 422

    def found(q: str) -> list[int]:
        return [c["id"] for c in send(client, "GET", f"/api/conversations?q={q}", user).json()]

    assert found("lisbon") == [trip.pk]  # another user's, and a superseded alternative, do not count
    assert found("shopping") == [groceries.pk]
    assert found("milk") == [groceries.pk]
    assert sorted(found("")) == sorted([trip.pk, groceries.pk])
    assert hidden.superseded


def test_two_title_writers_race_and_the_users_rename_wins() -> None:
    conversation = ConversationFactory()
    exchange(conversation, "hello there friend", "Hi.")
    entered, release = threading.Event(), threading.Event()

    class Slow(FakeProvider):
        async def complete(self, messages: Any, *, params: Any = None) -> Any:
            entered.set()
            await asyncio.to_thread(release.wait, 10)
            return await super().complete(messages, params=params)

    result: list[str | None] = []
    worker = threading.Thread(
        target=lambda: result.append(conversation_title_generate(conversation_id=conversation.pk, provider=Slow()))
    )
    worker.start()
    assert entered.wait(10)
    services.conversation_rename(conversation=conversation, title="Mine")
    release.set()
    worker.join(10)

    assert result == [None]
    conversation.refresh_from_db()
    assert (conversation.title, conversation.title_source) == ("Mine", "user")
