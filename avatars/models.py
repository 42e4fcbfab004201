from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from core.modes import Mode

NAME_MAX = 80
TEXT_MAX = 20_000
SHORT_TEXT_MAX = 4_000
TAGLINE_MAX = 200
CREATOR_MAX = 200
CHARACTER_VERSION_MAX = 50
PHRASE_MAX = 200
APPEARANCE_MAX = 1_000
STYLE_MAX = 200

# The JSON list fields: at most this many items, each at most this many characters.
ALTERNATE_GREETINGS_MAX_ITEMS = 20
FALLBACK_LINES_MAX_ITEMS = 50
FALLBACK_LINE_MAX = 1_000
TAGS_MAX_ITEMS = 30
TAG_MAX = 50


class Avatar(models.Model):
    """A character the user talks to.

    Fields follow the character card V2/V3 spec (SillyTavern), plus what our two modes
    need. A catalogue avatar is public and owned by nobody; a user's own is private to them.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="avatars",
        help_text="Empty for a catalogue avatar; set for a user's own avatar.",
    )
    is_public = models.BooleanField(default=False, help_text="Shown in the catalogue to every user.")
    slug = models.SlugField(
        max_length=100, unique=True, help_text="Stable identifier used in URLs and commands; made from the name."
    )
    name = models.CharField(max_length=NAME_MAX, help_text="The character's name, as the model and the user see it.")
    tagline = models.CharField(max_length=TAGLINE_MAX, blank=True, help_text="One line shown in the catalogue.")
    description = models.TextField(
        blank=True, max_length=TEXT_MAX, help_text="Who the character is: appearance, background."
    )
    personality = models.TextField(blank=True, max_length=TEXT_MAX, help_text="Temperament, values, way of speaking.")
    scenario = models.TextField(
        blank=True, max_length=TEXT_MAX, help_text="The situation the conversation takes place in."
    )
    first_message = models.TextField(
        blank=True, max_length=SHORT_TEXT_MAX, help_text="The greeting that opens a new conversation."
    )
    alternate_greetings = models.JSONField(default=list, blank=True, help_text="Other greetings, one picked at random.")
    example_dialogue = models.TextField(
        blank=True, max_length=TEXT_MAX, help_text="Sample exchanges that show the voice (card field mes_example)."
    )
    system_prompt = models.TextField(
        blank=True,
        max_length=TEXT_MAX,
        help_text="Extra system instructions from the card; our safety rules always apply.",
    )
    post_history_instructions = models.TextField(
        blank=True, max_length=SHORT_TEXT_MAX, help_text="Instructions placed after the history, just before the reply."
    )
    secretary_instructions = models.TextField(
        blank=True, max_length=SHORT_TEXT_MAX, help_text="How this avatar behaves as an assistant (secretary mode)."
    )
    intimate_instructions = models.TextField(
        blank=True, max_length=SHORT_TEXT_MAX, help_text="How this avatar behaves as a companion (intimate mode)."
    )
    intimate_allowed = models.BooleanField(
        default=True, help_text="Whether this avatar may enter intimate mode (for adults who opted in)."
    )
    default_mode = models.CharField(
        max_length=16, choices=Mode.choices, default=Mode.SECRETARY, help_text="The mode a new conversation starts in."
    )
    default_model = models.CharField(
        max_length=200,
        blank=True,
        help_text="The model it answers with when the user picks none (one of LLM_MODELS); empty: the default.",
    )
    fallback_lines = models.JSONField(
        default=list, blank=True, help_text="Lines said when the language model cannot answer; one at random."
    )
    # Limits on each user's use of this avatar per day (llm/quotas.py), on top of the user's own.
    quota_daily_tokens = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Tokens each user may spend with this avatar per day; empty: no limit."
    )
    quota_daily_usd = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="US dollars each user may spend with this avatar per day; empty: no limit.",
    )
    proactive_enabled = models.BooleanField(
        default=True, help_text="May write first after a silence, to users who opted in (proactive check-ins)."
    )
    proactive_after_hours = models.PositiveSmallIntegerField(
        default=24, help_text="Hours of silence before a check-in (1 to 720)."
    )
    proactive_max_per_day = models.PositiveSmallIntegerField(
        default=1, help_text="Check-ins at most per user and day (0 turns them off)."
    )
    creator = models.CharField(max_length=CREATOR_MAX, blank=True, help_text="Who made the character (card field).")
    creator_notes = models.TextField(
        blank=True, max_length=TEXT_MAX, help_text="Notes from the creator for people; never sent to the model."
    )
    character_version = models.CharField(
        max_length=CHARACTER_VERSION_MAX, blank=True, help_text="The card's own version string."
    )
    tags = models.JSONField(default=list, blank=True, help_text="Catalogue tags, used by the tag filter.")
    image = models.ImageField(
        upload_to="avatars/", blank=True, help_text="Portrait; the PNG itself when a PNG character card is imported."
    )
    appearance = models.TextField(
        blank=True,
        max_length=APPEARANCE_MAX,
        help_text="How the character looks (hair, eyes, build, clothes): the pictures of it are drawn from this.",
    )
    style = models.CharField(
        max_length=STYLE_MAX, blank=True, help_text='The look of its pictures, e.g. "watercolour", "anime", "photo".'
    )
    portrait = models.ForeignKey(
        "images.Image",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The generated portrait shown in the catalogue (the admin's 'Make a portrait' action).",
    )
    card_extensions = models.JSONField(
        default=dict, blank=True, help_text="Unknown card fields kept as imported (extensions), so nothing is lost."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(is_public=True) | Q(owner__isnull=False), name="avatar_public_or_owned")
        ]

    def __str__(self) -> str:
        return self.name


class AvatarPhrase(models.Model):
    """An extra cue phrase that points this avatar's conversations to a mode."""

    avatar = models.ForeignKey(Avatar, on_delete=models.CASCADE, related_name="phrases")
    mode = models.CharField(max_length=16, choices=Mode.choices)
    text = models.CharField(max_length=PHRASE_MAX)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["avatar", "mode", "text"], name="avatar_phrase_unique")]

    def __str__(self) -> str:
        return f"{self.mode}: {self.text}"

    # A phrase is part of its avatar: saving or deleting one makes a new version of the avatar,
    # which is what the turn's cached phrase bank is keyed by (`conversations.selectors`).
    def save(self, *args: Any, **kwargs: Any) -> None:
        super().save(*args, **kwargs)
        self._avatar_touch()

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        deleted = super().delete(*args, **kwargs)
        self._avatar_touch()
        return deleted

    def _avatar_touch(self) -> None:
        Avatar.objects.filter(pk=self.avatar_id).update(updated_at=timezone.now())
