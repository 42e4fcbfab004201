"""Memory through real turns: the orchestrator, the in-process tasks and the prompt builder together.

Turns run through `conversations.turns.turn_start`, as every interface runs them, against
one fake model: streamed, it chats; asked by the memory tasks (`complete`), it writes
summaries and picks out facts. The tasks run in process, as without REDIS_URL; the test
waits for them after each turn (`in_process_tasks_wait`), so what the next prompt holds is
deterministic.
"""

import json
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User

from conversations.models import Conversation, Message
from conversations.services import conversation_create
from core import background
from llm.base import ChatMessage, Completion, CompletionParams, StreamEvent
from llm.fake import FakeProvider
from memory import tasks
from memory.models import Memory, Summary
from testing.support import AvatarFactory, UserFactory, turn_complete

pytestmark = pytest.mark.django_db(transaction=True)  # the in-process tasks use their own connection

FACT_MESSAGE = "My sister Ana's birthday is 3 May."
FACT_TEXT = "Sam's sister Ana's birthday is 3 May."
GREETING = "Hello Sam! What's new?"


def _section(tag: str, prompt: str) -> str:
    found = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", prompt, re.DOTALL)
    return found.group(1) if found else ""


@dataclass
class MemoryAwareProvider(FakeProvider):
    """`calls` holds the chat prompts only; the memory tasks' prompts go to `memory_calls`.

    A summary counts every message it has folded in (the previous summary's count plus the
    new lines) and names the newest; facts come from one fixed phrase.
    """

    memory_calls: list[list[ChatMessage]] = field(default_factory=list)
    replies: int = 0

    async def complete(self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None) -> Completion:
        self.memory_calls.append(list(messages))
        prompt = messages[-1].content
        if "<new_messages>" in prompt:
            lines = _section("new_messages", prompt).splitlines()
            before = re.search(r"through (\d+) messages", _section("previous_summary", prompt))
            total = len(lines) + (int(before.group(1)) if before else 0)
            newest = lines[-1].split(": ", 1)[1]
            text = f"Sam and Luna have talked through {total} messages; the newest summarised was {newest!r}."
        else:
            said = _section("user_message", prompt)
            facts = [{"key": "sister_ana_birthday", "text": FACT_TEXT}] if "Ana's birthday is 3 May" in said else []
            text = json.dumps(facts)
        return Completion(text=text, finish_reason="stop", usage=self._usage(messages), model="fake-memory")

    def stream(
        self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None
    ) -> AsyncIterator[StreamEvent]:
        self.replies += 1
        self.reply = f"Reply {self.replies:02d}: how interesting."
        return super().stream(messages, params=params)


@pytest.fixture
def in_process() -> Iterator[None]:
    """No broker, as without REDIS_URL, even when the test run has one (CI)."""
    conf = tasks.summarize_conversation.app.conf
    before = conf.task_always_eager
    conf.task_always_eager = True
    yield
    conf.task_always_eager = before


@pytest.fixture
def provider(in_process: None, monkeypatch: pytest.MonkeyPatch, settings: Any) -> MemoryAwareProvider:
    """The one model of the test: the turns get it as an argument, the tasks from the registry."""
    settings.MESSAGE_RATE_PER_MINUTE = 1000
    model = MemoryAwareProvider()
    monkeypatch.setattr("llm.registry.provider_get", lambda: model)
    return model


@pytest.fixture
def chat() -> Conversation:
    user: User = UserFactory(username="sam")
    avatar = AvatarFactory(name="Luna", first_message=GREETING)
    return conversation_create(user=user, avatar_id=avatar.pk)


def turn(conversation: Conversation, content: str, provider: MemoryAwareProvider) -> list[ChatMessage]:
    """One turn, then its background memory work; returns the prompt the model was sent."""

    async_to_sync(turn_complete)(
        user_id=conversation.user_id, conversation_id=conversation.pk, message={"content": content}, provider=provider
    )
    assert background.in_process_tasks_wait(timeout=30)
    return provider.calls[-1]


def topic(number: int) -> str:
    # A question to the companion: unique, and not worth a fact extraction.
    return f"What do you think about topic {number:02d}?"


def history_of(prompt: list[ChatMessage]) -> list[str]:
    """The user and assistant messages of a prompt before the new user message."""
    return [m.content for m in prompt[:-1] if m.role in ("user", "assistant")]


def system_text(prompt: list[ChatMessage]) -> str:
    return "\n".join(m.content for m in prompt if m.role == "system")


def test_summary_and_facts_reach_later_prompts_and_covered_history_is_not_repeated(
    chat: Conversation, provider: MemoryAwareProvider
) -> None:
    # Given a conversation (the greeting, then the user's sister's birthday) and nine more turns
    turn(chat, FACT_MESSAGE, provider)
    for number in range(2, 11):
        turn(chat, topic(number), provider)

    # Then the fact was remembered from its message, and only that message was sent for extraction
    fact_message = Message.objects.get(conversation=chat, content=FACT_MESSAGE)
    assert list(Memory.objects.values_list("key", "text", "source_message_id")) == [
        ("sister_ana_birthday", FACT_TEXT, fact_message.pk)
    ]
    extraction_prompts = [call for call in provider.memory_calls if "<user_message>" in call[-1].content]
    assert [_section("user_message", call[-1].content) for call in extraction_prompts] == [FACT_MESSAGE]

    # And after 21 messages one summary covers all but the newest 12
    messages = list(Message.objects.filter(conversation=chat).order_by("id"))
    assert len(messages) == 21
    summary = Summary.objects.get()
    assert summary.covers_until_id == messages[8].pk
    assert (
        summary.text
        == "Sam and Luna have talked through 9 messages; the newest summarised was 'Reply 04: how interesting.'."
    )

    # When the next turn is sent
    prompt = turn(chat, topic(11), provider)

    # Then its prompt holds the summary and the remembered fact
    assert summary.text in system_text(prompt)
    assert FACT_TEXT in system_text(prompt)
    # And exactly the messages after the summary, oldest first: nothing it covers, nothing skipped
    assert history_of(prompt) == [m.content for m in messages[9:]]
    for covered in messages[:9]:
        assert all(covered.content not in m.content for m in prompt if m.role != "system"), covered.content
    assert prompt[-1] == ChatMessage(role="user", content=topic(11))


def test_fifty_messages_later_the_avatar_still_knows_the_birthday_and_nothing_is_summarised_twice(
    chat: Conversation, provider: MemoryAwareProvider
) -> None:
    # Given the fact in the first turn and thirty turns after it
    turn(chat, FACT_MESSAGE, provider)
    for number in range(2, 32):
        turn(chat, topic(number), provider)
    messages = list(Message.objects.filter(conversation=chat).order_by("id"))
    assert len(messages) == 63

    # When one more turn is sent
    prompt = turn(chat, topic(32), provider)

    # Then the fact is still in the prompt, the first message is not, and the history starts right after the summary
    assert FACT_TEXT in system_text(prompt)
    assert all(FACT_MESSAGE not in m.content for m in prompt)
    summary = Summary.objects.get()
    covered = [m.pk for m in messages].index(summary.covers_until_id) + 1
    assert history_of(prompt) == [m.content for m in messages[covered:]]
    assert len(history_of(prompt)) <= 20  # CONTEXT_MAX_PAIRS exchanges
    # And each summary folded in only messages no earlier summary had: the counts add up to what it covers
    assert summary.text.startswith(f"Sam and Luna have talked through {covered} messages;")
    summary_prompts = [call[-1].content for call in provider.memory_calls if "<new_messages>" in call[-1].content]
    sent = [line for prompt_text in summary_prompts for line in _section("new_messages", prompt_text).splitlines()]
    assert len(sent) == covered == len(set(sent))
    assert len(summary_prompts) == 5
