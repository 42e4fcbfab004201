"""The memory settings, read on each call, and the system check of how they fit the prompt.

Settings (the defaults are those of companion/settings.py): `SUMMARY_TRIGGER_MESSAGES` (8),
`SUMMARY_KEEP_RECENT` (12), `SUMMARY_MAX_TOKENS` (600), `SUMMARY_INPUT_MAX_TOKENS` (6000),
`SUMMARY_SWEEP_LOOKBACK_HOURS` (48), `MEMORY_MAX_FACTS` (200), `MEMORY_DEDUP_SCORE` (90),
`LLM_SUMMARY_MODEL`. With `SUMMARY_KEEP_RECENT + SUMMARY_TRIGGER_MESSAGES <= 2 *
CONTEXT_MAX_PAIRS` every message is in the prompt's history or in the summary
(docs/memory.md); `memory_settings_check` warns when it is not.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core import checks

from conversations.context import ContextBudget


@dataclass(frozen=True)
class MemorySettings:
    trigger_messages: int
    keep_recent: int
    summary_max_tokens: int
    summary_input_max_tokens: int
    sweep_lookback: timedelta
    facts_max: int
    dedup_score: float
    summary_model: str | None

    @classmethod
    def from_django_settings(cls) -> "MemorySettings":
        return cls(
            trigger_messages=max(0, int(getattr(settings, "SUMMARY_TRIGGER_MESSAGES", 8))),
            keep_recent=max(0, int(getattr(settings, "SUMMARY_KEEP_RECENT", 12))),
            summary_max_tokens=max(50, int(getattr(settings, "SUMMARY_MAX_TOKENS", 600))),
            summary_input_max_tokens=max(200, int(getattr(settings, "SUMMARY_INPUT_MAX_TOKENS", 6000))),
            sweep_lookback=timedelta(hours=float(getattr(settings, "SUMMARY_SWEEP_LOOKBACK_HOURS", 48))),
            facts_max=max(1, int(getattr(settings, "MEMORY_MAX_FACTS", 200))),
            dedup_score=float(getattr(settings, "MEMORY_DEDUP_SCORE", 90)),
            summary_model=getattr(settings, "LLM_SUMMARY_MODEL", "") or None,
        )


def memory_settings_check(app_configs: object = None, **kwargs: object) -> list[checks.CheckMessage]:
    """A Django system check (for `checks.register` in an AppConfig's `ready`): the no-gap rule.

    The prompt carries the messages after the summary, at most `CONTEXT_MAX_PAIRS` exchanges;
    the summary leaves up to `SUMMARY_KEEP_RECENT + SUMMARY_TRIGGER_MESSAGES` messages
    uncovered. When that is more than two messages per exchange, the oldest uncovered ones
    are in neither, and the model never sees them.
    """
    config = MemorySettings.from_django_settings()
    max_pairs = ContextBudget.from_django_settings().max_pairs
    uncovered = config.keep_recent + config.trigger_messages
    if uncovered <= 2 * max_pairs:
        return []
    return [
        checks.Warning(
            f"SUMMARY_KEEP_RECENT + SUMMARY_TRIGGER_MESSAGES = {uncovered} is more than "
            f"2 * CONTEXT_MAX_PAIRS = {2 * max_pairs}: messages can fall between the summary and the prompt.",
            hint="Lower SUMMARY_KEEP_RECENT or SUMMARY_TRIGGER_MESSAGES, or raise CONTEXT_MAX_PAIRS (docs/memory.md).",
            id="conversations.W001",  # its id from before memory was an app: SILENCED_SYSTEM_CHECKS may name it
        )
    ]
