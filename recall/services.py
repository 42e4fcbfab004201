"""Writes of recall: the documents it searches, one per message, written after a turn.

`recall_index_conversation` indexes what a conversation has stored since it last ran (its
first run after an upgrade: the whole conversation), and writes the last few documents
again, since their neighbours changed (a new reply is the answer to the question before
it) or their words did (an edited last message). `recall_index_schedule` queues it after a
turn is stored; it never runs on the reply's path. A forgotten message takes its document
with it (a cascade); a superseded reply keeps one, and the search leaves it out.
"""

import logging

from django.conf import settings
from django.contrib.postgres.search import SearchVector
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Q

from conversations.models import Conversation, Message, Role, Status
from core import background
from core.outage import OUTAGE_ERRORS
from recall import tasks
from recall.models import RecallDocument, RecallLexeme
from recall.text import words

logger = logging.getLogger("companion.recall")

NEIGHBOURS = 2  # turns on each side whose words join a document's context
REINDEX_TAIL = NEIGHBOURS + 2  # documents written again on each run: their neighbours or words may have changed
INDEXED_STATUSES = (Status.COMPLETE, Status.FALLBACK, Status.CANCELLED)
INDEX_BATCH = 500
LEXEMES_SECONDS = 300  # the stems' document counts are counted again at most this often


def recall_index_schedule(*, conversation_id: int) -> None:
    """Queue the indexing of a stored turn once its transaction commits; returns at once, never raises.
    Nothing with `RECALL_INDEX_AUTO=false`."""
    if not getattr(settings, "RECALL_INDEX_AUTO", True):
        return

    def recall_enqueue() -> None:
        try:
            background.task_enqueue(tasks.index_conversation, conversation_id=conversation_id)
        except OUTAGE_ERRORS:
            logger.warning("recall indexing not queued", extra={"data": {"conversation_id": conversation_id}})

    transaction.on_commit(recall_enqueue, robust=True)


def recall_index_conversation(*, conversation_id: int) -> int:
    """Write the documents of the conversation's messages stored since the last run; returns how many."""
    conversation = (
        Conversation.objects.filter(pk=conversation_id)
        .values_list("user_id", "avatar_id", "avatar__name", "user__username", "user__profile__display_name")
        .first()
    )
    if conversation is None:
        return 0
    user_id, avatar_id, avatar_name, username, display_name = conversation
    speakers: dict[str, str] = {Role.USER.value: display_name or username, Role.ASSISTANT.value: avatar_name}
    tail = list(
        RecallDocument.objects.filter(conversation_id=conversation_id)
        .order_by("-message_id")
        .values_list("message_id", flat=True)[:REINDEX_TAIL]
    )
    start = min(tail) if len(tail) == REINDEX_TAIL else 0
    counted = Message.objects.filter(
        conversation_id=conversation_id, status__in=INDEXED_STATUSES, role__in=(Role.USER, Role.ASSISTANT)
    ).exclude(content="")
    before = list(
        counted.filter(id__lt=start, superseded=False)
        .order_by("-id")
        .values_list("id", "role", "content", "created_at")[:NEIGHBOURS]
    )[::-1]
    written = 0
    after = start - 1
    while True:
        batch = list(
            counted.filter(id__gt=after)
            .order_by("id")
            .values_list("id", "role", "content", "created_at", "superseded")[:INDEX_BATCH]
        )
        if not batch:
            break
        following = list(
            counted.filter(id__gt=batch[-1][0], superseded=False)
            .order_by("id")
            .values_list("id", "role", "content", "created_at")[:NEIGHBOURS]
        )
        documents = _documents(
            batch,
            before=before,
            following=following,
            speakers=speakers,
            owner=(user_id, avatar_id, conversation_id),
        )
        _documents_write(documents)
        written += len(documents)
        selected = [row[:4] for row in batch if not row[4]]
        before = [*before, *selected][-NEIGHBOURS:]
        after = batch[-1][0]
    if written:
        recall_lexemes_refresh(user_id=user_id, avatar_id=avatar_id)
    return written


def recall_lexemes_refresh(*, user_id: int, avatar_id: int, force: bool = False) -> int:
    """Count again how many of the user's documents with the avatar hold each stem (PostgreSQL only:
    SQLite's FTS5 counts them itself); returns how many stems. At most once per LEXEMES_SECONDS per
    user and avatar unless `force`: between two counts the search counts the stems it does not find."""
    if connection.vendor != "postgresql":
        return 0
    if not force and not cache.add(f"recall:lexemes:{user_id}:{avatar_id}", 1, LEXEMES_SECONDS):
        return 0
    # ts_stat takes its documents as a query's text: only two integers are formatted in.
    documents = "SELECT search FROM recall_recalldocument WHERE user_id = %d AND avatar_id = %d" % (  # noqa: S608, UP031
        int(user_id),
        int(avatar_id),
    )
    with transaction.atomic(), connection.cursor() as cursor:
        RecallLexeme.objects.filter(user_id=user_id, avatar_id=avatar_id).delete()
        cursor.execute(
            "INSERT INTO recall_recalllexeme (user_id, avatar_id, lexeme_hash, documents) "
            "SELECT %s, %s, left(md5(word), 16), ndoc FROM ts_stat(%s) "
            # Two counts at once (a forced one) or two stems of one hash: the first row stays, no error.
            "ON CONFLICT (user_id, avatar_id, lexeme_hash) DO NOTHING",
            [user_id, avatar_id, documents],
        )
        return cursor.rowcount


def _documents(
    batch: list[tuple],
    *,
    before: list[tuple],
    following: list[tuple],
    speakers: dict[str, str],
    owner: tuple[int, int, int],
) -> list[RecallDocument]:
    user_id, avatar_id, conversation_id = owner
    # The story as the history tells it: superseded alternatives get a document, not a place in others' context.
    story = [*before, *(row[:4] for row in batch if not row[4]), *following]
    position = {row[0]: index for index, row in enumerate(story)}
    documents = []
    for message_id, role, content, created_at, superseded in batch:
        if superseded:
            around: list[tuple] = []
        else:
            at = position[message_id]
            around = [*story[max(0, at - NEIGHBOURS) : at], *story[at + 1 : at + 1 + NEIGHBOURS]]
        context = " ".join(row[2] for row in around)
        speaker = speakers.get(role, "")
        documents.append(
            RecallDocument(
                message_id=message_id,
                user_id=user_id,
                avatar_id=avatar_id,
                conversation_id=conversation_id,
                role=role,
                created_at=created_at,
                body=content,
                speaker=speaker,
                context=context,
                length=len(words(content)) + len(words(speaker)) + len(words(context)),
            )
        )
    return documents


def _documents_write(documents: list[RecallDocument]) -> None:
    with transaction.atomic():
        RecallDocument.objects.bulk_create(
            documents,
            update_conflicts=True,
            unique_fields=["message"],
            update_fields=["role", "created_at", "body", "speaker", "context", "length", "indexed_at"],
        )
        if connection.vendor == "postgresql":
            RecallDocument.objects.filter(Q(pk__in=[document.message_id for document in documents])).update(
                search=SearchVector("body", weight="A", config="english")
                + SearchVector("speaker", weight="B", config="english")
                + SearchVector("context", weight="C", config="english")
            )
