"""Conversation writes: create one (with the avatar's greeting), delete it, set its mode.

A turn, the message and its reply, is `conversations.turns`.
"""

import random

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.selectors import intimate_block_reason, profile_get
from avatars.models import Avatar
from conversations.models import SAFETY_CRISIS, Conversation, Message, Origin, Role
from conversations.turns.events import ModeChanged
from conversations.turns.prepare import SAFETY_BLOCK_REASON
from core.errors import DomainError, InvalidInput, NotFound
from core.modes import Mode

# --- Conversations -------------------------------------------------------------------------


def _greeting_pick(avatar: Avatar, *, user_name: str, first_meeting: bool) -> str:
    """The avatar's first message when it meets the user for the first time; afterwards any of
    its greetings (card authors write alternates such as "Back again..." for returning users)."""
    first = avatar.first_message if isinstance(avatar.first_message, str) and avatar.first_message.strip() else ""
    alternates = [g for g in avatar.alternate_greetings if isinstance(g, str) and g.strip()]
    greetings = [first] if first and first_meeting else [g for g in [first, *alternates] if g]
    if not greetings:
        return ""
    # Card greetings use {{user}} and {{char}} placeholders (SillyTavern convention).
    return random.choice(greetings).replace("{{user}}", user_name).replace("{{char}}", avatar.name)


def conversation_create(*, user: User, avatar_id: int) -> Conversation:
    """A new conversation, opened by the avatar's greeting in the avatar's default mode (when allowed)."""
    from avatars.selectors import avatar_get_visible

    avatar = avatar_get_visible(user=user, avatar_id=avatar_id)
    profile = profile_get(user=user)
    mode = avatar.default_mode
    if mode == Mode.INTIMATE and intimate_block_reason(profile=profile, avatar_allows=avatar.intimate_allowed):
        mode = Mode.SECRETARY
    first_meeting = not Conversation.objects.filter(user=user, avatar=avatar).exists()
    with transaction.atomic():
        conversation = Conversation.objects.create(user=user, avatar=avatar, mode=mode, title=avatar.name)
        greeting = _greeting_pick(avatar, user_name=profile.display_name or user.username, first_meeting=first_meeting)
        if greeting:
            opening = Message.objects.create(
                conversation=conversation,
                role=Role.ASSISTANT,
                content=greeting,
                mode=mode,
                finish_reason="greeting",
                origin=Origin.GREETING,
            )
            conversation.message_count = 1
            conversation.last_message_at = timezone.now()
            # The greeting is on screen when the conversation opens: it is not news.
            conversation.last_read_message_id = opening.pk
            conversation.save(update_fields=["message_count", "last_message_at", "last_read_message_id"])
    return conversation


def conversation_read_mark(*, conversation: Conversation, message_id: int | None = None) -> Conversation:
    """Mark the conversation read up to `message_id` (default: its newest message). It only
    moves forward: reading an older message on a second device does not unread newer ones.
    A message of another conversation is a `NotFound`."""
    messages = Message.objects.filter(conversation_id=conversation.pk)
    if message_id is None:
        newest = messages.order_by("-id").values_list("id", flat=True).first()
        if newest is None:
            return conversation
        message_id = newest
    elif not messages.filter(pk=message_id).exists():
        raise NotFound("Message not found in this conversation.", field="message_id")
    Conversation.objects.filter(pk=conversation.pk).filter(
        Q(last_read_message_id__isnull=True) | Q(last_read_message_id__lt=message_id)
    ).update(last_read_message_id=message_id)
    conversation.refresh_from_db(fields=["last_read_message_id"])
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    conversation.delete()


def conversation_mode_set(
    *, user: User, conversation: Conversation, mode: str | None, mode_locked: bool | None
) -> ModeChanged | None:
    """A user's explicit choice: `mode` locks it (unless `mode_locked` says otherwise), "auto" releases the lock.

    Returns the mode event to send, or None when nothing changed. Intimate mode is refused
    with an `intimate_blocked` error naming the reason when the gate is closed, and while the
    conversation's crisis is unresolved (reason "safety", until a calm turn clears it).
    """
    previous, previous_lock = conversation.mode, conversation.mode_locked
    if mode == "auto":
        new_mode, new_lock = previous, False if mode_locked is None else mode_locked
    elif mode is not None:
        if mode not in Mode.values:
            raise InvalidInput("mode must be secretary, intimate or auto.", field="mode")
        new_mode, new_lock = mode, True if mode_locked is None else mode_locked
    else:
        new_mode, new_lock = previous, previous_lock if mode_locked is None else mode_locked

    if new_mode == Mode.INTIMATE:
        reason: str | None = intimate_block_reason(
            profile=profile_get(user=user), avatar_allows=conversation.avatar.intimate_allowed
        )
        if not reason and conversation.safety_state == SAFETY_CRISIS:
            reason = SAFETY_BLOCK_REASON
        if reason:
            raise IntimateBlocked(reason)

    if (new_mode, new_lock) == (previous, previous_lock):
        return None
    Conversation.objects.filter(pk=conversation.pk).update(mode=new_mode, mode_locked=new_lock)
    conversation.mode, conversation.mode_locked = new_mode, new_lock
    return ModeChanged(mode=new_mode, previous=previous, source="user", locked=new_lock)


class IntimateBlocked(DomainError):
    code = "intimate_blocked"
    status_code = 403

    def __init__(self, reason: str) -> None:
        messages = {
            "avatar_disallows": "This avatar does not offer intimate mode.",
            "adult_required": "Intimate mode is for adults: confirm your age in your profile first.",
            "opt_in_required": "Intimate mode is off: turn it on in your profile first.",
            SAFETY_BLOCK_REASON: "Intimate mode is paused for now; it comes back once a calmer message clears it.",
        }
        super().__init__(messages.get(reason, "Intimate mode is not available."), field="mode")
        self.reason = reason

    def as_dict(self) -> dict[str, object]:
        return {**super().as_dict(), "reason": self.reason}
