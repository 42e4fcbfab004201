"""A copy of everything stored about a user, as one JSON document written piece by piece.

The format is `docs/export.schema.json` (described in docs/api.md, "Your data"). The
document is produced by a generator: each table is read with `.iterator()`, a few thousand
rows at a time, and written out as it is read, so an account with 100,000 messages never
has them in memory at once (bench/export.py measures it). Rows are read as `.values()`,
not model instances: the export is a table dump, and building instances would cost the
time and memory of the whole pass again.

Sections are read one after another, not in one snapshot: a message stored while the
export runs may or may not be in it, as with any copy taken of a live account.
"""

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import datetime
from typing import Any, Final

from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from accounts.models import ApiToken, Profile
from avatars.models import Avatar, AvatarPhrase
from conversations.admin_usage import message_usage_of_user
from conversations.models import Conversation, Message
from images.models import Image, ImageStatus
from images.selectors import image_url
from memory.models import Memory, Summary
from secretary.models import Reminder, Task

EXPORT_FORMAT: Final = "companion.export"
EXPORT_VERSION: Final = 1
ROWS_PER_QUERY: Final = 2_000
CHUNK_CHARS: Final = 64 * 1024  # what one piece of the response holds, about

USER_FIELDS: Final = ("id", "username", "email", "first_name", "last_name", "date_joined", "last_login")
PROFILE_FIELDS: Final = (
    "display_name",
    "adult_confirmed_at",
    "intimate_opt_in",
    "locale",
    "timezone",
    "quiet_hours_start",
    "quiet_hours_end",
    "proactive_opt_in",
    "recall_across_avatars",
    "created_at",
    "updated_at",
)
AVATAR_FIELDS: Final = tuple(
    field.attname for field in Avatar._meta.concrete_fields if field.attname not in {"owner_id"}
)
PHRASE_FIELDS: Final = tuple(field.attname for field in AvatarPhrase._meta.concrete_fields)
CONVERSATION_FIELDS: Final = (
    "id",
    "avatar_id",
    "title",
    "mode",
    "mode_locked",
    "safety_state",
    "message_count",
    "last_read_message_id",
    "last_message_at",
    "created_at",
    "updated_at",
)
MESSAGE_FIELDS: Final = (
    "id",
    "conversation_id",
    "role",
    "content",
    "mode",
    "status",
    "origin",
    "client_id",
    "reply_to_id",
    "reminder_id",
    "late",
    "route",
    "safety",
    "actions",
    "model",
    "finish_reason",
    "error_code",
    "prompt_tokens",
    "completion_tokens",
    "ttft_ms",
    "duration_ms",
    "image_id",
    "created_at",
)
SUMMARY_FIELDS: Final = ("conversation_id", "text", "covers_until_id", "model", "created_at", "updated_at")
MEMORY_FIELDS: Final = ("id", "avatar_id", "key", "text", "pinned", "source_message_id", "created_at", "updated_at")
REMINDER_FIELDS: Final = (
    "id",
    "conversation_id",
    "text",
    "due_at",
    "timezone",
    "recurrence",
    "status",
    "sent_count",
    "last_sent_at",
    "source_message_id",
    "created_at",
    "updated_at",
)
TASK_FIELDS: Final = (
    "id",
    "title",
    "notes",
    "due_at",
    "done",
    "done_at",
    "source_message_id",
    "created_at",
    "updated_at",
)
IMAGE_FIELDS: Final = (
    "id",
    "kind",
    "status",
    "avatar_id",
    "conversation_id",
    "request_text",
    "prompt",
    "size",
    "quality",
    "model",
    "cost_usd",
    "error_code",
    "error",
    "width",
    "height",
    "created_at",
    "finished_at",
)
# Never the hash: a copy of the data must not be a way back in.
SESSION_FIELDS: Final = ("kind", "family", "created_at", "expires_at", "revoked_at")


def export_filename(*, user: User, now: datetime | None = None) -> str:
    day = timezone.localdate(now or timezone.now())
    return f"companion-export-{user.username}-{day.isoformat()}.json"


def user_export_chunks(*, user: User, now: datetime | None = None) -> Iterator[str]:
    """The export of `user`, as pieces of JSON text of about `CHUNK_CHARS` each; joined, one document."""
    pending: list[str] = []
    size = 0
    for piece in _pieces(user=user, exported_at=now or timezone.now()):
        pending.append(piece)
        size += len(piece)
        if size >= CHUNK_CHARS:
            yield "".join(pending)
            pending, size = [], 0
    if pending:
        yield "".join(pending)


async def chunks_async(chunks: Iterator[str]) -> AsyncIterator[str]:
    """The same pieces for an ASGI server, read one at a time on Django's database thread.

    Django serves a synchronous iterator under ASGI by reading it to the end first (all of it
    in memory); this one it streams.
    """
    pull = sync_to_async(_next_or_none, thread_sensitive=True)
    while (chunk := await pull(chunks)) is not None:
        yield chunk


def _next_or_none(chunks: Iterator[str]) -> str | None:
    return next(chunks, None)


def _dumps(value: Any) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, ensure_ascii=False, separators=(",", ":"))


def _array(rows: Iterable[Any]) -> Iterator[str]:
    yield "["
    first = True
    for row in rows:
        yield _dumps(row) if first else "," + _dumps(row)
        first = False
    yield "]"


def _pieces(*, user: User, exported_at: datetime) -> Iterator[str]:
    profile = Profile.objects.filter(user=user).values(*PROFILE_FIELDS).first()
    yield "{"
    yield f'"format":{_dumps(EXPORT_FORMAT)},"version":{EXPORT_VERSION},"exported_at":{_dumps(exported_at)}'
    yield ',"user":' + _dumps(User.objects.filter(pk=user.pk).values(*USER_FIELDS).get())
    yield ',"profile":' + _dumps(profile)
    sections: list[tuple[str, Iterable[Any]]] = [
        ("avatars", _rows(Avatar.objects.filter(owner=user), AVATAR_FIELDS)),
        ("avatar_phrases", _rows(AvatarPhrase.objects.filter(avatar__owner=user), PHRASE_FIELDS)),
        ("conversations", _rows(Conversation.objects.filter(user=user), CONVERSATION_FIELDS)),
        ("summaries", _rows(Summary.objects.filter(conversation__user=user), SUMMARY_FIELDS, order="conversation_id")),
        ("messages", _rows(Message.objects.filter(conversation__user=user), MESSAGE_FIELDS)),
        ("memories", _rows(Memory.objects.filter(user=user), MEMORY_FIELDS)),
        ("reminders", _rows(Reminder.objects.filter(user=user), REMINDER_FIELDS)),
        ("tasks", _rows(Task.objects.filter(user=user), TASK_FIELDS)),
        ("images", _images(user_id=user.pk)),
        ("usage", _usage(user_id=user.pk)),
        ("sessions", _rows(ApiToken.objects.filter(user=user), SESSION_FIELDS, order="created_at")),
    ]
    for name, rows in sections:
        yield f',"{name}":'
        yield from _array(rows)
    yield "}"


def _rows(queryset: Any, fields: tuple[str, ...], *, order: str = "id") -> Iterator[dict[str, Any]]:
    rows = queryset.order_by(order, "pk").values_list(*fields).iterator(chunk_size=ROWS_PER_QUERY)
    for row in rows:
        yield dict(zip(fields, row, strict=True))


def _images(*, user_id: int) -> Iterator[dict[str, Any]]:
    """Each picture's metadata, and where its file is served (the bytes themselves are not in the document)."""
    for row in _rows(Image.objects.filter(owner_id=user_id), IMAGE_FIELDS):
        yield {**row, "url": image_url(row["id"]) if row["status"] == ImageStatus.READY else None}


def _usage(*, user_id: int) -> Iterator[dict[str, Any]]:
    for row in message_usage_of_user(user_id=user_id).iterator(chunk_size=ROWS_PER_QUERY):
        yield {
            "day": row["day"],
            "avatar_id": row["conversation__avatar_id"],
            "model": row["model"],
            "user_messages": row["user_messages"],
            "replies": row["replies"],
            "cancelled": row["cancelled"],
            "fallbacks": row["fallbacks"],
            "failures": row["failures"],
            "prompt_tokens": row["tokens_prompt"],
            "completion_tokens": row["tokens_completion"],
        }
