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

__all__ = [
    "Persona",
    "PromptContext",
    "intimate_prompt",
    "persona_from_avatar",
    "post_history_prompt",
    "secretary_prompt",
    "summary_section",
    "system_prompt_for_mode",
]
