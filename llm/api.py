"""The models a client may pick, and what the signed-in user spent."""

import re
from datetime import date, timedelta
from typing import Annotated, Any

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from pydantic import BeforeValidator, WithJsonSchema

from core.errors import InvalidInput
from llm.catalog import model_list
from llm.quotas import usage_summary_get, user_day, user_zone_get

router = Router(tags=["models"])

USAGE_RANGE_DAYS_MAX = 366


class ModelOut(Schema):
    id: str
    provider: str
    label: str
    default: bool


def _day_text_check(value: object) -> object:
    if isinstance(value, str) and not _DAY.fullmatch(value):
        raise ValueError("a day is written YYYY-MM-DD")
    return value


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
# A calendar day as YYYY-MM-DD only: pydantic alone would also read "0" as 1970-01-01.
Day = Annotated[date, BeforeValidator(_day_text_check), WithJsonSchema({"type": "string", "format": "date"})]


class UsageQuery(Schema):
    from_: Day | None = Field(None, alias="from")  # `from` is a Python keyword
    to: Day | None = None


class UsageLimitOut(Schema):
    tokens: int | None
    cost_usd: str | None
    images: int | None


class UsageOut(Schema):
    tokens: int
    cost_usd: str
    images: int
    limit: UsageLimitOut


@router.get("/models", response=list[ModelOut])
def models_list(request: HttpRequest) -> list[dict[str, Any]]:
    """The models a message's `model` may name; `default` marks the one used when it names none."""
    return [spec.as_public() for spec in model_list()]


@router.get("/me/usage", response=UsageOut)
def usage_get(request: HttpRequest, filters: Query[UsageQuery]) -> dict[str, Any]:
    """What the user spent from `from` to `to` (their own calendar days, inclusive; both default
    to today), background work included, and their daily limits (null: unlimited). `images`
    stays 0: there are no images yet."""
    user_id: int = request.auth.pk  # type: ignore[attr-defined]
    today = user_day(zone=user_zone_get(user_id=user_id))
    date_to = filters.to or today
    date_from = filters.from_ or date_to
    if date_from > date_to:
        raise InvalidInput("from is after to.", field="from")
    if date_to - date_from > timedelta(days=USAGE_RANGE_DAYS_MAX):
        raise InvalidInput(f"The range is longer than {USAGE_RANGE_DAYS_MAX} days.", field="from")
    return usage_summary_get(user_id=user_id, date_from=date_from, date_to=date_to)
