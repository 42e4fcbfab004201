"""The models clients may pick (`LLM_MODELS`), their prices, and what a call costs.

`LLM_MODELS` is a JSON list, read from settings on each call (cached per value):

    [{"id": "gpt-4o-mini", "provider": "openai", "label": "GPT-4o mini",
      "input_usd_per_mtok": 0.15, "output_usd_per_mtok": 0.6, "tools": true, "default": true}]

Unset (empty), the list is the one `LLM_MODEL`, unpriced (its calls cost 0), followed by any
`LLM_ALLOWED_MODELS` (the older allow-list, also unpriced). With `LLM_PROVIDER=anyllm` each id
is `provider:model` and must start with its own `provider`.

Money is `Decimal` from the JSON text to the database (`json.loads(parse_float=Decimal)`): a
float never holds a price. `llm_models_check` is a Django system check: a typo, bad JSON or a
negative price stops `manage.py check` (and every command that runs the checks) with the reason.
"""

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core import checks

COST_PLACES = Decimal("0.0000000001")  # ten decimal places: a token of the cheapest model still counts
MILLION = Decimal(1_000_000)
ZERO = Decimal(0)
_KEYS = frozenset({"id", "provider", "label", "input_usd_per_mtok", "output_usd_per_mtok", "tools", "default"})
_REQUIRED = ("id", "provider", "input_usd_per_mtok", "output_usd_per_mtok")


class ModelsConfigError(ValueError):
    """`LLM_MODELS` cannot be used; the message says where and why."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    id: str
    provider: str
    label: str
    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal
    tools: bool = True
    default: bool = False

    def as_public(self) -> dict[str, Any]:
        """What `GET /api/models` shows: never the prices' source, only what a picker needs."""
        return {"id": self.id, "provider": self.provider, "label": self.label, "default": self.default}


def cost_usd(
    *, input_usd_per_mtok: Decimal, output_usd_per_mtok: Decimal, prompt_tokens: int, completion_tokens: int
) -> Decimal:
    """The price of one call, rounded half-even to ten decimal places (pure Decimal arithmetic)."""
    total = (input_usd_per_mtok * prompt_tokens + output_usd_per_mtok * completion_tokens) / MILLION
    return total.quantize(COST_PLACES)


def usd_text(value: Decimal) -> str:
    """A cost as clients see it: a fixed-point decimal string, ten places ("0.0000000000", never "0E-10")."""
    return format(Decimal(value).quantize(COST_PLACES), "f")


def call_cost_usd(*, model: str, prompt_tokens: int | None, completion_tokens: int | None) -> Decimal:
    """What a call to `model` cost, from the price table; 0 for a model the table does not price."""
    spec = model_get(model)
    if spec is None:
        return ZERO.quantize(COST_PLACES)
    return cost_usd(
        input_usd_per_mtok=spec.input_usd_per_mtok,
        output_usd_per_mtok=spec.output_usd_per_mtok,
        prompt_tokens=prompt_tokens or 0,
        completion_tokens=completion_tokens or 0,
    )


def model_list() -> tuple[ModelSpec, ...]:
    """The models clients may pick, the default one marked (exactly one is)."""
    return _models_from(
        _raw_setting(),
        llm_model=settings.LLM_MODEL,
        provider=settings.LLM_PROVIDER,
        allowed=tuple(getattr(settings, "LLM_ALLOWED_MODELS", ()) or ()),
    )


def model_get(model_id: str) -> ModelSpec | None:
    return next((spec for spec in model_list() if spec.id == model_id), None)


def model_default() -> ModelSpec:
    return next(spec for spec in model_list() if spec.default)


def model_choose(*, requested: str | None, avatar_default: str = "") -> str | None:
    """The model a turn asks for: the request's (already validated), else the avatar's own default
    while it is still offered, else `LLM_MODELS`' default; None (the provider's own model) when
    `LLM_MODELS` is unset and nothing was chosen."""
    if requested:
        return requested
    if avatar_default and model_get(avatar_default) is not None:
        return avatar_default
    if _raw_setting().strip():
        return model_default().id
    return None


def llm_models_check(app_configs: object = None, **kwargs: object) -> list[checks.CheckMessage]:
    """A Django system check: `LLM_MODELS` parses, every entry is complete and priced, at most one default."""
    try:
        model_list()
    except ModelsConfigError as exc:
        return [
            checks.Error(
                f"LLM_MODELS: {exc}",
                hint='A JSON list like [{"id": "gpt-4o-mini", "provider": "openai", "input_usd_per_mtok": 0.15, '
                '"output_usd_per_mtok": 0.6}] (docs/llm.md, "Models and prices").',
                id="llm.E001",
            )
        ]
    return []


def _raw_setting() -> str:
    raw = getattr(settings, "LLM_MODELS", "")
    if isinstance(raw, list | tuple):  # a settings override in code (tests) may give the list itself
        return json.dumps(raw, default=str)
    return str(raw or "")


@lru_cache(maxsize=8)
def _models_from(raw: str, *, llm_model: str, provider: str, allowed: tuple[str, ...]) -> tuple[ModelSpec, ...]:
    if not raw.strip():
        ids = [llm_model, *(model for model in allowed if model != llm_model)]
        return tuple(
            ModelSpec(
                id=model,
                provider=provider,
                label=model,
                input_usd_per_mtok=ZERO,
                output_usd_per_mtok=ZERO,
                default=index == 0,
            )
            for index, model in enumerate(ids)
        )
    try:
        entries = json.loads(raw, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise ModelsConfigError(f"not valid JSON ({exc.msg} at character {exc.pos})") from exc
    if not isinstance(entries, list) or not entries:
        raise ModelsConfigError("must be a non-empty JSON list of models")
    specs = [_entry_parse(entry, index, provider=provider) for index, entry in enumerate(entries)]
    ids = [spec.id for spec in specs]
    duplicate = next((model for model in ids if ids.count(model) > 1), None)
    if duplicate is not None:
        raise ModelsConfigError(f"the id {duplicate!r} is listed twice")
    defaults = [spec for spec in specs if spec.default]
    if len(defaults) > 1:
        raise ModelsConfigError(f"more than one default ({', '.join(spec.id for spec in defaults)})")
    if not defaults:  # none marked: LLM_MODEL's entry, else the first
        chosen = next((spec for spec in specs if spec.id == llm_model), specs[0])
        specs = [_with_default(spec) if spec is chosen else spec for spec in specs]
    return tuple(specs)


def _entry_parse(entry: object, index: int, *, provider: str) -> ModelSpec:
    where = f"entry {index}"
    if not isinstance(entry, dict):
        raise ModelsConfigError(f"{where} is not an object")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise ModelsConfigError(f"{where} has an unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    missing = [key for key in _REQUIRED if key not in entry]
    if missing:
        raise ModelsConfigError(f"{where} lacks {missing[0]!r}")
    model_id, model_provider = entry["id"], entry["provider"]
    if not isinstance(model_id, str) or not model_id.strip():
        raise ModelsConfigError(f"{where}: id must be a non-empty string")
    where = f"entry {index} ({model_id!r})"
    if not isinstance(model_provider, str) or not model_provider.strip():
        raise ModelsConfigError(f"{where}: provider must be a non-empty string")
    if provider == "anyllm" and not model_id.startswith(f"{model_provider}:"):
        raise ModelsConfigError(f"{where}: with LLM_PROVIDER=anyllm the id must be {model_provider}:<model>")
    label = entry.get("label", model_id)
    if not isinstance(label, str):
        raise ModelsConfigError(f"{where}: label must be a string")
    tools, default = entry.get("tools", True), entry.get("default", False)
    if not isinstance(tools, bool) or not isinstance(default, bool):
        raise ModelsConfigError(f"{where}: tools and default must be true or false")
    return ModelSpec(
        id=model_id,
        provider=model_provider,
        label=label or model_id,
        input_usd_per_mtok=_price(entry["input_usd_per_mtok"], f"{where}: input_usd_per_mtok"),
        output_usd_per_mtok=_price(entry["output_usd_per_mtok"], f"{where}: output_usd_per_mtok"),
        tools=tools,
        default=default,
    )


def _price(value: object, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ModelsConfigError(f"{where} must be a number of US dollars per million tokens")
    try:
        price = Decimal(value)
    except InvalidOperation as exc:
        raise ModelsConfigError(f"{where} must be a number, not {value!r}") from exc
    if not price.is_finite() or price < 0:
        raise ModelsConfigError(f"{where} must be zero or more, not {value}")
    return price


def _with_default(spec: ModelSpec) -> ModelSpec:
    return ModelSpec(
        id=spec.id,
        provider=spec.provider,
        label=spec.label,
        input_usd_per_mtok=spec.input_usd_per_mtok,
        output_usd_per_mtok=spec.output_usd_per_mtok,
        tools=spec.tools,
        default=True,
    )
