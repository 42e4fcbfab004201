"""The turn orchestrator with a fake provider: events, storage, idempotency, cancel, fallbacks, query counts.

Tests are sync and drive the async service through `async_to_sync`. They need real
transactions: `database_sync_to_async` closes connections left outside autocommit, which a
test wrapped in a transaction would be.
"""

import asyncio
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import cache
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Profile
from conversations.models import Message, Role, Status
from conversations.services import conversation_create
from conversations.turns import Busy, TurnEvent, turn_cancel_local, turn_running, turn_start
from conversations.turns import run as turns_run
from core.errors import InvalidInput, NotFound, Throttled
from llm.errors import NotConfigured, Unavailable
from llm.fake import FakeProvider
from testing.support import AvatarFactory, ConversationFactory, MessageFactory, UserFactory, turn_complete
from testing.support import turn_frames as run_turn

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_turn_emits_contract_events_in_order_and_stores_both_messages() -> None:
    # Given a conversation and a model that answers in four pieces
    conversation = ConversationFactory()
    provider = FakeProvider(reply="Sure, noted for Monday.", chunks=4)

    # When the user sends a message
    frames = run_turn(conversation, "Please note the budget review", provider)

    # Then the events come in contract order (the AI notice on a conversation's first turn), tokens numbered from 0
    types = [f["type"] for f in frames]
    assert types[0] == "message.created"
    assert types[1:3] == ["notice", "reply.start"]
    assert types[-1] == "reply.end"
    tokens = [f for f in frames if f["type"] == "token"]
    assert [t["seq"] for t in tokens] == [0, 1, 2, 3]
    assert "".join(t["delta"] for t in tokens) == "Sure, noted for Monday."
    end = frames[-1]
    assert end["status"] == "complete"
    assert end["content"] == "Sure, noted for Monday."
    assert end["finish_reason"] == "stop"
    assert end["usage"]["completion_tokens"] == provider._usage([]).completion_tokens
    # And both messages are stored, the reply linked to the question
    user_message, reply = Message.objects.filter(conversation=conversation).order_by("id")
    assert (user_message.role, user_message.content) == (Role.USER, "Please note the budget review")
    assert (reply.role, reply.status, reply.content) == (Role.ASSISTANT, Status.COMPLETE, "Sure, noted for Monday.")
    assert reply.reply_to_id == user_message.pk
    assert reply.model == "fake-model"
    assert reply.ttft_ms is not None
    assert frames[2]["message_id"] == reply.pk
    conversation.refresh_from_db()
    assert conversation.message_count == 2


def test_the_prompt_sent_to_the_model_ends_with_the_new_message_after_history() -> None:
    conversation = ConversationFactory()
    MessageFactory(conversation=conversation, role=Role.USER, content="earlier question")
    MessageFactory(conversation=conversation, role=Role.ASSISTANT, content="earlier answer")
    provider = FakeProvider()

    run_turn(conversation, "and now this", provider)

    sent = provider.calls[0]
    assert sent[0].role == "system"
    assert [(m.role, m.content) for m in sent[-3:]] == [
        ("user", "earlier question"),
        ("assistant", "earlier answer"),
        ("user", "and now this"),
    ]


def test_a_repeated_client_id_is_stored_once_and_the_model_is_not_called_again() -> None:
    conversation = ConversationFactory()
    provider = FakeProvider(reply="Done.")
    run_turn(conversation, "add eggs to my list", provider, client_id="c-1")

    frames = run_turn(conversation, "add eggs to my list", provider, client_id="c-1")

    assert Message.objects.filter(conversation=conversation).count() == 2
    assert len(provider.calls) == 1
    assert frames[0]["type"] == "message.created"
    assert frames[0]["message"]["duplicate"] is True
    assert frames[-1]["type"] == "reply.end"
    assert frames[-1]["content"] == "Done."


def test_stop_keeps_the_partial_text_marks_it_cancelled_and_closes_the_stream() -> None:
    conversation = ConversationFactory()
    provider = FakeProvider(reply="one two three four five six seven eight", chunks=8, delay=0.05)
    frames: list[dict[str, Any]] = []

    async def scenario() -> None:
        cancel = asyncio.Event()

        async def emit(event: TurnEvent) -> None:
            frames.append(event.frame())
            if sum(1 for f in frames if f["type"] == "token") == 2:
                cancel.set()

        await turn_complete(
            user_id=conversation.user_id,
            conversation_id=conversation.pk,
            message={"content": "tell me a long story"},
            provider=provider,
            listener=emit,
            cancel=cancel,
        )

    async_to_sync(scenario)()

    end = frames[-1]
    assert end["type"] == "reply.end"
    assert end["status"] == "cancelled"
    streamed = "".join(f["delta"] for f in frames if f["type"] == "token")
    assert end["content"] == streamed
    assert 0 < len(streamed) < len(provider.reply)
    reply = Message.objects.get(conversation=conversation, role=Role.ASSISTANT)
    assert (reply.status, reply.content) == (Status.CANCELLED, streamed)
    assert provider.closed == 1
    assert provider.completed == 0


def test_a_model_failure_before_any_token_stores_a_fallback_line() -> None:
    avatar = AvatarFactory(fallback_lines=["I'm a bit lost for words right now."])
    conversation = ConversationFactory(avatar=avatar)
    provider = FakeProvider(error=Unavailable("503"))

    frames = run_turn(conversation, "what's on my agenda", provider)

    end = frames[-1]
    assert end["status"] == "fallback"
    assert end["content"] == "I'm a bit lost for words right now."
    assert end["error"]["code"] == "llm_unavailable"
    reply = Message.objects.get(conversation=conversation, role=Role.ASSISTANT)
    assert (reply.status, reply.content, reply.error_code) == (
        Status.FALLBACK,
        "I'm a bit lost for words right now.",
        "llm_unavailable",
    )


def test_a_failure_after_tokens_keeps_the_text_and_says_why() -> None:
    conversation = ConversationFactory()
    provider = FakeProvider(reply="abcdefgh", chunks=4, error=Unavailable("dropped"), fail_after=2)

    frames = run_turn(conversation, "hello there", provider)

    end = next(f for f in frames if f["type"] == "reply.end")
    assert (end["status"], end["content"], end["error"]["code"]) == ("failed", "abcd", "llm_unavailable")
    assert frames[-1] == {
        "type": "error",
        "code": "llm_unavailable",
        "message": Unavailable.user_message,
        "retryable": True,
    }
    reply = Message.objects.get(conversation=conversation, role=Role.ASSISTANT)
    assert (reply.status, reply.content) == (Status.FAILED, "abcd")


def test_without_a_configured_model_the_avatar_says_so_plainly() -> None:
    conversation = ConversationFactory()

    frames = run_turn(conversation, "hi", FakeProvider(error=NotConfigured()))

    assert frames[-1]["status"] == "fallback"
    assert frames[-1]["content"] == NotConfigured.user_message
    assert "LLM_API_KEY" in frames[-1]["content"]


def test_a_second_message_while_a_reply_streams_is_refused_as_busy_and_not_stored() -> None:
    conversation = ConversationFactory()
    cache.set(f"turn-lock:{conversation.pk}", 1)
    provider = FakeProvider()

    with pytest.raises(Busy):
        run_turn(conversation, "are you there?", provider)

    assert not Message.objects.filter(conversation=conversation).exists()
    assert provider.calls == []


def test_the_model_call_goes_out_with_the_prompt_and_the_user_message_is_stored_before_message_created() -> None:
    conversation = ConversationFactory()
    provider = FakeProvider(reply="Hi there.")

    async def scenario() -> tuple[int, bool, dict[str, Any]]:
        frames: list[dict[str, Any]] = []

        async def emit(event: TurnEvent) -> None:
            frames.append(event.frame())

        running = await turn_start(
            user_id=conversation.user_id,
            conversation_id=conversation.pk,
            message={"content": "hello"},
            provider=provider,
            listener=emit,
        )
        calls_when_started = len(provider.calls)
        stored_when_started = await Message.objects.filter(conversation=conversation, content="hello").aexists()
        await running.result()
        return calls_when_started, stored_when_started, frames[0]

    calls_when_started, stored_when_started, created = async_to_sync(scenario)()

    assert calls_when_started == 1
    assert stored_when_started
    assert len(provider.calls) == 1
    assert created["type"] == "message.created"
    assert Message.objects.get(pk=created["message"]["id"]).content == "hello"
    assert Message.objects.get(conversation=conversation, role=Role.ASSISTANT).content == "Hi there."


def test_when_the_turn_cannot_be_stored_the_model_call_already_sent_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    conversation = ConversationFactory()
    provider = FakeProvider(reply="one two three four", chunks=4, delay=0.05)

    def broken_create(**kwargs: Any) -> Message:
        raise DatabaseError("disk full")

    monkeypatch.setattr(Message.objects, "create", broken_create)

    with pytest.raises(DatabaseError):
        run_turn(conversation, "hello", provider)

    assert len(provider.calls) == 1
    assert (provider.closed, provider.completed) == (1, 0)
    assert not Message.objects.filter(conversation=conversation).exists()
    assert cache.get(f"turn-lock:{conversation.pk}") is None
    assert cache.get(f"user-replies:{conversation.user_id}") == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"content": "   "}, "content"),
        ({"content": "x" * 8001}, "content"),
        ({"content": "hi", "temperature": 2.5}, "temperature"),
        ({"content": "hi", "max_tokens": 0}, "max_tokens"),
        ({"content": "hi", "client_id": "x" * 65}, "client_id"),
        ({"content": "hi", "model": "bad model"}, "model"),
        ({"content": "hi", "temperature": True}, "temperature"),
        ({"content": "hi", "colour": "blue"}, "colour"),
    ],
)
def test_invalid_input_is_refused_before_anything_is_stored(kwargs: dict[str, Any], field: str) -> None:
    conversation = ConversationFactory()
    provider = FakeProvider()
    content = kwargs.pop("content")

    with pytest.raises(InvalidInput) as error:
        run_turn(conversation, content, provider, **kwargs)

    assert error.value.field == field
    assert not Message.objects.filter(conversation=conversation).exists()
    assert provider.calls == []
    # And nothing was locked: the next message of the conversation is answered
    assert run_turn(conversation, "hello", provider)[-1]["status"] == "complete"


def test_another_users_conversation_is_not_found() -> None:
    conversation = ConversationFactory()
    stranger = UserFactory(username="stranger")
    provider = FakeProvider()

    with pytest.raises(NotFound):
        async_to_sync(turn_complete)(
            user_id=stranger.pk, conversation_id=conversation.pk, message={"content": "hello"}, provider=provider
        )

    assert provider.calls == []
    assert not Message.objects.filter(conversation=conversation).exists()


def test_a_clear_request_for_help_switches_to_secretary_and_the_decision_is_stored() -> None:
    user = UserFactory()
    Profile.objects.filter(user=user).update(intimate_opt_in=True)
    conversation = ConversationFactory(user=user, mode="intimate")
    Profile.objects.filter(user=user).update(adult_confirmed_at="2024-01-01T00:00:00Z")

    frames = run_turn(conversation, "remind me to call the dentist tomorrow at 9am", FakeProvider())

    mode = next(f for f in frames if f["type"] == "mode")
    assert (mode["mode"], mode["previous"], mode["reason"]["source"]) == ("secretary", "intimate", "intent")
    assert mode["reason"]["matched"]
    assert [f["type"] for f in frames[:4]] == ["message.created", "mode", "notice", "reply.start"]
    conversation.refresh_from_db()
    assert conversation.mode == "secretary"
    user_message = Message.objects.get(conversation=conversation, role=Role.USER)
    assert user_message.route is not None
    assert user_message.route["switch"] is True
    assert user_message.mode == "secretary"


def test_intimate_talk_without_opt_in_stays_in_secretary_and_says_why() -> None:
    conversation = ConversationFactory(mode="secretary")

    frames = run_turn(conversation, "i miss you so much, i feel so lonely tonight", FakeProvider())

    mode = next(f for f in frames if f["type"] == "mode")
    assert mode["mode"] == "secretary"
    assert mode["blocked"] == "intimate"
    assert mode["reason"]["code"] == "adult_required"
    conversation.refresh_from_db()
    assert conversation.mode == "secretary"


def test_an_opted_in_adult_is_taken_to_intimate_mode_and_the_prompt_uses_their_display_name() -> None:
    user = UserFactory()
    Profile.objects.filter(user=user).update(
        intimate_opt_in=True, adult_confirmed_at="2024-01-01T00:00:00Z", display_name="Sam"
    )
    conversation = ConversationFactory(user=user, mode="secretary", avatar=AvatarFactory(intimate_allowed=True))
    provider = FakeProvider()

    frames = run_turn(conversation, "i miss you so much, i feel so lonely tonight", provider)

    mode = next(f for f in frames if f["type"] == "mode")
    assert (mode["mode"], mode["previous"], mode.get("blocked")) == ("intimate", "secretary", None)
    assert "Sam" in provider.calls[0][0].content


def test_a_user_without_a_profile_row_gets_one_and_a_reply() -> None:
    conversation = ConversationFactory()
    Profile.objects.filter(user_id=conversation.user_id).delete()

    frames = run_turn(conversation, "hello", FakeProvider(reply="Hi!"))

    assert frames[-1]["status"] == "complete"
    assert Profile.objects.filter(user_id=conversation.user_id).count() == 1


def test_an_edit_of_the_avatar_shows_in_the_very_next_turn() -> None:
    conversation = ConversationFactory()
    provider = FakeProvider()
    run_turn(conversation, "hello", provider)
    avatar = conversation.avatar
    avatar.personality = "Speaks only in sea shanties."
    avatar.fallback_lines = ["Arr, the wind took my words."]
    avatar.save()

    run_turn(conversation, "hello again", provider)
    frames = run_turn(conversation, "and again", FakeProvider(error=Unavailable("down")))

    assert "sea shanties" not in provider.calls[0][0].content
    assert "sea shanties" in provider.calls[1][0].content
    assert frames[-1]["content"] == "Arr, the wind took my words."


def test_creating_a_conversation_opens_with_the_avatars_greeting() -> None:
    user = UserFactory()
    avatar = AvatarFactory(first_message="Hi {{user}}, I'm {{char}}.", alternate_greetings=[], name="Ada")

    conversation = conversation_create(user=user, avatar_id=avatar.pk)

    greeting = Message.objects.get(conversation=conversation)
    assert greeting.role == Role.ASSISTANT
    assert greeting.content == f"Hi {user.profile.display_name}, I'm Ada."


def queries_of_one_turn(history_size: int, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of one turn's database work: its prepare, its store and its reply's last write,
    each captured on the thread it runs on."""
    conversation = ConversationFactory()
    Message.objects.bulk_create(
        Message(
            conversation=conversation,
            role=Role.USER if i % 2 == 0 else Role.ASSISTANT,
            content=f"m{i}",
            mode="secretary",
        )
        for i in range(history_size)
    )
    run_turn(conversation, "warm-up", FakeProvider())  # first-use caches (phrase bank, content types) out of the count
    captured: list[str] = []

    def capturing(function: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            with CaptureQueriesContext(connection) as queries:  # this thread's connection
                try:
                    return function(*args, **kwargs)
                finally:
                    captured.extend(query["sql"] for query in queries.captured_queries)

        return run

    with monkeypatch.context() as patched:
        for name in ("_turn_prepare", "_turn_store", "_turn_end"):
            patched.setattr(f"conversations.turns.run.{name}", capturing(getattr(turns_run, name)))
        run_turn(conversation, "what's next on my list", FakeProvider())
    return captured


def test_queries_per_turn_are_a_small_constant_at_10_and_at_10000_stored_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small = queries_of_one_turn(10, monkeypatch)
    large = queries_of_one_turn(10_000, monkeypatch)

    assert len(small) == len(large), "\n".join(large)
    # The conversation (with avatar, user, profile and summary), history and facts; one
    # transaction for the stale-stream cleanup, both messages and the conversation; the
    # reply's UPDATE, then its cost on the user's day (11 today). The phrase bank is cached per
    # avatar version; rate limit and locks are cache-only; memory scheduling runs after
    # reply.end and is not counted. Recall (recall.selectors) adds its search and the facts: 2
    # queries on SQLite; on PostgreSQL the message's lexemes, their counts (unless cached) and the
    # search (left out when no document holds a lexeme), and the facts: up to 4.
    assert 0 < len(large) <= MAX_QUERIES_PER_TURN, "\n".join(large)


MAX_QUERIES_PER_TURN = 17


def test_a_user_with_too_many_replies_in_flight_is_throttled_and_nothing_is_stored(settings: Any) -> None:
    settings.REPLIES_CONCURRENT_PER_USER = 1
    user = UserFactory()
    busy_elsewhere = ConversationFactory(user=user)
    conversation = ConversationFactory(user=user)
    cache.set(f"turn-lock:{busy_elsewhere.pk}", 1)
    cache.set(f"user-replies:{user.pk}", 1)  # one reply of this user is streaming in another conversation

    with pytest.raises(Throttled):
        run_turn(conversation, "hello", FakeProvider())

    assert not Message.objects.filter(conversation=conversation).exists()
    assert cache.get(f"user-replies:{user.pk}") == 1
    assert cache.get(f"turn-lock:{conversation.pk}") is None


def test_a_finished_turn_gives_its_reply_slot_and_lock_back() -> None:
    conversation = ConversationFactory()

    run_turn(conversation, "hello", FakeProvider())

    assert cache.get(f"user-replies:{conversation.user_id}") == 0
    assert cache.get(f"turn-lock:{conversation.pk}") is None


def test_a_reply_that_cannot_be_stored_still_ends_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    conversation = ConversationFactory()

    def broken_store(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr("conversations.turns.run.reply_outcome_store", broken_store)

    frames = run_turn(conversation, "hello", FakeProvider(reply="Hi there."))

    end = next(f for f in frames if f["type"] == "reply.end")
    assert (end["status"], end["content"], end["error"]["code"]) == ("failed", "Hi there.", "store_failed")
    assert frames[-1]["type"] == "error"
    assert frames[-1]["code"] == "store_failed"
    # And the conversation is not left locked: the next message is not refused as busy
    assert cache.get(f"turn-lock:{conversation.pk}") is None


def test_a_caller_cancelled_while_the_turn_starts_leaves_no_lock_and_the_reply_is_still_stored() -> None:
    # Given a client whose request is cancelled (it hung up) while the door prepares its turn
    conversation = ConversationFactory()
    provider = FakeProvider(reply="Hi there.")

    async def scenario() -> None:
        caller = asyncio.ensure_future(
            turn_start(
                user_id=conversation.user_id,
                conversation_id=conversation.pk,
                message={"content": "hello"},
                provider=provider,
            )
        )
        await asyncio.sleep(0)  # the caller is inside the door now
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        # The turn goes on without its caller: wait for it to start, then to end (no database
        # reads meanwhile: the in-memory test database refuses a read during another thread's write)
        for _ in range(250):
            if turn_running(conversation.pk):
                break
            await asyncio.sleep(0.01)
        for _ in range(250):
            if not turn_running(conversation.pk):
                return
            await asyncio.sleep(0.02)

    # When the turn has run its course
    async_to_sync(scenario)()

    # Then the reply is stored in full and the conversation is free for the next message
    reply = Message.objects.get(conversation=conversation, role=Role.ASSISTANT)
    assert (reply.status, reply.content) == (Status.COMPLETE, "Hi there.")
    assert cache.get(f"turn-lock:{conversation.pk}") is None
    assert cache.get(f"user-replies:{conversation.user_id}") == 0
    assert run_turn(conversation, "and again", provider)[-1]["status"] == "complete"


def test_a_repeated_client_id_while_its_reply_streams_answers_with_that_reply_and_stop_still_reaches_it() -> None:
    # Given a reply that is still streaming for client_id c-1
    conversation = ConversationFactory()
    provider = FakeProvider(reply="one two three four five six seven eight", chunks=8, delay=0.05)
    again: list[dict[str, Any]] = []

    async def scenario() -> tuple[Any, Any]:
        async def listener(event: TurnEvent) -> None:
            again.append(event.frame())

        message = {"content": "tell me a story", "client_id": "c-1"}
        ids = {"user_id": conversation.user_id, "conversation_id": conversation.pk}
        first = await turn_start(**ids, message=message, provider=provider)
        await asyncio.sleep(0.08)  # a token or two out
        # When the same message arrives again (a retry from the app), and then the user stops
        second = await turn_start(**ids, message=message, provider=provider, listener=listener)
        stopped = turn_cancel_local(conversation.pk)
        assert stopped
        return await first.result(), await second.result()

    first, second = async_to_sync(scenario)()

    # Then the model was called once, the stop reached the streaming turn, and the repeat's
    # answer is that turn's reply as stored: never a reply.end saying "streaming"
    assert len(provider.calls) == 1
    assert first.assistant_message["status"] == "cancelled"
    assert [f["type"] for f in again] == ["message.created", "reply.end"]
    assert again[0]["message"]["duplicate"] is True
    assert (again[1]["status"], again[1]["content"]) == ("cancelled", first.assistant_message["content"])
    assert second.duplicate is True
    assert second.assistant_message["id"] == first.assistant_message["id"]
    assert Message.objects.filter(conversation=conversation).count() == 2


def test_a_first_meeting_opens_with_the_first_message_never_a_greeting_for_returning_users() -> None:
    # Given an avatar whose alternate greeting is meant for a user it already knows
    user = UserFactory()
    avatar = AvatarFactory(first_message="Nice to meet you!", alternate_greetings=["Back again, {{user}}?"])

    # When the user meets it for the first time, many times over (the pick is random)
    firsts = {
        Message.objects.get(conversation=conversation_create(user=UserFactory(), avatar_id=avatar.pk)).content
        for _ in range(12)
    }
    conversation_create(user=user, avatar_id=avatar.pk)
    later = {
        Message.objects.filter(conversation=conversation_create(user=user, avatar_id=avatar.pk)).get().content
        for _ in range(24)
    }

    # Then every first meeting got the first message; later conversations may get either
    assert firsts == {"Nice to meet you!"}
    assert later == {"Nice to meet you!", f"Back again, {user.profile.display_name}?"}


def test_locks_that_cannot_be_given_back_for_an_outage_are_a_warning_not_an_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """After the reply is stored, Redis gone must not turn the turn into "storing the reply failed"."""
    import logging

    import redis.exceptions
    from django.core.cache import caches

    from conversations.turns.locks import turn_locks_release
    from testing.support import logger_captured

    def refused(*args: object, **kwargs: object) -> None:
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(type(caches["default"]), "delete", refused)

    with logger_captured(caplog, "companion.turns"):
        turn_locks_release(user_id=1, conversation_id=2)  # raises nothing

    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "companion.turns"] == [
        (logging.WARNING, "the cache did not answer: the turn's locks expire on their own")
    ]
