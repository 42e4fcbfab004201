"""Reads of memory: the rolling summary, whether one is due, and the facts remembered about a user.

`summary_is_due`, `summary_get_for_prompt` and `memory_list_for_prompt` serve the turn and the
tasks; `summary_get`, `memory_list` and `memory_get_owned` serve the API, scoped to the user.
Writes are in `memory.services`.
"""

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db.models import QuerySet

from avatars.selectors import avatar_get_visible
from conversations.models import SAFETY_CRISIS, Conversation, Message, Role, Status
from core.db import CompiledQuery
from core.errors import NotFound
from llm.prompts.memory import facts_worth_extracting
from memory.config import MemorySettings
from memory.models import Memory, Summary

COUNTED_STATUSES = (Status.COMPLETE, Status.FALLBACK, Status.CANCELLED)


@dataclass(frozen=True)
class SummaryForPrompt:
    text: str
    covers_until: int  # the id of the last message the text covers; history after it is not in the summary


# --- the rolling summary -----------------------------------------------------------------------


def summary_is_due(*, conversation_id: int, covered_until: int | None = None) -> bool:
    """True when more than `SUMMARY_TRIGGER_MESSAGES` counted messages, older than the newest
    `SUMMARY_KEEP_RECENT`, are not covered by the summary yet.

    Counted: complete, fallback or cancelled messages with text (failed and streaming ones
    never are). `covered_until`: what the summary covers (`summary_covered_until`), when the
    caller has just read it.
    """
    if covered_until is None:
        covered_until = summary_covered_until(conversation_id=conversation_id)
    config = MemorySettings.from_django_settings()
    candidates = summary_candidates(conversation_id=conversation_id, after_id=covered_until, config=config)
    return candidates[: config.trigger_messages + 1].count() > config.trigger_messages


def summary_covered_until(*, conversation_id: int) -> int:
    """The id of the last message the conversation's summary covers; 0 while there is none."""
    covered = Summary.objects.filter(conversation_id=conversation_id).values_list("covers_until_id", flat=True).first()
    return covered or 0


def _counted(conversation_id: int) -> QuerySet[Message]:
    # A superseded alternative (a regenerated reply not selected) is not part of the conversation's story.
    return Message.objects.filter(
        conversation_id=conversation_id, status__in=COUNTED_STATUSES, content__gt="", superseded=False
    )


def summary_candidates(*, conversation_id: int, after_id: int, config: MemorySettings) -> QuerySet[Message]:
    """Counted messages after `after_id` and older than the recent window, oldest first."""
    counted = _counted(conversation_id)
    candidates = counted.filter(id__gt=after_id)
    if config.keep_recent:
        window = counted.order_by("-id").values_list("id", flat=True)[config.keep_recent - 1 : config.keep_recent]
        window_start = list(window)
        if not window_start:
            return Message.objects.none()
        candidates = candidates.filter(id__lt=window_start[0])
    # A reply still being written keeps its place: nothing after it is summarised before it is.
    in_flight = (
        Message.objects.filter(conversation_id=conversation_id, status=Status.STREAMING, id__gt=after_id)
        .order_by("id")
        .values_list("id", flat=True)
        .first()
    )
    if in_flight is not None:
        candidates = candidates.filter(id__lt=in_flight)
    return candidates.order_by("id")


def summary_get_for_prompt(*, conversation_id: int) -> SummaryForPrompt | None:
    row = Summary.objects.filter(conversation_id=conversation_id).values_list("text", "covers_until_id").first()
    if row is None:
        return None
    return SummaryForPrompt(text=row[0], covers_until=row[1])


def summary_get(*, conversation: Conversation) -> Summary:
    summary = Summary.objects.filter(conversation_id=conversation.pk).first()
    if summary is None:
        raise NotFound("This conversation has no summary yet.")
    return summary


# --- remembered facts --------------------------------------------------------------------------


def memory_extraction_is_worthwhile(*, message_id: int) -> bool:
    """Whether a stored message may disclose a durable fact, so that extracting it is worth a model call.

    A user message that passes `llm.prompts.memory.facts_worth_extracting`, read with the
    companion's reply before it (an answer to "when is her birthday?" passes whatever it says).
    Never one the crisis detector flagged: what a person says in crisis (health, means, the
    people they would leave) is not mined into facts (docs/safety.md).
    """
    message = Message.objects.filter(pk=message_id).only("id", "conversation_id", "role", "content", "safety").first()
    if message is None or message.role != Role.USER or message.safety == SAFETY_CRISIS:
        return False
    return facts_worth_extracting(message.content, previous_reply=reply_get_before(message=message))


def reply_get_before(*, message: Message) -> str | None:
    """The text of the companion's last counted reply before `message`, if any."""
    return (
        Message.objects.filter(
            conversation_id=message.conversation_id,
            role=Role.ASSISTANT,
            id__lt=message.pk,
            status__in=COUNTED_STATUSES,
            superseded=False,
        )
        .order_by("-id")
        .values_list("content", flat=True)
        .first()
    )


def memory_list_for_prompt(*, user_id: int, avatar_id: int, limit: int, pinned_only: bool = False) -> tuple[str, ...]:
    """The texts of what the avatar remembers about the user, pinned first, then the most recently updated."""
    rows = _MEMORY_FOR_PROMPT.rows(shape=(max(0, limit), pinned_only), user_id=user_id, avatar_id=avatar_id)
    return tuple(text for (text,) in rows)


def _memory_for_prompt_query(*, user_id: int, avatar_id: int, shape: tuple[int, bool]) -> QuerySet[Memory, Any]:
    limit, pinned_only = shape
    memories = Memory.objects.filter(user_id=user_id, avatar_id=avatar_id)
    if pinned_only:
        memories = memories.filter(pinned=True)
    return memories.order_by("-pinned", "-updated_at", "-id").values_list("text")[:limit]


# Read on every turn before the model is called: compiled once (core/db.py).
_MEMORY_FOR_PROMPT = CompiledQuery(_memory_for_prompt_query, arguments=("user_id", "avatar_id"))


def memory_list(*, user: User, avatar_id: int) -> QuerySet[Memory]:
    """The facts one avatar remembers about the user, pinned first; `NotFound` for an avatar they cannot see."""
    avatar_get_visible(user=user, avatar_id=avatar_id)
    return Memory.objects.filter(user_id=user.pk, avatar_id=avatar_id).order_by("-pinned", "id")


def memory_get_owned(*, user: User, memory_id: int) -> Memory:
    memory = Memory.objects.filter(pk=memory_id, user_id=user.pk).first()
    if memory is None:
        raise NotFound("Memory not found.")
    return memory
