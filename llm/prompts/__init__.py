"""Prompt builders: pure functions from values to prompt text (no ORM, no I/O)."""

from llm.prompts.modes import (
    Persona,
    PromptContext,
    intimate_prompt,
    persona_from_avatar,
    post_history_prompt,
    secretary_prompt,
    summary_section,
    system_prompt_for_mode,
)
from llm.prompts.safety import AI_NOTICE, crisis_fallback_line, crisis_prompt

__all__ = [
    "AI_NOTICE",
    "Persona",
    "PromptContext",
    "crisis_fallback_line",
    "crisis_prompt",
    "intimate_prompt",
    "persona_from_avatar",
    "post_history_prompt",
    "secretary_prompt",
    "summary_section",
    "system_prompt_for_mode",
]
