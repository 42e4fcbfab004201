"""The price table (LLM_MODELS), Decimal cost arithmetic, the usage API and the operator alerts."""

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import partial
from io import StringIO
from typing import Any

import pytest
from django.core import mail
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client

from llm import alerts
from llm.breaker import CircuitBreaker
from llm.catalog import (
    ModelsConfigError,
    call_cost_usd,
    cost_usd,
    llm_models_check,
    model_choose,
    model_default,
    model_list,
)
from llm.errors import AuthenticationFailed
from llm.fake import FakeProvider
from llm.models import UsageDay
from llm.resilience import ResilientProvider, RetryPolicy, _breaker_alert
from testing.support import UserFactory

TABLE = [
    {"id": "mini", "provider": "openai", "label": "Mini", "input_usd_per_mtok": 0.15, "output_usd_per_mtok": 0.6},
    {
        "id": "big",
        "provider": "openai",
        "label": "Big",
        "input_usd_per_mtok": "2.50",
        "output_usd_per_mtok": 10,
        "tools": False,
        "default": True,
    },
]


# --- prices ---------------------------------------------------------------------------------


def test_cost_is_exact_decimal_arithmetic_not_float() -> None:
    # 0.1 + 0.2 in float is 0.30000000000000004; in our arithmetic it is exact
    assert cost_usd(
        input_usd_per_mtok=Decimal("0.1"),
        output_usd_per_mtok=Decimal("0.2"),
        prompt_tokens=1_000_000,
        completion_tokens=1_000_000,
    ) == Decimal("0.3000000000")
    assert cost_usd(
        input_usd_per_mtok=Decimal("0.15"), output_usd_per_mtok=Decimal("0.6"), prompt_tokens=812, completion_tokens=64
    ) == Decimal("0.0001602000")  # 812 * 0.15 / 1e6 + 64 * 0.6 / 1e6
    # One token of a cheap model still counts, rounded half-even at the tenth place
    assert cost_usd(
        input_usd_per_mtok=Decimal("0.01"), output_usd_per_mtok=Decimal(0), prompt_tokens=1, completion_tokens=0
    ) == Decimal("0.0000000100")


def test_prices_are_read_from_the_json_text_as_decimals(settings: Any) -> None:
    settings.LLM_MODELS = json.dumps(TABLE)

    mini, big = model_list()

    assert mini.input_usd_per_mtok == Decimal("0.15")
    assert isinstance(mini.input_usd_per_mtok, Decimal)
    assert big.input_usd_per_mtok == Decimal("2.50")
    assert (big.default, big.tools, model_default().id) == (True, False, "big")
    assert call_cost_usd(model="mini", prompt_tokens=1000, completion_tokens=1000) == Decimal("0.0007500000")
    assert call_cost_usd(model="not-in-the-table", prompt_tokens=1000, completion_tokens=1000) == Decimal(0)


def test_unset_the_list_is_the_one_llm_model_unpriced(settings: Any) -> None:
    settings.LLM_MODELS = ""
    settings.LLM_MODEL = "llama3.2"
    settings.LLM_ALLOWED_MODELS = []

    assert [(m.id, m.default, m.input_usd_per_mtok) for m in model_list()] == [("llama3.2", True, Decimal(0))]
    assert model_choose(requested=None) is None  # the provider's own model, as before
    assert model_choose(requested=None, avatar_default="llama3.2") == "llama3.2"


def test_without_a_marked_default_llm_models_entry_is_the_default(settings: Any) -> None:
    settings.LLM_MODEL = "mini"
    settings.LLM_MODELS = json.dumps([{**entry, "default": False} for entry in TABLE])

    assert model_default().id == "mini"
    assert model_choose(requested=None, avatar_default="gone-from-the-list") == "mini"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[{not json", "not valid JSON"),
        ('{"id": "x"}', "non-empty JSON list"),
        (json.dumps([{**TABLE[0], "ouput_usd_per_mtok": 0.6}]), "unknown key 'ouput_usd_per_mtok'"),
        (
            json.dumps([{k: v for k, v in TABLE[0].items() if k != "output_usd_per_mtok"}]),
            "lacks 'output_usd_per_mtok'",
        ),
        (json.dumps([{**TABLE[0], "input_usd_per_mtok": -1}]), "input_usd_per_mtok must be zero or more"),
        (json.dumps([{**TABLE[0], "input_usd_per_mtok": "cheap"}]), "must be a number"),
        (json.dumps([TABLE[0], TABLE[0]]), "listed twice"),
        (json.dumps([{**TABLE[0], "default": True}, TABLE[1]]), "more than one default"),
    ],
)
def test_a_bad_price_table_is_a_check_error_that_says_why(settings: Any, value: str, message: str) -> None:
    settings.LLM_MODELS = value

    errors = llm_models_check()

    assert [error.id for error in errors] == ["llm.E001"]
    assert message in errors[0].msg
    with pytest.raises(ModelsConfigError):
        model_list()


def test_with_anyllm_ids_are_provider_colon_model(settings: Any) -> None:
    settings.LLM_PROVIDER = "anyllm"
    settings.LLM_MODELS = json.dumps([{**TABLE[0], "id": "claude-haiku", "provider": "anthropic"}])

    assert "with LLM_PROVIDER=anyllm the id must be anthropic:<model>" in llm_models_check()[0].msg

    settings.LLM_MODELS = json.dumps([{**TABLE[0], "id": "anthropic:claude-haiku-4-5", "provider": "anthropic"}])
    assert llm_models_check() == []


def test_manage_py_check_fails_on_a_typo_in_the_price_table(settings: Any) -> None:
    settings.LLM_MODELS = json.dumps([{**TABLE[0], "input_usd_per_mtk": 0.15}])

    with pytest.raises(SystemCheckError, match=r"llm\.E001.*unknown key 'input_usd_per_mtk'"):
        call_command("check", stdout=StringIO(), stderr=StringIO())


# --- GET /api/me/usage ----------------------------------------------------------------------


@pytest.mark.django_db
def test_usage_sums_the_users_days_in_the_range_with_their_limits(settings: Any, bearer_for: Any) -> None:
    settings.QUOTA_DAILY_TOKENS = 50_000
    settings.QUOTA_DAILY_USD = "1.25"
    user, other = UserFactory(), UserFactory()
    UsageDay.objects.create(user=user, day=date(2025, 5, 1), tokens=100, cost_usd=Decimal("0.0001"))
    UsageDay.objects.create(user=user, day=date(2025, 5, 2), tokens=250, cost_usd=Decimal("0.0020000005"))
    UsageDay.objects.create(user=user, day=date(2025, 5, 3), tokens=9999, cost_usd=Decimal("9"))  # outside
    UsageDay.objects.create(user=other, day=date(2025, 5, 2), tokens=7, cost_usd=Decimal("7"))  # not theirs

    response = Client().get("/api/me/usage", {"from": "2025-05-01", "to": "2025-05-02"}, headers=bearer_for(user))

    assert response.status_code == 200
    assert response.json() == {
        "tokens": 350,
        "cost_usd": "0.0021000005",
        "images": 0,
        "limit": {"tokens": 50000, "cost_usd": "1.25", "images": None},
    }


@pytest.mark.django_db
def test_usage_defaults_to_today_and_refuses_a_range_backwards(bearer_for: Any) -> None:
    user = UserFactory()
    UsageDay.objects.create(user=user, day=datetime.now(UTC).date(), tokens=3, cost_usd=Decimal("0.5"))
    client = Client()

    today = client.get("/api/me/usage", headers=bearer_for(user)).json()
    backwards = client.get("/api/me/usage", {"from": "2025-05-02", "to": "2025-05-01"}, headers=bearer_for(user))

    assert today == {
        "tokens": 3,
        "cost_usd": "0.5000000000",
        "images": 0,
        "limit": {"tokens": None, "cost_usd": None, "images": None},
    }
    assert backwards.status_code == 422
    assert backwards.json()["field"] == "from"


# --- operator alerts ------------------------------------------------------------------------


@pytest.fixture
def outbox(settings: Any) -> Any:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.ADMINS = [("Ops", "ops@example.com")]
    alerts.alerts_forget()
    mail.outbox = []
    yield mail.outbox
    alerts.alerts_forget()


async def test_a_rejected_key_mails_the_admins_once_per_incident(outbox: list[Any]) -> None:
    # Given a provider whose key is rejected, called three times
    provider = ResilientProvider(FakeProvider(error=AuthenticationFailed("401")), policy=RetryPolicy(max_retries=0))
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            await provider.complete([])
    assert alerts.alerts_wait()

    # Then one mail went to ADMINS, saying what and never a key
    assert len(outbox) == 1
    assert outbox[0].to == ["ops@example.com"]
    assert "auth incident" in outbox[0].subject
    assert "error: llm_auth" in outbox[0].body
    assert set(alerts.incidents_open()) == {"auth"}

    # When a call succeeds, the incident ends; a new failure is a new incident: one more mail
    provider.inner.error = None  # type: ignore[attr-defined]
    await provider.complete([])
    assert alerts.incidents_open() == {}
    provider.inner.error = AuthenticationFailed("401")  # type: ignore[attr-defined]
    with pytest.raises(AuthenticationFailed):
        await provider.complete([])
    assert alerts.alerts_wait()
    assert len(outbox) == 2


def test_a_breaker_that_stays_open_mails_once_until_it_closes(outbox: list[Any]) -> None:
    now = [0.0]
    breaker = CircuitBreaker(
        name="openai",
        failure_threshold=1,
        reset_seconds=30,
        clock=lambda: now[0],
        on_transition=partial(_breaker_alert, "openai"),
    )

    def call(ok: bool) -> None:
        permit = breaker.acquire()
        assert permit is not None
        permit.success() if ok else permit.failure()

    call(ok=False)  # opens: one failure is not an incident yet
    assert alerts.alerts_wait()
    assert outbox == []
    for _ in range(3):  # each probe fails: it stays open
        now[0] += 31
        call(ok=False)
    assert alerts.alerts_wait()
    assert len(outbox) == 1
    assert "breaker incident" in outbox[0].subject

    now[0] += 31
    call(ok=True)  # the probe closes it: the incident is over
    assert alerts.incidents_open() == {}
    call(ok=False)
    now[0] += 31
    call(ok=False)  # open again and stays open: a new incident
    assert alerts.alerts_wait()
    assert len(outbox) == 2


@pytest.mark.django_db
def test_the_admin_index_shows_provider_health_and_open_incidents(outbox: list[Any], settings: Any) -> None:
    settings.LLM_PROVIDER = "fake"
    from llm.registry import provider_reset

    provider_reset()
    alerts.incident_open(alerts.AUTH, details={"provider": "openai"})
    client = Client()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))

    content = client.get("/admin/").content.decode()

    assert 'id="provider-health"' in content
    assert 'data-figure="breaker">closed' in content
    assert 'data-incident="auth"' in content
    provider_reset()
