"""Conversation writes: create one (with the avatar's greeting), rename, fork or delete it,
set its mode; and the user's hold on their messages: pick a reply among its alternatives,
forget a message.

A turn, the message and its reply, is `conversations.turns`; so are a regeneration and an
edit, which are turns (`conversations.turns.request.Regenerate`).
"""

import random

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Greatest
from django.utils import timezone

from accounts.selectors import intimate_block_reason, profile_get
from avatars.models import Avatar
from conversations.models import SAFETY_CRISIS, Conversation, Message, Origin, Role, Status
from conversations.selectors import message_dicts, message_get_owned
from conversations.turns.events import AlternativeSelected, MessagesDeleted, ModeChanged
from conversations.turns.locks import Busy, conversation_lock_held
from conversations.turns.prepare import SAFETY_BLOCK_REASON
from core.errors import DomainError, InvalidInput, NotFound
from core.modes import Mode
from memory.models import Summary
from memory.services import summary_discard_covering

TITLE_MAX_CHARS = 200
FORK_BATCH = 500

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
    """Delete the conversation with its messages and pictures; the picture files go once the delete commits."""
    from images.models import Image
    from images.services import picture_files_delete_on_commit

    with transaction.atomic():
        picture_files_delete_on_commit(images=Image.objects.filter(conversation_id=conversation.pk))
        conversation.delete()


def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    """The user's own title: from now on an automatic title never replaces it."""
    cleaned = " ".join(title.split())
    if not cleaned:
        raise InvalidInput("title must not be empty.", field="title")
    if len(cleaned) > TITLE_MAX_CHARS:
        raise InvalidInput(f"title is longer than {TITLE_MAX_CHARS} characters.", field="title")
    Conversation.objects.filter(pk=conversation.pk).update(title=cleaned, title_source="user")
    conversation.title, conversation.title_source = cleaned, "user"
    return conversation


def conversation_fork(*, user: User, conversation: Conversation, message_id: int) -> Conversation:
    """A new conversation with the same avatar and the history up to `message_id` (included).

    Copied: the messages the history uses (superseded alternatives are not; a fork at an
    alternative takes that one), in order, with their replies linked, the mode and its lock.
    The facts belong to the user and the avatar, so both conversations share them. The
    summary is copied when it covers nothing after the fork point; otherwise the new
    conversation gets its own, built in the background when due. The conversation's crisis
    state goes with it: a fork is no way around the safety hold.
    """
    at = Message.objects.filter(pk=message_id, conversation_id=conversation.pk).first()
    if at is None:
        # The conversation (the path) exists; the body names no message of it. A 422 whatever the
        # id is, so it tells nothing about other conversations' messages.
        raise InvalidInput("message_id is not a message of this conversation.", field="message_id")
    history = Message.objects.filter(conversation_id=conversation.pk, pk__lte=at.pk).exclude(status=Status.STREAMING)
    if at.superseded and at.reply_to_id is not None:
        # Forking at an alternative: it is the reply the new history uses, not its selected sibling.
        sibling = Q(reply_to_id=at.reply_to_id, role=Role.ASSISTANT)
        history = history.filter((Q(superseded=False) & ~sibling) | Q(pk=at.pk))
    else:
        history = history.filter(superseded=False)
    summary = Summary.objects.filter(conversation_id=conversation.pk).first()
    now = timezone.now()
    with transaction.atomic():
        fork = Conversation.objects.create(
            user=user,
            avatar_id=conversation.avatar_id,
            title=f"{conversation.title} (fork)"[:TITLE_MAX_CHARS] if conversation.title else "",
            title_source="user" if conversation.title_source == "user" else "auto",
            mode=conversation.mode,
            mode_locked=conversation.mode_locked,
            safety_state=conversation.safety_state,
            ai_notice_at=conversation.ai_notice_at,
        )
        new_ids: dict[int, int] = {}
        copies: list[tuple[Message, int | None]] = []
        for message in history.order_by("id").iterator(chunk_size=FORK_BATCH):
            old_id, reply_to = message.pk, message.reply_to_id
            message.pk = None
            message.conversation_id = fork.pk
            message.reply_to_id = None
            message.superseded = False
            message.client_id = None  # a client's idempotency key belongs to the conversation it was sent in
            message.save(force_insert=True)
            new_ids[old_id] = message.pk
            copies.append((message, reply_to))
        linked = [m for m, reply_to in copies if reply_to in new_ids]
        for message, reply_to in copies:
            if reply_to in new_ids:
                message.reply_to_id = new_ids[reply_to]
        Message.objects.bulk_update(linked, ["reply_to"], batch_size=FORK_BATCH)
        last_id = max(new_ids.values(), default=None)
        fork.message_count = len(new_ids)
        fork.last_message_at = now if new_ids else None
        fork.last_read_message_id = last_id
        fork.save(update_fields=["message_count", "last_message_at", "last_read_message_id"])
        if summary is not None and summary.covers_until_id <= at.pk:
            covered = [new for old, new in new_ids.items() if old <= summary.covers_until_id]
            if covered:
                Summary.objects.create(
                    conversation=fork, text=summary.text, covers_until_id=max(covered), model=summary.model
                )
    if summary is not None and summary.covers_until_id > at.pk:
        # The summary read messages after the fork point: the fork gets its own when it is due.
        from memory.services import conversation_memory_schedule

        if last_id is not None:
            conversation_memory_schedule(conversation_id=fork.pk, message_id=last_id, facts=False)
    fork.refresh_from_db()
    return fork


def message_alternative_select(*, user_id: int, message_id: int) -> AlternativeSelected:
    """Make this reply the one the history, the next prompt and the summary use; its
    alternatives (the other replies to the same user message) stay, superseded."""
    message = message_get_owned(user_id=user_id, message_id=message_id)
    if message.role != Role.ASSISTANT or message.reply_to_id is None:
        raise InvalidInput("Only a reply to one of your messages has alternatives.", field="message_id")
    group = Message.objects.filter(reply_to_id=message.reply_to_id, role=Role.ASSISTANT)
    with conversation_lock_held(conversation_id=message.conversation_id), transaction.atomic():
        if message.superseded:
            group.exclude(pk=message.pk).update(superseded=True)
            Message.objects.filter(pk=message.pk).update(superseded=False)
            message.superseded = False
            # A summary that read the reply selected before is rebuilt with this one.
            summary_discard_covering(
                conversation_id=message.conversation_id, message_ids=list(group.values_list("id", flat=True))
            )
    [selected] = message_dicts([message])
    return AlternativeSelected(
        message_id=message.pk,
        reply_to=message.reply_to_id,
        alternatives=tuple(selected["alternatives"]),
        message=selected,
    )


def message_forget(*, user_id: int, message_id: int) -> MessagesDeleted:
    """Forget one message: gone from the history, the prompt and the summary's input (a
    summary that read it is rebuilt). A user message takes its replies with it; a selected
    reply hands the selection to its newest alternative. Refused as `Busy` while a reply streams."""
    message = message_get_owned(user_id=user_id, message_id=message_id)
    conversation_id = message.conversation_id
    with conversation_lock_held(conversation_id=conversation_id), transaction.atomic():
        doomed = Message.objects.filter(pk=message.pk)
        if message.role == Role.USER:
            doomed = doomed | Message.objects.filter(reply_to_id=message.pk, role=Role.ASSISTANT)
        ids = sorted(doomed.values_list("id", flat=True))
        if Message.objects.filter(pk__in=ids, status=Status.STREAMING).exists():
            raise Busy("A reply is still being generated for this message; stop it first.")
        if message.role == Role.ASSISTANT and message.reply_to_id is not None and not message.superseded:
            heir = (
                Message.objects.filter(reply_to_id=message.reply_to_id, role=Role.ASSISTANT)
                .exclude(pk=message.pk)
                .order_by("-id")
                .first()
            )
            if heir is not None:
                Message.objects.filter(pk=heir.pk).update(superseded=False)
        summary_discard_covering(conversation_id=conversation_id, message_ids=ids)
        Message.objects.filter(pk__in=ids).delete()
        Conversation.objects.filter(pk=conversation_id).update(message_count=Greatest(F("message_count") - len(ids), 0))
    return MessagesDeleted(message_ids=tuple(ids))


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
