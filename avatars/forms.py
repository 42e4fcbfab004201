"""Admin forms: JSON lists edited as plain text, and the character card upload."""

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from avatars.models import Avatar
from avatars.validation import LIST_LIMITS

GREETING_SEPARATOR = "---"


class LineListField(forms.CharField):
    """A JSON list of strings edited as text: one item per line, or with `separator` items
    separated by a line holding only the separator (for items that span several lines)."""

    widget = forms.Textarea

    def __init__(self, *, max_items: int, max_item_chars: int, separator: str | None = None, **kwargs: Any) -> None:
        self.max_items = max_items
        self.max_item_chars = max_item_chars
        self.separator = separator
        kwargs.setdefault("required", False)
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            joiner = f"\n{self.separator}\n" if self.separator else "\n"
            return joiner.join(str(item) for item in value)
        return value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        if isinstance(value, list):
            return [str(item) for item in value]
        text = str(value or "").replace("\r\n", "\n")
        if self.separator:
            items: list[str] = []
            current: list[str] = []
            for line in text.split("\n"):
                if line.strip() == self.separator:
                    items.append("\n".join(current).strip())
                    current = []
                else:
                    current.append(line)
            items.append("\n".join(current).strip())
        else:
            items = [line.strip() for line in text.split("\n")]
        return [item for item in items if item]

    def validate(self, value: Any) -> None:
        if len(value) > self.max_items:
            raise ValidationError(f"At most {self.max_items} items (got {len(value)}).", code="max_items")
        for index, item in enumerate(value, start=1):
            if len(item) > self.max_item_chars:
                raise ValidationError(
                    f"Item {index} is {len(item)} characters long; at most {self.max_item_chars} are allowed.",
                    code="max_item_length",
                )


def _list_field(name: str, *, help_text: str, separator: str | None = None, rows: int = 6) -> LineListField:
    limit = LIST_LIMITS[name]
    return LineListField(
        max_items=limit.max_items,
        max_item_chars=limit.max_item_chars,
        separator=separator,
        help_text=f"{help_text} At most {limit.max_items} items of {limit.max_item_chars} characters.",
        widget=forms.Textarea(attrs={"rows": rows, "cols": 100}),
    )


class AvatarAdminForm(forms.ModelForm):
    alternate_greetings = _list_field(
        "alternate_greetings",
        separator=GREETING_SEPARATOR,
        rows=10,
        help_text=f"Other greetings, one picked at random. Separate greetings with a line holding only "
        f"{GREETING_SEPARATOR}; a greeting may span several lines.",
    )
    fallback_lines = _list_field(
        "fallback_lines", help_text="Said when the language model cannot answer; one line each, one at random."
    )
    tags = _list_field("tags", rows=4, help_text="One tag per line.")

    class Meta:
        model = Avatar
        fields = (
            "name",
            "slug",
            "tagline",
            "image",
            "owner",
            "is_public",
            "tags",
            "description",
            "personality",
            "scenario",
            "example_dialogue",
            "appearance",
            "style",
            "first_message",
            "alternate_greetings",
            "default_mode",
            "default_model",
            "quota_daily_tokens",
            "quota_daily_usd",
            "intimate_allowed",
            "secretary_instructions",
            "intimate_instructions",
            "fallback_lines",
            "system_prompt",
            "post_history_instructions",
            "creator",
            "creator_notes",
            "character_version",
            "card_extensions",
        )
        widgets = {
            "card_extensions": forms.Textarea(attrs={"rows": 6, "cols": 100}),
        }

    def clean_tags(self) -> list[str]:
        tags: list[str] = self.cleaned_data["tags"]
        unique: dict[str, str] = {}
        for tag in tags:
            unique.setdefault(tag.casefold(), tag)
        return list(unique.values())

    def clean_default_model(self) -> str:
        from llm.catalog import model_list

        model: str = (self.cleaned_data.get("default_model") or "").strip()
        offered = [spec.id for spec in model_list()]
        if model and model not in offered:
            raise ValidationError(f"Not one of LLM_MODELS: {', '.join(offered)}.", code="unknown_model")
        return model

    def clean_card_extensions(self) -> dict[str, Any]:
        value = self.cleaned_data["card_extensions"]
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise ValidationError("Card extensions must be a JSON object ({...}).", code="not_an_object")
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not cleaned.get("is_public") and cleaned.get("owner") is None and "is_public" not in self.errors:
            self.add_error("is_public", "An avatar without an owner belongs to the catalogue and must be public.")
        return cleaned


class CardImportForm(forms.Form):
    file = forms.FileField(
        label="Character card",
        help_text="A PNG card (chara or ccv3 chunk) or a JSON card: V1, V2 or V3.",
        widget=forms.ClearableFileInput(attrs={"accept": ".png,.json,image/png,application/json"}),
    )
    catalogue = forms.BooleanField(
        label="Add to the public catalogue",
        required=False,
        initial=True,
        help_text="Checked: public, owned by nobody. Unchecked: a private avatar of your own.",
    )
