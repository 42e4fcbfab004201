"""Per-request model, temperature, max_tokens and seed: checked and merged with the configured defaults.

Tools pass through as given (they come from our code, not from a request).

Interfaces may call `completion_params_validate` before storing anything, so a bad value is a
422 and never a half-written turn; providers call `completion_params_resolve` again anyway.
"""

import math
import re
from dataclasses import dataclass

from django.conf import settings

from llm.base import CompletionParams, ToolSpec
from llm.errors import InvalidParams

TEMPERATURE_MIN = 0.0
TEMPERATURE_MAX = 2.0
MODEL_MAX_CHARS = 200
SEED_MAX = 2**31 - 1  # servers that parse the seed as a 32-bit integer accept all of these
# Model ids seen in the wild: "gpt-4o-mini", "llama3.1:8b", "meta-llama/Llama-3.1-8B-Instruct",
# "openrouter/auto", "qwen2.5:7b-instruct-q4_K_M". No spaces, quotes or control characters.
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+\-]*")


@dataclass(frozen=True, slots=True)
class ResolvedParams:
    model: str
    temperature: float
    max_tokens: int
    seed: int | None = None
    tools: tuple[ToolSpec, ...] = ()


def completion_params_validate(*, params: CompletionParams | None, max_tokens_limit: int | None = None) -> None:
    """Raise `InvalidParams` (field = model, temperature, max_tokens or seed) for any value out of bounds."""
    if params is None:
        return
    limit = settings.LLM_MAX_TOKENS_LIMIT if max_tokens_limit is None else max_tokens_limit
    if params.model is not None:
        model = params.model
        if not isinstance(model, str) or not model or len(model) > MODEL_MAX_CHARS or not _MODEL_ID.fullmatch(model):
            raise InvalidParams(
                f"model must be a model id of 1 to {MODEL_MAX_CHARS} letters, digits and . _ : / @ + -",
                field="model",
            )
    if params.temperature is not None:
        temperature = params.temperature
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not math.isfinite(temperature)
            or not TEMPERATURE_MIN <= temperature <= TEMPERATURE_MAX
        ):
            raise InvalidParams(
                f"temperature must be a number from {TEMPERATURE_MIN:g} to {TEMPERATURE_MAX:g}", field="temperature"
            )
    if params.max_tokens is not None:
        max_tokens = params.max_tokens
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= limit:
            raise InvalidParams(f"max_tokens must be a whole number from 1 to {limit}", field="max_tokens")
    if params.seed is not None:
        seed = params.seed
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
            raise InvalidParams(f"seed must be a whole number from 0 to {SEED_MAX}", field="seed")


def completion_params_resolve(
    *,
    params: CompletionParams | None,
    default_model: str,
    default_temperature: float,
    default_max_tokens: int,
    max_tokens_limit: int,
) -> ResolvedParams:
    """The values to send: the request's own where given (validated), else the defaults."""
    completion_params_validate(params=params, max_tokens_limit=max_tokens_limit)
    given = params or CompletionParams()
    return ResolvedParams(
        model=given.model or default_model,
        temperature=float(given.temperature) if given.temperature is not None else default_temperature,
        max_tokens=given.max_tokens if given.max_tokens is not None else min(default_max_tokens, max_tokens_limit),
        seed=given.seed,
        tools=given.tools,
    )
