"""`manage.py recall_index [--user USERNAME]`: write the recall documents of stored conversations.

Turns index themselves after they end; this fills in what was stored before recall existed
(or while `RECALL_INDEX_AUTO` was off). Idempotent: a conversation already indexed only has
its last few documents written again.
"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations.models import Conversation
from recall.services import recall_index_conversation


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
        for conversation_id in conversations.values_list("id", flat=True).iterator():
            total += recall_index_conversation(conversation_id=conversation_id)
        self.stdout.write(f"documents_written={total}")
