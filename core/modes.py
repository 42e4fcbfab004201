"""The two modes of a conversation, declared once for every layer (models, router, prompts, API)."""

from django.db import models


class Mode(models.TextChoices):
    SECRETARY = "secretary", "Secretary"
    INTIMATE = "intimate", "Intimate"
