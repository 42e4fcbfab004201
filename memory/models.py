"""What an avatar remembers: the rolling summary of each conversation, and the facts it keeps about a user.

Both models came from the conversations app and kept their tables (`Meta.db_table`),
constraint names and related names (`conversation.summary`, `user.memories`,
`avatar.memories`); memory/migrations/0001_initial.py took them over without touching the
database.
"""

from django.conf import settings
from django.db import models

from avatars.models import Avatar
from conversations.models import Conversation, Message

MEMORY_TEXT_MAX = 500


class Summary(models.Model):
    """The rolling summary of a conversation's older messages."""

    conversation = models.OneToOneField(Conversation, on_delete=models.CASCADE, related_name="summary")
    text = models.TextField()
    covers_until = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+")
    model = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "conversations_summary"  # the table it had in conversations: moving the app moved no data
        verbose_name_plural = "summaries"

    def __str__(self) -> str:
        return f"Summary of {self.conversation_id} until {self.covers_until_id}"


class Memory(models.Model):
    """A durable fact the avatar remembers about the user."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memories")
    avatar = models.ForeignKey(Avatar, on_delete=models.CASCADE, related_name="memories")
    text = models.CharField(max_length=MEMORY_TEXT_MAX)
    key = models.CharField(max_length=200, help_text="What the fact is about, normalised; used to deduplicate.")
    pinned = models.BooleanField(default=False, help_text="Pinned facts are never rewritten or dropped.")
    source_message = models.ForeignKey(Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "conversations_memory"  # the table it had in conversations: moving the app moved no data
        ordering = ["-pinned", "id"]
        verbose_name_plural = "memories"
        constraints = [models.UniqueConstraint(fields=["user", "avatar", "key"], name="memory_key_unique")]

    def __str__(self) -> str:
        return self.text
