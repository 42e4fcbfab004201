"""What a picture costs: a price per image by model, size and quality (US$, Decimal, never float).

`IMAGE_PRICES` (JSON) replaces the built-in table: a list of
`{"model", "size", "quality", "usd"}` where `size` and `quality` may be `"*"`. The most
specific row wins. A model no row prices costs 0 (a local server, the fake provider).
The built-in rows are OpenAI's list prices as published for gpt-image-1 and DALL-E 3.
"""

import json
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from django.conf import settings
from django.core import checks

from llm.catalog import ZERO

_BUILT_IN: tuple[tuple[str, str, str, str], ...] = (
    ("gpt-image-1", "1024x1024", "low", "0.011"),
    ("gpt-image-1", "1024x1024", "medium", "0.042"),
    ("gpt-image-1", "1024x1024", "high", "0.167"),
    ("gpt-image-1", "1024x1536", "low", "0.016"),
    ("gpt-image-1", "1024x1536", "medium", "0.063"),
    ("gpt-image-1", "1024x1536", "high", "0.25"),
    ("gpt-image-1", "1536x1024", "low", "0.016"),
    ("gpt-image-1", "1536x1024", "medium", "0.063"),
    ("gpt-image-1", "1536x1024", "high", "0.25"),
    ("gpt-image-1", "*", "*", "0.042"),
    ("dall-e-3", "1024x1024", "standard", "0.04"),
    ("dall-e-3", "1024x1024", "hd", "0.08"),
    ("dall-e-3", "*", "standard", "0.08"),
    ("dall-e-3", "*", "hd", "0.12"),
    ("dall-e-2", "256x256", "*", "0.016"),
    ("dall-e-2", "512x512", "*", "0.018"),
    ("dall-e-2", "1024x1024", "*", "0.02"),
)


class ImagePricesError(ValueError):
    pass


def image_cost_usd(*, model: str, size: str, quality: str) -> Decimal:
    best: tuple[int, Decimal] | None = None
    for row_model, row_size, row_quality, usd in _table(getattr(settings, "IMAGE_PRICES", "") or ""):
        if row_model != model or row_size not in (size, "*") or row_quality not in (quality, "*"):
            continue
        rank = (row_size == size) * 2 + (row_quality == quality)
        if best is None or rank > best[0]:
            best = (rank, usd)
    return best[1] if best is not None else ZERO


@lru_cache(maxsize=4)
def _table(raw: str) -> tuple[tuple[str, str, str, Decimal], ...]:
    if not raw.strip():
        return tuple((m, s, q, Decimal(usd)) for m, s, q, usd in _BUILT_IN)
    try:
        rows = json.loads(raw)
        return tuple(
            (str(row["model"]), str(row.get("size", "*")), str(row.get("quality", "*")), Decimal(str(row["usd"])))
            for row in rows
        )
    except (ValueError, TypeError, KeyError, InvalidOperation) as exc:
        raise ImagePricesError(f"IMAGE_PRICES is not a JSON list of {{model, size, quality, usd}}: {exc}") from exc


def image_prices_check(app_configs: object = None, **kwargs: object) -> list[checks.CheckMessage]:
    """A Django system check: `IMAGE_PRICES` parses (a bad table would stop every picture at its end)."""
    try:
        _table(getattr(settings, "IMAGE_PRICES", "") or "")
    except ImagePricesError as exc:
        return [
            checks.Error(
                str(exc),
                hint='A JSON list like [{"model": "gpt-image-1", "size": "1024x1024", "quality": "medium", '
                '"usd": "0.042"}] (docs/images.md).',
                id="images.E001",
            )
        ]
    return []
