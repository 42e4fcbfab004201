"""`manage.py recall_index [--user USERNAME]`: write the recall documents of stored conversations.

Turns index themselves after they end; this fills in what was stored before recall existed
(or while `RECALL_INDEX_AUTO` was off). Idempotent: a conversation already indexed only has
its last few documents written again. On PostgreSQL, each user's stems are counted again at
the end (`recall_recalllexeme`).
"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations.models import Conversation
from recall.services import recall_index_conversation, recall_lexemes_refresh


class Command(BaseCommand):
    help = "Write the recall documents of stored conversations (all, or one user's)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", help="Only this username's conversations.")

    def handle(self, *args: Any, **options: Any) -> None:
        conversations = Conversation.objects.order_by("id")
        if options["user"]:
            conversations = conversations.filter(user__username=options["user"])
            if not conversations.exists():
                raise CommandError(f"No conversations of a user named {options['user']!r}.")
        total = 0
        owners: set[tuple[int, int]] = set()
        for conversation_id, user_id, avatar_id in conversations.values_list("id", "user_id", "avatar_id").iterator():
            total += recall_index_conversation(conversation_id=conversation_id)
            owners.add((user_id, avatar_id))
        for user_id, avatar_id in sorted(owners):  # each conversation's own count was only the first
            recall_lexemes_refresh(user_id=user_id, avatar_id=avatar_id, force=True)
        self.stdout.write(f"documents_written={total}")
