"""Reads of conversations and messages. Every read a user triggers is scoped to its owner."""

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from django.contrib.auth.models import User
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from avatars.models import Avatar
from conversations.intents import PhraseBank, phrase_bank_for_avatar
from conversations.models import Conversation, Message, Role, Status
from core.errors import NotFound
from images.selectors import image_ref, image_refs_by_id
from llm.catalog import usd_text
from llm.prompts import Persona, persona_from_avatar
from llm.quotas import QuotaLimits, quota_avatar_limits_of

MESSAGE_PAGE_DEFAULT = 50
MESSAGE_PAGE_MAX = 200


def conversation_get_owned(*, user: User, conversation_id: int) -> Conversation:
    """The user's conversation; another user's is indistinguishable from a missing one."""
    conversation = Conversation.objects.select_related("avatar").filter(pk=conversation_id, user_id=user.pk).first()
    if conversation is None:
        raise NotFound("Conversation not found.")
    return conversation


@dataclass(frozen=True, slots=True)
class AvatarForTurn:
    """What a turn reads of its avatar: its persona, the intimate gate, fallback lines and phrase bank."""

    id: int
    persona: Persona
    intimate_allowed: bool
    fallback_lines: tuple[str, ...]
    bank: PhraseBank
    default_model: str = ""  # the model it answers with when the user picks none (empty: the default)
    quota: QuotaLimits | None = None  # each user's daily limits with it; None: none


def avatar_for_turn(*, avatar_id: int, version: datetime) -> AvatarForTurn:
    """The avatar as of `version` (its `updated_at`), read once per version, not once per turn.

    A turn reads the version with its conversation (one column) instead of the whole avatar,
    whose card fields and phrases are most of what it would otherwise fetch and decode.
    Every change of the avatar or of one of its phrases moves `updated_at` on
    (`AvatarPhrase.save`, `.delete`). Each process keeps its own cache, so no invalidation
    has to travel between processes.
    """
    return _avatar_for_turn_at(avatar_id, version)


@lru_cache(maxsize=1024)
def _avatar_for_turn_at(avatar_id: int, version: datetime) -> AvatarForTurn:
    avatar = Avatar.objects.filter(pk=avatar_id).first()
    if avatar is None:
        raise NotFound("Avatar not found.")
    return AvatarForTurn(
        id=avatar.pk,
        persona=persona_from_avatar(avatar),
        intimate_allowed=avatar.intimate_allowed,
        fallback_lines=tuple(line for line in avatar.fallback_lines if isinstance(line, str) and line.strip()),
        bank=phrase_bank_for_avatar(tuple(avatar.phrases.order_by("id").values_list("mode", "text"))),
        default_model=avatar.default_model,
        quota=quota_avatar_limits_of(avatar),
    )


def conversation_list(*, user: User, avatar_id: int | None = None, query: str | None = None) -> QuerySet[Conversation]:
    """The user's conversations, newest first, each with `unread` (one query for the page).

    `query` keeps those whose title or whose messages' text match: PostgreSQL's full-text
    search (the "simple" configuration: no stemming, so it works for every language alike)
    on the text, a substring on the title; a substring on both on other databases (SQLite).
    """
    conversations = Conversation.objects.select_related("avatar").filter(user_id=user.pk)
    if avatar_id is not None:
        conversations = conversations.filter(avatar_id=avatar_id)
    if query is not None and query.strip():
        conversations = conversations.filter(Q(title__icontains=query.strip()) | Exists(_messages_matching(query)))
    return conversations.annotate(unread=_unread_count()).order_by("-updated_at", "-id")


def _messages_matching(query: str) -> QuerySet[Message]:
    """The messages of the outer conversation whose text matches `query` (superseded ones do not count)."""
    messages = Message.objects.filter(conversation_id=OuterRef("pk"), superseded=False)
    if connection.vendor == "postgresql":
        from django.contrib.postgres.search import SearchQuery, SearchVector

        return messages.annotate(document=SearchVector("content", config="simple")).filter(
            document=SearchQuery(query, config="simple", search_type="websearch")
        )
    return messages.filter(content__icontains=query.strip())


def conversation_unread_count(*, conversation: Conversation) -> int:
    """Assistant messages after the newest one the user has read."""
    return _unread_messages(conversation.pk, conversation.last_read_message_id or 0).count()


def _unread_messages(conversation: Any, after_id: Any) -> QuerySet[Message]:
    return Message.objects.filter(conversation_id=conversation, role=Role.ASSISTANT, pk__gt=after_id)


def _unread_count() -> Coalesce:
    # A correlated subquery, not a JOIN with GROUP BY: the page's other columns stay as they are.
    counted = (
        _unread_messages(OuterRef("pk"), Coalesce(OuterRef("last_read_message_id"), 0))
        .order_by()
        .values("conversation_id")
        .annotate(count=Count("id"))
        .values("count")
    )
    return Coalesce(Subquery(counted), 0)


def message_page(*, conversation: Conversation, before: int | None, limit: int) -> tuple[list[Message], int | None]:
    """Newest page of messages older than `before`, returned oldest first, and the cursor of the next page."""
    limit = max(1, min(limit, MESSAGE_PAGE_MAX))
    messages = Message.objects.filter(conversation_id=conversation.pk, superseded=False)
    if before is not None:
        messages = messages.filter(pk__lt=before)
    newest_first = list(messages.order_by("-id")[: limit + 1])
    has_more = len(newest_first) > limit
    page = list(reversed(newest_first[:limit]))
    return page, (page[0].pk if has_more and page else None)


def message_list_after(*, conversation_id: int, after: int, limit: int = MESSAGE_PAGE_MAX) -> list[Message]:
    """Messages a reconnecting client missed, oldest first (in-flight replies excluded)."""
    return list(
        Message.objects.filter(conversation_id=conversation_id, pk__gt=after, superseded=False)
        .exclude(status=Status.STREAMING)
        .order_by("id")[:limit]
    )


def message_dicts(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages as clients see them, each reply with its `alternatives` (one query for them all)."""
    asked = {m.reply_to_id for m in messages if m.role == Role.ASSISTANT and m.reply_to_id is not None}
    groups: dict[int, list[int]] = {}
    if asked:
        rows = Message.objects.filter(reply_to_id__in=asked, role=Role.ASSISTANT).order_by("id")
        for reply_to_id, reply_id in rows.values_list("reply_to_id", "id"):
            groups.setdefault(reply_to_id, []).append(reply_id)
    images = image_refs_by_id({m.image_id for m in messages if m.image_id is not None})
    return [
        message_dict(
            m,
            alternatives=groups.get(m.reply_to_id) if m.reply_to_id is not None else None,
            image=images.get(m.image_id) if m.image_id is not None else None,
        )
        for m in messages
    ]


def message_get_owned(*, user_id: int, message_id: int) -> Message:
    """One of the user's messages; another user's is indistinguishable from a missing one."""
    message = Message.objects.filter(pk=message_id, conversation__user_id=user_id).first()
    if message is None:
        raise NotFound("Message not found.")
    return message


def message_alternatives(*, user_id: int, message_id: int) -> list[Message]:
    """The replies to the same user message as this reply (or to this user message), oldest first."""
    message = message_get_owned(user_id=user_id, message_id=message_id)
    question = message.pk if message.role == Role.USER else message.reply_to_id
    if question is None:
        return [message]  # a greeting or a reminder answers nothing: it is its only version
    return list(Message.objects.filter(reply_to_id=question, role=Role.ASSISTANT).order_by("id"))


def message_dict(
    message: Message, *, alternatives: list[int] | None = None, image: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A message as clients see it, in events and in the API.

    `alternatives`: the ids of every reply to the same user message, this one included, oldest
    first (`message_dicts` reads them); by default the reply alone. `image`: the picture it
    carries, `{id, status, url, error}` (`message_dicts` reads them all at once); by default read here.
    """
    if alternatives is None:
        alternatives = [message.pk] if message.role == Role.ASSISTANT and message.reply_to_id else []
    if image is None and message.image_id is not None and message.image is not None:
        image = image_ref(message.image)
    return {
        "id": message.pk,
        "conversation_id": message.conversation_id,
        "role": message.role,
        "content": message.content,
        "mode": message.mode,
        "status": message.status,
        "client_id": message.client_id,
        "origin": message.origin,
        "reminder_id": message.reminder_id,
        "actions": message.actions or [],
        "late": message.late,
        "reply_to": message.reply_to_id,
        "alternatives": alternatives,
        "superseded": message.superseded,
        "route": message.route,
        "safety": message.safety or None,
        "model": message.model or None,
        "finish_reason": message.finish_reason or None,
        "error_code": message.error_code or None,
        "usage": {"prompt_tokens": message.prompt_tokens, "completion_tokens": message.completion_tokens},
        "ttft_ms": message.ttft_ms,
        "duration_ms": message.duration_ms,
        "cost_usd": usd_text(message.cost_usd) if message.cost_usd is not None else None,
        "image": image,
        "created_at": message.created_at.isoformat() if message.created_at else None,
    }
