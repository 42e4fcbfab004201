"""Recall: what a new message brings back from older ones, for whom, and into which prompt.

These run on the configured database: SQLite's FTS5 by default, PostgreSQL's full-text
search when DATABASE_URL points at one (the PostgreSQL-only test skips otherwise).
"""

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from accounts.models import Profile
from companion.celery import app as celery_app
from conversations.models import Conversation, Message, Role
from conversations.services import message_forget
from core.background import in_process_tasks_wait
from llm.fake import FakeProvider
from memory.models import Memory
from recall.models import RecallDocument, RecallLexeme
from recall.prompt import RECALL_OPEN, recall_section_build
from recall.selectors import recall_for_turn
from recall.services import recall_index_conversation
from recall.text import Speakers, date_spans, query_parse
from testing.support import AvatarFactory, ConversationFactory, MessageFactory, UserFactory
from testing.support import turn_frames as run_turn

WEDDING = "My sister's wedding will be at Thornbury Castle, the old place with the rose garden."
FILLER = [
    "I had pasta for dinner tonight.",
    "The weather was rainy all week.",
    "Work was busy, lots of meetings.",
    "I watched a film about space travel.",
    "My cat knocked over a plant again.",
    "I went for a run in the park.",
]


def _dated(message: Message, when: datetime) -> Message:
    Message.objects.filter(pk=message.pk).update(created_at=when)
    return message


def _history(conversation: Conversation, texts: Sequence[tuple[str, str]], *, start: datetime) -> list[Message]:
    made = []
    for index, (role, content) in enumerate(texts):
        made.append(
            _dated(MessageFactory(conversation=conversation, role=role, content=content), start + timedelta(days=index))
        )
    return made


def _months_of_talk(conversation: Conversation) -> Message:
    """A wedding told about long ago, then months of other things; returns the wedding message."""
    start = datetime(2025, 3, 1, 12, tzinfo=UTC)
    texts = [(Role.USER, WEDDING), (Role.ASSISTANT, "How lovely, a castle wedding!")]
    for index in range(40):
        texts.append((Role.USER, FILLER[index % len(FILLER)]))
        texts.append((Role.ASSISTANT, "I see, tell me more."))
    made = _history(conversation, texts, start=start)
    recall_index_conversation(conversation_id=conversation.pk)
    return made[0]


def _recall(conversation: Conversation, text: str, *, across: bool = False) -> list[int]:
    speakers = Speakers(user="Sam", avatar=conversation.avatar.name)
    found = recall_for_turn(
        user_id=conversation.user_id,
        avatar_id=conversation.avatar_id,
        conversation_id=conversation.pk,
        across_avatars=across,
        speakers=speakers,
        text=text,
        window=[],
        today=date(2026, 1, 10),
    )
    return [m.message_id for m in found.messages]


QUESTION = "what was the name of the place I told you about for my sister's wedding?"


@pytest.mark.django_db
def test_an_old_detail_is_recalled_first_with_a_reason() -> None:
    conversation = ConversationFactory()
    wedding = _months_of_talk(conversation)

    speakers = Speakers(user="Sam", avatar="Ava")
    found = recall_for_turn(
        user_id=conversation.user_id,
        avatar_id=conversation.avatar_id,
        conversation_id=conversation.pk,
        across_avatars=False,
        speakers=speakers,
        text=QUESTION,
        window=[],
        today=date(2026, 1, 10),
    )

    assert found.messages[0].message_id == wedding.pk
    assert "wedding" in found.messages[0].reason
    assert "sister" in found.messages[0].reason
    assert found.messages[0].score > 0


@pytest.mark.django_db
def test_of_two_equal_matches_the_one_from_the_day_of_a_strong_match_comes_first() -> None:
    conversation = ConversationFactory()
    aside = "I see, tell me more."
    trip = "The trip there was long."
    first_day = datetime(2025, 6, 1, 9, tzinfo=UTC)
    second_day = datetime(2025, 9, 1, 9, tzinfo=UTC)
    earlier = datetime(2025, 1, 1, 9, tzinfo=UTC)
    texts = [
        *[(earlier, Role.USER if n % 2 == 0 else Role.ASSISTANT, FILLER[n % len(FILLER)]) for n in range(40)],
        (first_day, Role.USER, "We sailed a small boat over to Crete with my uncle."),
        *[(first_day, Role.ASSISTANT if n % 2 == 0 else Role.USER, aside) for n in range(3)],
        (first_day, Role.USER, trip),
        *[(first_day, Role.ASSISTANT, aside) for _ in range(3)],
        *[(second_day, Role.ASSISTANT, aside) for _ in range(3)],
        (second_day, Role.USER, trip),
        *[(second_day, Role.ASSISTANT, aside) for _ in range(3)],
    ]
    made = [
        _dated(MessageFactory(conversation=conversation, role=role, content=content), when)
        for when, role, content in texts
    ]
    recall_index_conversation(conversation_id=conversation.pk)
    trip_on_the_boat_day, trip_later = made[44], made[51]

    found = _recall(conversation, "tell me about our boat trip to Crete")

    assert found[0] == made[40].pk
    # Same words, same neighbours: without the day's evidence the newer one would come first.
    assert found.index(trip_on_the_boat_day.pk) < found.index(trip_later.pk)


@pytest.mark.django_db
def test_another_users_messages_are_never_recalled() -> None:
    mine = ConversationFactory()
    theirs = ConversationFactory(avatar=mine.avatar)  # the same avatar, another user
    _months_of_talk(theirs)

    assert _recall(mine, QUESTION) == []
    assert _recall(mine, QUESTION, across=True) == []


@pytest.mark.django_db
def test_another_avatars_messages_are_recalled_only_when_the_user_shares_memory_between_avatars() -> None:
    user = UserFactory()
    told_there = ConversationFactory(user=user)
    wedding = _months_of_talk(told_there)
    here = ConversationFactory(user=user, avatar=AvatarFactory(owner=user))
    other_conversation_same_avatar = ConversationFactory(user=user, avatar=told_there.avatar)

    assert _recall(here, QUESTION) == []
    assert _recall(here, QUESTION, across=True)[0] == wedding.pk
    # The user's other conversation with the same avatar sees it without sharing.
    assert _recall(other_conversation_same_avatar, QUESTION)[0] == wedding.pk


@pytest.mark.django_db
def test_a_forgotten_message_is_not_recalled_and_its_document_goes() -> None:
    conversation = ConversationFactory()
    wedding = _months_of_talk(conversation)
    assert _recall(conversation, QUESTION)[0] == wedding.pk

    message_forget(user_id=conversation.user_id, message_id=wedding.pk)

    assert wedding.pk not in _recall(conversation, QUESTION)
    assert not RecallDocument.objects.filter(message_id=wedding.pk).exists()


@pytest.mark.django_db
def test_a_superseded_reply_and_the_recent_window_are_not_recalled() -> None:
    conversation = ConversationFactory()
    _months_of_talk(conversation)
    question = MessageFactory(conversation=conversation, role=Role.USER, content="Where do castles keep roses?")
    old = MessageFactory(
        conversation=conversation,
        role=Role.ASSISTANT,
        content="Castle roses grow in walled gardens.",
        reply_to=question,
    )
    MessageFactory(conversation=conversation, role=Role.ASSISTANT, content="I am not sure.", reply_to=question)
    Message.objects.filter(pk=old.pk).update(superseded=True)
    recall_index_conversation(conversation_id=conversation.pk)

    found = recall_for_turn(
        user_id=conversation.user_id,
        avatar_id=conversation.avatar_id,
        conversation_id=conversation.pk,
        across_avatars=False,
        speakers=Speakers(user="Sam", avatar="Ava"),
        text="castle roses gardens",
        window=[(question.pk, Role.USER, question.content)],
        today=date(2026, 1, 10),
    )

    ids = [m.message_id for m in found.messages]
    assert old.pk not in ids
    assert question.pk not in ids
    assert ids  # the old wedding message still matches "castle" and "rose"


@pytest.mark.django_db
def test_an_edited_message_is_found_by_its_new_words_only() -> None:
    conversation = ConversationFactory()
    _months_of_talk(conversation)
    last = MessageFactory(conversation=conversation, role=Role.USER, content="I adopted a parrot named Kiwi.")
    recall_index_conversation(conversation_id=conversation.pk)
    Message.objects.filter(pk=last.pk).update(content="I adopted a tortoise named Kiwi.")

    recall_index_conversation(conversation_id=conversation.pk)

    assert last.pk in _recall(conversation, "tortoise")
    assert last.pk not in _recall(conversation, "parrot")


@pytest.mark.django_db
def test_relevant_facts_are_recalled_not_only_the_newest() -> None:
    conversation = ConversationFactory()
    relevant = Memory.objects.create(
        user=conversation.user, avatar=conversation.avatar, text="Sister Jane marries in June", key="sister wedding"
    )
    for index in range(5):
        Memory.objects.create(
            user=conversation.user, avatar=conversation.avatar, text=f"Likes tea number {index}", key=f"tea {index}"
        )
    Memory.objects.create(user=UserFactory(), avatar=conversation.avatar, text="Sister Ann marries", key="sister")

    found = recall_for_turn(
        user_id=conversation.user_id,
        avatar_id=conversation.avatar_id,
        conversation_id=conversation.pk,
        across_avatars=False,
        speakers=Speakers(user="Sam", avatar="Ava"),
        text="when does my sister marry?",
        window=[],
        today=date(2026, 1, 10),
    )

    assert [f.memory_id for f in found.facts] == [relevant.pk]


@pytest.mark.django_db
def test_the_section_keeps_within_its_token_budget_best_first() -> None:
    conversation = ConversationFactory()
    _months_of_talk(conversation)
    found = recall_for_turn(
        user_id=conversation.user_id,
        avatar_id=conversation.avatar_id,
        conversation_id=conversation.pk,
        across_avatars=False,
        speakers=Speakers(user="Sam", avatar="Ava"),
        text="wedding park run film",
        window=[],
        today=date(2026, 1, 10),
    )
    assert len(found.messages) >= 3

    small = recall_section_build(recall=found, speakers=Speakers(user="Sam", avatar="Ava"), budget_tokens=90)
    large = recall_section_build(recall=found, speakers=Speakers(user="Sam", avatar="Ava"), budget_tokens=2000)
    none = recall_section_build(recall=found, speakers=Speakers(user="Sam", avatar="Ava"), budget_tokens=0)

    assert 0 < small.tokens <= 90
    assert 0 < len(small.message_ids) < len(large.message_ids) == len(found.messages)
    assert small.message_ids == large.message_ids[: len(small.message_ids)]
    assert none.text == ""
    assert "[2025-03-01] Sam: " + WEDDING in large.text


def test_dates_in_a_message_become_spans_of_time() -> None:
    today = date(2024, 3, 15)
    assert [(s.first, s.last) for s in date_spans("what did I do last summer?", today=today)] == [
        (date(2023, 6, 1), date(2023, 8, 31))
    ]
    assert [(s.first, s.last) for s in date_spans("in June", today=today)] == [(date(2023, 6, 1), date(2023, 6, 30))]
    assert date_spans("you may be right", today=today) == ()
    query = query_parse("What did Robin study?", speakers=Speakers(user="Robin", avatar="Kai"), today=today)
    assert query.terms == ("robin", "study")
    assert query.about_user
    assert not query.about_avatar


@pytest.mark.django_db(transaction=True)
def test_the_turns_prompt_carries_the_old_detail_and_the_reply_stores_why(settings: object) -> None:
    user = UserFactory()
    Profile.objects.update_or_create(user=user, defaults={"display_name": "Sam"})
    conversation = ConversationFactory(user=user)
    wedding = _months_of_talk(conversation)
    provider = FakeProvider(reply="It was Thornbury Castle.")

    run_turn(conversation, QUESTION, provider)

    prompt = provider.calls[0]
    recalled = [m.content for m in prompt if m.role == "system" and m.content.startswith(RECALL_OPEN)]
    assert len(recalled) == 1
    assert "Thornbury Castle" in recalled[0]
    assert "[2025-03-01] Sam:" in recalled[0]
    # The old message is far outside the recent window: only recall brings it.
    assert sum("Thornbury" in m.content for m in prompt) == 1
    reply = Message.objects.filter(conversation=conversation, role=Role.ASSISTANT).order_by("-id").first()
    assert reply is not None
    assert reply.recall is not None
    first = reply.recall["messages"][0]
    assert first["id"] == wedding.pk
    assert first["in_prompt"] is True
    assert "wedding" in first["reason"]
    assert "Thornbury" not in json.dumps(reply.recall)  # ids, scores and reasons: no text


@pytest.mark.django_db(transaction=True)
def test_the_turn_goes_on_without_recall_when_the_search_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    conversation = ConversationFactory()
    _months_of_talk(conversation)

    def broken(**_: object) -> None:
        raise RuntimeError("index is gone")

    monkeypatch.setattr("conversations.turns.prepare.recall_for_turn", broken)
    provider = FakeProvider(reply="Hmm.")

    frames = run_turn(conversation, QUESTION, provider)

    assert frames[-1]["type"] == "reply.end"
    assert frames[-1]["status"] == "complete"
    assert not any(m.content.startswith(RECALL_OPEN) for m in provider.calls[0])
    reply = Message.objects.filter(conversation=conversation, role=Role.ASSISTANT).order_by("-id").first()
    assert reply is not None
    assert reply.recall is not None
    assert reply.recall["error"] == "RuntimeError"


@pytest.mark.django_db
def test_postgresql_ranks_with_its_own_full_text_search() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("DATABASE_URL does not point at PostgreSQL")
    conversation = ConversationFactory()
    wedding = _months_of_talk(conversation)

    search = RecallDocument.objects.filter(message_id=wedding.pk).values_list("search", flat=True).first()

    assert search is not None
    assert "wed" in str(search)
    assert _recall(conversation, "weddings at castles")[0] == wedding.pk


@pytest.mark.django_db
def test_postgresql_keeps_each_stems_document_count_as_a_hash_and_finds_words_said_since() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("DATABASE_URL does not point at PostgreSQL")
    conversation = ConversationFactory()
    _months_of_talk(conversation)  # indexes, and counts the stems

    counts = dict(
        RecallLexeme.objects.filter(user_id=conversation.user_id, avatar_id=conversation.avatar_id).values_list(
            "lexeme_hash", "documents"
        )
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT left(md5('thornburi'), 16), left(md5('dinner'), 16)")
        thornbury, dinner = cursor.fetchone()
    assert counts[thornbury] == 3  # the wedding message and the two turns after it (their context)
    assert counts[dinner] > counts[thornbury]
    assert not any("thorn" in stem or "wed" in stem for stem in counts)  # hashes, no words
    # A word said after the last count (counted again at most every few minutes) is still found.
    later = _dated(
        MessageFactory(conversation=conversation, role=Role.USER, content="We adopted a greyhound called Pixel."),
        datetime(2025, 8, 1, tzinfo=UTC),
    )
    recall_index_conversation(conversation_id=conversation.pk)
    assert RecallLexeme.objects.filter(user_id=conversation.user_id).count() == len(counts)  # not counted again yet
    assert _recall(conversation, "what was the greyhound's name?")[0] == later.pk
    call_command("recall_index", stdout=StringIO())  # counts everyone's stems again
    assert RecallLexeme.objects.filter(user_id=conversation.user_id).count() > len(counts)
    # An erased account takes its counts with it.
    conversation.user.delete()
    assert not RecallLexeme.objects.filter(user_id=conversation.user_id).exists()


@pytest.mark.django_db
def test_sqlite_ranks_with_fts5() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("the default database is not SQLite")
    conversation = ConversationFactory()
    wedding = _months_of_talk(conversation)
    with connection.cursor() as cursor:
        cursor.execute("SELECT rowid FROM recall_fts WHERE recall_fts MATCH %s", ['body : "gardens"'])
        assert [row[0] for row in cursor.fetchall()] == [wedding.pk]  # porter: gardens -> garden
    assert _recall(conversation, "weddings at castles")[0] == wedding.pk


@pytest.mark.django_db
def test_recall_eval_prints_its_figures_on_a_small_file_and_keeps_nothing(tmp_path: Path) -> None:
    history = [
        {
            "id": "a1",
            "role": "user",
            "content": "I planted tomatoes in the garden.",
            "created_at": "2024-05-01T10:00:00Z",
        },
        {
            "id": "a2",
            "role": "assistant",
            "content": "Lovely, tomatoes need sun.",
            "created_at": "2024-05-01T10:01:00Z",
        },
        *[
            {"id": f"f{n}", "role": "user" if n % 2 else "assistant", "content": f"Filler talk number {n}."}
            for n in range(30)
        ],
    ]
    row = {
        "user_name": "Robin",
        "assistant_name": "Kai",
        "history": history,
        "questions": [
            {"question": "What did Robin plant?", "evidence": ["a1"], "category": "garden"},
            {"question": "What did Robin say about the moon landing?", "evidence": ["f4"], "category": "space"},
        ],
    }
    path = tmp_path / "tiny.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    before = Message.objects.count()
    out = StringIO()

    call_command("recall_eval", str(path), "--by-category", stdout=out)

    *_, garden, space, last = out.getvalue().strip().splitlines()
    assert last == "recall_at_5=0.500 recall_at_10=0.500 n=2"
    assert garden == "category garden: recall_at_5=1.000 recall_at_10=1.000 n=1"
    assert space == "category space: recall_at_5=0.000 recall_at_10=0.000 n=1"
    assert Message.objects.count() == before
    assert not RecallDocument.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_stored_turn_is_indexed_in_the_background_and_found_by_the_next_one(settings: Any) -> None:
    settings.RECALL_INDEX_AUTO = True  # (off elsewhere in the suite: conftest.py)
    # In-process, as on embedded defaults, also where REDIS_URL is set (CI): no worker runs here.
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    try:
        conversation = ConversationFactory()
        run_turn(
            conversation, "My nephew Tobias starts violin lessons in Lisbon next month.", FakeProvider(reply="Nice!")
        )
        in_process_tasks_wait(timeout=30)
    finally:
        celery_app.conf.task_always_eager = eager
    told = Message.objects.get(conversation=conversation, role=Role.USER)

    assert RecallDocument.objects.filter(conversation=conversation).count() == 2  # the message and its reply
    assert told.pk in _recall(conversation, "what is Tobias learning?")


@pytest.mark.django_db
def test_the_admin_shows_what_a_reply_recalled_and_why() -> None:
    conversation = ConversationFactory()
    wedding = _months_of_talk(conversation)
    found = recall_for_turn(
        user_id=conversation.user_id,
        avatar_id=conversation.avatar_id,
        conversation_id=conversation.pk,
        across_avatars=False,
        speakers=Speakers(user="Sam", avatar="Ava"),
        text=QUESTION,
        window=[],
        today=date(2026, 1, 10),
    )
    reply = MessageFactory(
        conversation=conversation, role=Role.ASSISTANT, content="Thornbury.", recall=found.as_record(used=[wedding.pk])
    )
    client = Client()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))

    page = client.get(reverse("admin:conversations_message_change", args=[reply.pk])).content.decode()

    assert "Recalled for this reply, and why" in page
    assert f"message {wedding.pk}</a>" in page
    assert "words: place, sister, wedding" in page
    assert "left out: over the budget" in page  # the others found, which did not fit


@pytest.mark.django_db
def test_recall_index_fills_in_what_was_stored_before_and_only_for_the_user_named() -> None:
    sam = UserFactory(username="sam")
    mine = ConversationFactory(user=sam)
    theirs = ConversationFactory()
    MessageFactory(conversation=mine, role=Role.USER, content="I keep bees on the roof.")
    MessageFactory(conversation=theirs, role=Role.USER, content="I keep goats.")
    out = StringIO()

    call_command("recall_index", "--user", "sam", stdout=out)

    assert out.getvalue().strip() == "documents_written=1"
    assert list(RecallDocument.objects.values_list("conversation_id", flat=True)) == [mine.pk]
    assert _recall(mine, "bees") != []


@pytest.mark.django_db
def test_a_rare_word_finds_its_message_among_many_holding_a_common_one_after_the_history_grew() -> None:
    conversation = ConversationFactory()
    MessageFactory(conversation=conversation, role=Role.USER, content="Hello there.")
    recall_index_conversation(conversation_id=conversation.pk)
    _recall(conversation, "hello")  # counts the user's documents (cached): one
    for index in range(150):
        MessageFactory(conversation=conversation, role=Role.USER, content=f"Coffee again today, cup {index}.")
    kayak = MessageFactory(conversation=conversation, role=Role.USER, content="Coffee before my kayak trip.")
    recall_index_conversation(conversation_id=conversation.pk)

    found = recall_for_turn(
        user_id=conversation.user_id,
        avatar_id=conversation.avatar_id,
        conversation_id=conversation.pk,
        across_avatars=False,
        speakers=Speakers(user="Sam", avatar="Ava"),
        text="coffee kayak",
        window=[],
        today=date(2026, 1, 10),
    )

    assert found.messages[0].message_id == kayak.pk
    assert all(m.score >= 0 for m in found.messages)  # a word in nearly every message weighs nothing, never less
