"""Erasing an account: the user and everything stored about them, in one transaction.

What goes, what stays anonymised and why is in docs/operations.md ("Erasing an account").
`accounts/tests/test_erasure.py` walks every model of the project and fails when one still
points at an erased user or at their rows, so a model added later without a line here fails
the suite.

Deletes run table by table, children first, in batches for messages (an account may hold
hundreds of thousands): Django's cascade would load every message into memory at once.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.core.files.storage import Storage
from django.db import models, transaction
from django.db.models.functions import Cast

from accounts.errors import WrongPassword
from accounts.models import ApiToken, Profile
from accounts.services import token_family_sockets_close
from accounts.throttling import login_throttle_forgive, login_throttle_hit
from avatars.models import Avatar, AvatarPhrase
from conversations.admin_usage import background_usage_anonymise, message_usage_anonymise
from conversations.models import Conversation, Message
from conversations.realtime import conversations_close
from images.models import Image
from images.selectors import image_files_of_owner
from images.storage import image_storage
from memory.models import Memory, Summary
from secretary.models import Reminder, Task

logger = logging.getLogger("companion.accounts")

MESSAGE_DELETE_BATCH = 2_000
ERASED_REPR = "(erased)"


@dataclass(frozen=True)
class ErasureReport:
    """What one erasure removed (counts only: nothing of the user is kept, not even in logs)."""

    conversations: int
    messages: int
    avatars_deleted: int
    avatars_kept: int
    usage_rows: int


def user_erase(*, user: User, password: str, ip: str | None = None) -> ErasureReport:
    """Erase the account after checking its password: `WrongPassword` (403) if it is not.

    Attempts count against the same limits as sign-ins (`Throttled`, 429), so a stolen access
    token cannot be used to guess the password here.
    """
    login_throttle_hit(username=user.username, ip=ip)
    if not user.check_password(password):
        raise WrongPassword("That is not your password; nothing was erased.", field="password")
    login_throttle_forgive(username=user.username, ip=ip)
    return user_erase_unchecked(user_id=user.pk)


def user_erase_unchecked(*, user_id: int) -> ErasureReport:
    """Erase the account without asking for its password (staff tools, tests): in one transaction,
    then, once committed, close its sockets and delete its avatars' image files.

    Removed: the user, profile, tokens, conversations, messages, summaries, remembered facts,
    reminders, tasks, pictures and their files, and the user's own avatars with their phrases and
    image files (a kept catalogue avatar's current portrait stays, owned by nobody). Kept,
    anonymised: usage figures, background calls included (`conversations.ErasedUsage`; a call
    still running counts there when it ends, `llm.quotas`), the admin's history of changes
    to the user's rows (names scrubbed), and public avatars the user owned (staff only),
    which stay in the catalogue with no owner since other users talk to them.
    A missing user is a no-op (a second erasure), returning zero counts.
    """
    with transaction.atomic():
        user = User.objects.select_for_update().filter(pk=user_id).first()
        if user is None:
            return ErasureReport(conversations=0, messages=0, avatars_deleted=0, avatars_kept=0, usage_rows=0)
        families = list(ApiToken.objects.filter(user=user).values_list("family", flat=True).distinct())
        conversation_ids = list(Conversation.objects.filter(user=user).values_list("pk", flat=True))
        owned = Avatar.objects.filter(owner=user)
        kept_ids = list(owned.filter(is_public=True).values_list("pk", flat=True))
        doomed = owned.filter(is_public=False)
        images = [
            (avatar.image.storage, avatar.image.name)
            for avatar in doomed.exclude(image="").only("image")
            if avatar.image.name
        ]
        catalogue_ids = Avatar.objects.filter(owner__isnull=True).values_list("pk", flat=True)
        kept_avatars = [*catalogue_ids, *kept_ids]
        usage_rows = message_usage_anonymise(user_id=user.pk, avatar_ids_kept=kept_avatars)
        usage_rows += background_usage_anonymise(user_id=user.pk, avatar_ids_kept=kept_avatars)

        # The current portrait of a catalogue avatar the user made stays with the avatar, owned by nobody.
        Image.objects.filter(owner=user, pk__in=Avatar.objects.filter(pk__in=kept_ids).values("portrait_id")).update(
            owner=None
        )
        picture_names = image_files_of_owner(owner_id=user.pk)

        _admin_history_anonymise(user=user)
        messages = Message.objects.filter(conversation__user=user)
        Summary.objects.filter(conversation__user=user).delete()
        Memory.objects.filter(user=user).delete()
        Reminder.objects.filter(user=user).delete()
        Task.objects.filter(user=user).delete()
        message_count = _delete_in_batches(messages, batch=MESSAGE_DELETE_BATCH)
        Image.objects.filter(owner=user).delete()
        Conversation.objects.filter(user=user).delete()
        AvatarPhrase.objects.filter(avatar__in=doomed).delete()
        _, deleted = doomed.delete()
        Avatar.objects.filter(pk__in=kept_ids).update(owner=None)
        ApiToken.objects.filter(user=user).delete()
        Profile.objects.filter(user=user).delete()
        user.delete()

        transaction.on_commit(lambda: token_family_sockets_close(families=families))
        transaction.on_commit(lambda: conversations_close(conversation_ids=conversation_ids))
        for storage, name in images:
            transaction.on_commit(_file_deleter(storage, name))
        for name in picture_names:
            transaction.on_commit(_file_deleter(image_storage(), name))
    report = ErasureReport(
        conversations=len(conversation_ids),
        messages=message_count,
        avatars_deleted=deleted.get(Avatar._meta.label, 0),
        avatars_kept=len(kept_ids),
        usage_rows=usage_rows,
    )
    logger.info("account erased", extra={"data": {"user_id": user_id, **report.__dict__}})
    return report


def _delete_in_batches(queryset: "models.QuerySet[Message]", *, batch: int) -> int:
    deleted = 0
    while True:
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch])
        if not ids:
            return deleted
        Message.objects.filter(pk__in=ids).delete()
        deleted += len(ids)


def _admin_history_anonymise(*, user: User) -> None:
    """Keep the admin's record of what staff did to the user's rows, without the names in it.

    `object_repr` is the row's `str()` (the username, a fact's text) and `change_message` may
    name related rows; the action, the time, who acted and the row's type and id stay.
    """
    owned: list[tuple[type[models.Model], models.QuerySet[Any]]] = [
        (User, User.objects.filter(pk=user.pk)),
        (Profile, Profile.objects.filter(user=user)),
        (ApiToken, ApiToken.objects.filter(user=user)),
        (Avatar, Avatar.objects.filter(owner=user, is_public=False)),
        (AvatarPhrase, AvatarPhrase.objects.filter(avatar__owner=user, avatar__is_public=False)),
        (Conversation, Conversation.objects.filter(user=user)),
        (Message, Message.objects.filter(conversation__user=user)),
        (Summary, Summary.objects.filter(conversation__user=user)),
        (Memory, Memory.objects.filter(user=user)),
        (Reminder, Reminder.objects.filter(user=user)),
        (Task, Task.objects.filter(user=user)),
        (Image, Image.objects.filter(owner=user)),
    ]
    for model, rows in owned:
        LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(model),
            object_id__in=rows.annotate(text_id=Cast("pk", models.CharField())).values("text_id"),
        ).update(object_repr=ERASED_REPR, change_message="")


def _file_deleter(storage: Storage, name: str) -> Callable[[], None]:
    def delete() -> None:
        try:
            storage.delete(name)
        except OSError:
            logger.warning("could not delete an erased account's image file", exc_info=True)

    return delete
