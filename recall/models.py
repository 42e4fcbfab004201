"""What recall searches: one document per stored message.

A document holds the message's words, its speaker's name (who "I" is in it) and the words
of the turns around it (the question it answers, the answer it got), so that "What did
Robin study?" finds Robin's "Studying tide pools all week...". It is written in
the background after a turn (`recall.services.recall_index_conversation`) and goes with
its message (a forgotten message, an erased account). The search index is the database's
own: on PostgreSQL the `search` column (a weighted tsvector, GIN index), on SQLite the
FTS5 table `recall_fts` (porter tokenizer) that triggers keep in step with this table; both
are made by recall/migrations/0001_initial.py for their database only.
"""

from django.conf import settings
from django.contrib.postgres.search import SearchVectorField
from django.db import models

from avatars.models import Avatar
from conversations.models import Conversation, Message


class RecallDocument(models.Model):
    message = models.OneToOneField(Message, on_delete=models.CASCADE, primary_key=True, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    avatar = models.ForeignKey(Avatar, on_delete=models.CASCADE, related_name="+", db_index=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="+")
    role = models.CharField(max_length=16)
    created_at = models.DateTimeField()  # the message's
    body = models.TextField()
    speaker = models.CharField(max_length=200, blank=True)
    context = models.TextField(blank=True)  # the neighbouring turns' words
    length = models.PositiveIntegerField(default=0)  # words in body, speaker and context: BM25's document length
    search = SearchVectorField(null=True, blank=True)  # PostgreSQL only; NULL on SQLite
    indexed_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["user", "avatar"], name="recall_doc_user_avatar")]

    def __str__(self) -> str:
        return f"Recall document of message {self.message_id}"


class RecallLexeme(models.Model):
    """How many of a user's documents with an avatar hold a word's stem: BM25's document frequency,
    read by the turn on PostgreSQL instead of counting it (`recall.services.recall_lexemes_refresh`,
    in the background after indexing). The stem is kept as a hash, never as a word."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    avatar = models.ForeignKey(Avatar, on_delete=models.CASCADE, related_name="+")
    lexeme_hash = models.CharField(max_length=16)  # left(md5(lexeme), 16)
    documents = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "avatar", "lexeme_hash"], name="recall_lexeme_unique"),
        ]

    def __str__(self) -> str:
        return f"Recall lexeme {self.lexeme_hash} of user {self.user_id}"
