"""Models a turn may ask for, what a turn costs, and the daily quota that stops it before the model is called."""

import asyncio
import json
import threading
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import async_to_sync
from django.db import close_old_connections, connection, transaction
from django.db.models import F
from django.test import Client

from accounts.models import Profile
from conversations.models import Message, Role
from conversations.turns import turn_start
from conversations.turns.request import Regenerate
from llm import quotas
from llm.fake import FakeProvider
from llm.models import UsageAvatarDay, UsageDay, UsageKind
from llm.quotas import (
    CLOCK_SKEW_SECONDS,
    QuotaExceeded,
    QuotaLimits,
    QuotaTicket,
    quota_admit,
    quota_release,
    quota_settle,
    reservation_lease,
    seconds_to_midnight,
    usage_record_add,
)
from testing.support import (
    AvatarFactory,
    ConversationFactory,
    UserFactory,
    skip_or_fail,
    turn_complete,
    ws_connect,
    ws_receive_until,
)
from testing.support import turn_frames as run_turn

pytestmark = pytest.mark.django_db(transaction=True)

MODELS = [
    {
        "id": "small",
        "provider": "openai",
        "label": "Small",
        "input_usd_per_mtok": 0.15,
        "output_usd_per_mtok": 0.6,
        "tools": True,
        "default": True,
    },
    {"id": "large", "provider": "openai", "label": "Large", "input_usd_per_mtok": 2.5, "output_usd_per_mtok": 10},
]


@pytest.fixture
def priced(settings: Any) -> None:
    settings.LLM_MODELS = json.dumps(MODELS)


def expected_cost(message: Message, *, input_price: str, output_price: str) -> Decimal:
    assert message.prompt_tokens is not None
    assert message.completion_tokens is not None
    total = Decimal(input_price) * message.prompt_tokens + Decimal(output_price) * message.completion_tokens
    return (total / Decimal(1_000_000)).quantize(Decimal("0.0000000001"))


# --- the model a turn asks for ---------------------------------------------------------------


def test_a_reply_is_priced_from_the_table_in_decimal_and_counted_on_the_users_day(priced: None) -> None:
    # Given a user in Tokyo and a conversation
    conversation = ConversationFactory()
    Profile.objects.filter(user=conversation.user).update(timezone="Asia/Tokyo")
    provider = FakeProvider(reply="Here is a fairly long answer to price.")

    # When they ask the large model
    frames = run_turn(conversation, "hello", provider, model="large")

    # Then the call named it, the reply's cost is the table's, in Decimal, and the day counts it
    assert provider.params[0] is not None
    assert provider.params[0].model == "large"
    reply = Message.objects.get(conversation=conversation, role=Role.ASSISTANT)
    cost = expected_cost(reply, input_price="2.5", output_price="10")
    assert isinstance(reply.cost_usd, Decimal)
    assert reply.cost_usd == cost > 0
    end = next(frame for frame in frames if frame["type"] == "reply.end")
    assert end["message"]["cost_usd"] == str(cost)
    day = UsageDay.objects.get(user=conversation.user)
    assert day.day == datetime.now(ZoneInfo("Asia/Tokyo")).date()
    assert (day.tokens, day.cost_usd, day.reserved_tokens, day.reserved_usd) == (
        (reply.prompt_tokens or 0) + (reply.completion_tokens or 0),
        cost,
        0,
        0,
    )


def test_without_a_model_the_avatars_own_default_is_used(priced: None) -> None:
    conversation = ConversationFactory(avatar=AvatarFactory(default_model="large"))
    provider = FakeProvider(reply="Hi.")

    run_turn(conversation, "hello", provider)

    assert provider.params[0] is not None
    assert provider.params[0].model == "large"


def test_without_a_model_or_an_avatar_default_the_tables_default_is_used(priced: None) -> None:
    conversation = ConversationFactory()
    provider = FakeProvider(reply="Hi.")

    run_turn(conversation, "hello", provider)

    assert provider.params[0] is not None
    assert provider.params[0].model == "small"


def test_an_unknown_model_is_a_422_naming_model_and_nothing_is_stored(priced: None, bearer_for: Any) -> None:
    conversation = ConversationFactory()

    response = Client().post(
        f"/api/conversations/{conversation.pk}/messages",
        {"content": "hi", "model": "gpt-5-turbo-ultra"},
        content_type="application/json",
        headers=bearer_for(conversation.user),
    )

    assert response.status_code == 422
    assert response.json()["field"] == "model"
    assert not Message.objects.filter(conversation=conversation).exists()


def test_get_models_lists_the_table_with_its_default(priced: None, bearer_for: Any) -> None:
    user = UserFactory()

    response = Client().get("/api/models", headers=bearer_for(user))

    assert response.status_code == 200
    assert response.json() == [
        {"id": "small", "provider": "openai", "label": "Small", "default": True},
        {"id": "large", "provider": "openai", "label": "Large", "default": False},
    ]


# --- the daily quota ------------------------------------------------------------------------


def test_at_the_quota_the_user_message_is_stored_no_model_is_called_and_the_error_says_when(
    settings: Any, priced: None
) -> None:
    # Given a user in Paris who has spent their 1,000 tokens today
    settings.QUOTA_DAILY_TOKENS = 1000
    conversation = ConversationFactory()
    Profile.objects.filter(user=conversation.user).update(timezone="Europe/Paris")
    today = datetime.now(ZoneInfo("Europe/Paris")).date()
    UsageDay.objects.create(user=conversation.user, day=today, tokens=1000)
    provider = FakeProvider(reply="never")

    # When they send a message
    before = seconds_to_midnight(zone=ZoneInfo("Europe/Paris"))
    frames = run_turn(conversation, "hello", provider)
    after = seconds_to_midnight(zone=ZoneInfo("Europe/Paris"))

    # Then the message is stored and announced, no model is called, and the error is not retryable
    assert provider.calls == []
    assert [frame["type"] for frame in frames] == ["message.created", "error"]
    error = frames[1]
    assert (error["code"], error["retryable"]) == ("quota_exceeded", False)
    assert after <= error["retry_after"] <= before  # their midnight, counted while the turn ran
    stored = list(Message.objects.filter(conversation=conversation).values_list("role", "content"))
    assert stored == [(Role.USER, "hello")]
    # And nothing was reserved or counted, and the conversation is free for the next message
    assert UsageDay.objects.get(user=conversation.user).reserved_tokens == 0
    assert conversation.__class__.objects.get(pk=conversation.pk).message_count == 1


def test_over_rest_the_quota_is_a_429_with_retry_after_and_the_message_is_stored(
    settings: Any, bearer_for: Any
) -> None:
    settings.QUOTA_DAILY_USD = "0.50"
    conversation = ConversationFactory()
    UsageDay.objects.create(user=conversation.user, day=datetime.now(UTC).date(), cost_usd=Decimal("0.5"))

    response = Client().post(
        f"/api/conversations/{conversation.pk}/messages",
        {"content": "hello"},
        content_type="application/json",
        headers=bearer_for(conversation.user),
    )

    assert response.status_code == 429
    body = response.json()
    assert (body["code"], body["retryable"], body["limit"]) == ("quota_exceeded", False, "cost_usd")
    assert int(response["Retry-After"]) == body["retry_after"] > 0
    assert list(Message.objects.filter(conversation=conversation).values_list("role", flat=True)) == [Role.USER]


def test_over_the_websocket_the_quota_is_an_error_frame_after_message_created(settings: Any) -> None:
    settings.QUOTA_DAILY_TOKENS = 10
    conversation = ConversationFactory()
    UsageDay.objects.create(user=conversation.user, day=datetime.now(UTC).date(), tokens=10)

    async def scenario() -> list[dict[str, Any]]:
        ws = await ws_connect(conversation)
        try:
            await ws.send_to(text_data=json.dumps({"type": "message", "content": "hi"}))
            return await ws_receive_until(ws, "error")
        finally:
            await ws.disconnect()

    frames = async_to_sync(scenario)()

    assert [frame["type"] for frame in frames] == ["message.created", "error"]
    assert (frames[1]["code"], frames[1]["retryable"]) == ("quota_exceeded", False)


def test_staff_can_raise_one_users_quota(settings: Any) -> None:
    settings.QUOTA_DAILY_TOKENS = 10
    conversation = ConversationFactory()
    UsageDay.objects.create(user=conversation.user, day=datetime.now(UTC).date(), tokens=10)
    Profile.objects.filter(user=conversation.user).update(quota_daily_tokens=1_000_000)
    provider = FakeProvider(reply="Hello.")

    frames = run_turn(conversation, "hello", provider)

    assert len(provider.calls) == 1
    assert "error" not in [frame["type"] for frame in frames]


def test_two_concurrent_turns_at_the_limit_only_one_calls_the_model(settings: Any) -> None:
    # SQLite-safe: two turns of one user in two conversations, started together on one loop
    # (each socket's turn); the counter row decides. Given 1 token left today
    settings.QUOTA_DAILY_TOKENS = 1000
    user = UserFactory()
    first, second = ConversationFactory(user=user), ConversationFactory(user=user)
    UsageDay.objects.create(user=user, day=datetime.now(UTC).date(), tokens=999)
    provider = FakeProvider(reply="Only one of us.", delay=0.05)

    async def both() -> list[Any]:
        return await asyncio.gather(
            *(
                turn_complete(user_id=user.pk, conversation_id=c.pk, message={"content": "hello"}, provider=provider)
                for c in (first, second)
            )
        )

    results = async_to_sync(both)()

    assert len(provider.calls) == 1
    assert sorted(result.error is None for result in results) == [False, True]
    assert Message.objects.filter(role=Role.USER, conversation__user=user).count() == 2
    assert Message.objects.filter(role=Role.ASSISTANT, conversation__user=user).count() == 1
    day = UsageDay.objects.get(user=user)
    assert day.reserved_tokens == 0
    assert day.tokens > 999


def admitted_by_two_threads(*, today: date, **admit: Any) -> list[Any]:
    """What `quota_admit` answered to two threads let go at the same instant, at noon of `today`."""
    start = threading.Barrier(2)
    outcomes: list[Any] = []

    def admit_one() -> None:
        try:
            start.wait(timeout=10)
            noon = datetime(today.year, today.month, today.day, 12, tzinfo=UTC)
            outcomes.append(quota_admit(zone_name="UTC", model="m", prompt_tokens=10, max_tokens=10, now=noon, **admit))
        finally:
            close_old_connections()

    threads = [threading.Thread(target=admit_one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def test_on_postgresql_two_threads_at_the_limit_only_one_is_admitted() -> None:
    if connection.vendor != "postgresql":
        skip_or_fail("DATABASE_URL is not PostgreSQL: two threads cannot share SQLite's in-memory test database")
    user = UserFactory()
    limits = QuotaLimits(tokens=1000, cost_usd=None, images=None)
    for attempt in range(10):
        today = date(2030, 1, 1 + attempt)
        UsageDay.objects.create(user=user, day=today, tokens=999)

        outcomes = admitted_by_two_threads(today=today, user_id=user.pk, limits=limits)

        assert sorted(type(outcome).__name__ for outcome in outcomes) == ["QuotaExceeded", "QuotaTicket"]
        assert UsageDay.objects.get(user=user, day=today).reserved_tokens == 20


def test_quota_admit_reserves_under_the_limit_and_refuses_at_it() -> None:
    user = UserFactory()
    limits = QuotaLimits(tokens=100, cost_usd=None, images=None)
    noon = datetime(2030, 3, 1, 12, tzinfo=UTC)

    first = quota_admit(
        user_id=user.pk, limits=limits, zone_name="UTC", model="m", prompt_tokens=40, max_tokens=60, now=noon
    )
    second = quota_admit(
        user_id=user.pk, limits=limits, zone_name="UTC", model="m", prompt_tokens=1, max_tokens=1, now=noon
    )

    assert first == QuotaTicket(
        user_id=user.pk, day=date(2030, 3, 1), tokens=100, cost_usd=Decimal(0), admitted_at=noon
    )
    assert isinstance(second, QuotaExceeded)
    assert (second.code, second.retry_after, second.limit) == ("quota_exceeded", 12 * 3600, "tokens")


def test_a_turn_refused_while_another_settles_is_told_the_limit_the_user_has(monkeypatch: Any) -> None:
    # Given a user with a token limit only, whose one running turn holds the whole allowance
    user = UserFactory()
    limits = QuotaLimits(tokens=100, cost_usd=None)
    noon = datetime(2030, 3, 1, 12, tzinfo=UTC)
    admit = {"user_id": user.pk, "limits": limits, "zone_name": "UTC", "model": "m", "now": noon}
    running = quota_admit(**admit, prompt_tokens=40, max_tokens=60)
    assert isinstance(running, QuotaTicket)
    reserve = quotas._counter_reserve

    def reserve_then_the_running_turn_settles(*args: Any, **kwargs: Any) -> bool:
        admitted = reserve(*args, **kwargs)
        quota_release(ticket=running)  # lands between the refusing UPDATE and the refusal's read
        return admitted

    monkeypatch.setattr(quotas, "_counter_reserve", reserve_then_the_running_turn_settles)

    # When a second turn is refused
    refused = quota_admit(**admit, prompt_tokens=1, max_tokens=1)

    # Then the refusal names the token limit, not a cost limit the user does not have
    assert isinstance(refused, QuotaExceeded)
    assert refused.limit == "tokens"
    assert "100 tokens" in refused.message
    assert "None" not in refused.message


def test_unlimited_users_write_no_quota_row_before_the_call() -> None:
    user = UserFactory()

    ticket = quota_admit(
        user_id=user.pk,
        limits=QuotaLimits(None, None, None),
        zone_name="UTC",
        model="m",
        prompt_tokens=1,
        max_tokens=1,
    )

    assert ticket is None
    assert not UsageDay.objects.exists()


@pytest.mark.parametrize(
    ("now", "zone", "expected"),
    [
        (datetime(2025, 3, 30, 0, 30, tzinfo=UTC), "Europe/Paris", 21 * 3600 + 30 * 60),  # 01:30 CET, a 23-hour day
        (datetime(2025, 10, 26, 0, 30, tzinfo=UTC), "Europe/Paris", 22 * 3600 + 30 * 60),  # 02:30 CEST, a 25-hour day
        (datetime(2025, 6, 1, 23, 0, tzinfo=UTC), "America/New_York", 5 * 3600),
    ],
)
def test_the_quota_resets_at_midnight_in_the_users_zone_across_dst(now: datetime, zone: str, expected: int) -> None:
    assert seconds_to_midnight(zone=ZoneInfo(zone), now=now) == expected


def test_a_regeneration_over_the_quota_is_refused_and_keeps_the_reply_there_is(settings: Any, priced: None) -> None:
    # Given an exchange, then the user's tokens spent for the day
    conversation = ConversationFactory()
    run_turn(conversation, "hello", FakeProvider(reply="Hi there."))
    settings.QUOTA_DAILY_TOKENS = 1000
    UsageDay.objects.filter(user=conversation.user).update(tokens=1000)
    if not UsageDay.objects.filter(user=conversation.user).exists():
        UsageDay.objects.create(user=conversation.user, day=datetime.now(UTC).date(), tokens=1000)
    provider = FakeProvider(reply="never")

    # When they ask for another reply
    async def regenerate() -> None:
        await turn_start(
            user_id=conversation.user_id, conversation_id=conversation.pk, message=Regenerate(), provider=provider
        )

    with pytest.raises(QuotaExceeded):
        async_to_sync(regenerate)()

    # Then no model is called, the reply there was stays the one in use, and the next message is not busy
    assert provider.calls == []
    replies = list(Message.objects.filter(conversation=conversation, role=Role.ASSISTANT, origin="reply"))
    assert [(r.content, r.superseded) for r in replies] == [("Hi there.", False)]
    settings.QUOTA_DAILY_TOKENS = None
    frames = run_turn(conversation, "again", FakeProvider(reply="Sure."))
    assert frames[-1]["type"] == "reply.end"


# --- an avatar's own daily limits -----------------------------------------------------------


def test_at_the_avatars_limit_the_turn_is_refused_naming_the_avatars_limit_and_no_model_is_called(
    bearer_for: Any,
) -> None:
    # Given an avatar that allows each user 1,000 tokens a day, all of which this user has spent with it
    avatar = AvatarFactory(quota_daily_tokens=1000)
    conversation = ConversationFactory(avatar=avatar)
    UsageAvatarDay.objects.create(user=conversation.user, avatar=avatar, day=datetime.now(UTC).date(), tokens=1000)

    # When they send a message over REST
    response = Client().post(
        f"/api/conversations/{conversation.pk}/messages",
        {"content": "hello"},
        content_type="application/json",
        headers=bearer_for(conversation.user),
    )

    # Then it is the quota's 429, naming the avatar's limit, the message is stored and nothing was reserved
    assert response.status_code == 429
    body = response.json()
    assert (body["code"], body["retryable"], body["limit"]) == ("quota_exceeded", False, "avatar_tokens")
    assert "with this avatar" in body["detail"]
    assert int(response["Retry-After"]) == body["retry_after"] > 0
    assert list(Message.objects.filter(conversation=conversation).values_list("role", flat=True)) == [Role.USER]
    assert UsageAvatarDay.objects.get(user=conversation.user).reserved_tokens == 0


def test_the_avatars_limit_is_each_users_and_other_avatars_are_not_held_by_it(settings: Any) -> None:
    # Given an avatar whose US$0.01 a day one user has spent, and a second user and a second avatar
    settings.LLM_MODELS = json.dumps(MODELS)
    limited = AvatarFactory(quota_daily_usd=Decimal("0.01"))
    spent = ConversationFactory(avatar=limited)
    today = datetime.now(UTC).date()
    UsageAvatarDay.objects.create(user=spent.user, avatar=limited, day=today, cost_usd=Decimal("0.01"))
    other_user = ConversationFactory(avatar=limited)
    other_avatar = ConversationFactory(user=spent.user)
    provider = FakeProvider(reply="Hello.")

    # When each talks
    refused = run_turn(spent, "hello", provider)
    answered_user = run_turn(other_user, "hello", provider)
    answered_avatar = run_turn(other_avatar, "hello", provider)

    # Then only the first is refused: the limit is per user and avatar
    assert [frame["type"] for frame in refused] == ["message.created", "error"]
    assert refused[1]["code"] == "quota_exceeded"
    assert answered_user[-1]["type"] == answered_avatar[-1]["type"] == "reply.end"
    assert len(provider.calls) == 2
    # And the second user's spending with the limited avatar is counted on their own row, priced
    row = UsageAvatarDay.objects.get(user=other_user.user, avatar=limited)
    reply = Message.objects.get(conversation=other_user, role=Role.ASSISTANT)
    assert (row.tokens, row.cost_usd, row.reserved_tokens, row.reserved_usd) == (
        (reply.prompt_tokens or 0) + (reply.completion_tokens or 0),
        reply.cost_usd,
        0,
        0,
    )
    # ...and an avatar without limits keeps no counter of its own
    assert not UsageAvatarDay.objects.filter(avatar=other_avatar.avatar).exists()


def test_a_turn_refused_by_the_avatar_gives_back_the_users_reservation(settings: Any) -> None:
    # Given a user with a large quota of their own, at the limit of one avatar
    settings.QUOTA_DAILY_TOKENS = 1_000_000
    avatar = AvatarFactory(quota_daily_tokens=500)
    conversation = ConversationFactory(avatar=avatar)
    today = datetime.now(UTC).date()
    UsageAvatarDay.objects.create(user=conversation.user, avatar=avatar, day=today, tokens=500)
    UsageDay.objects.create(user=conversation.user, day=today, tokens=10)
    provider = FakeProvider(reply="never")

    frames = run_turn(conversation, "hello", provider)

    # Then the turn is refused and the user's own row holds no reservation for it
    assert frames[-1]["code"] == "quota_exceeded"
    assert provider.calls == []
    assert UsageDay.objects.values_list("tokens", "reserved_tokens").get(user=conversation.user) == (10, 0)
    assert UsageAvatarDay.objects.get(user=conversation.user).reserved_tokens == 0


def test_staff_set_an_avatars_limits_in_the_admin_and_the_next_turn_obeys_them() -> None:
    # Given a staff member and an avatar with no limits that a user has talked to today
    staff = Client()
    staff.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    conversation = ConversationFactory()
    avatar = conversation.avatar
    page = staff.get(f"/admin/avatars/avatar/{avatar.pk}/change/")
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {name: form[name].value() or "" for name in form.fields if name not in ("image",)}
    data.update(
        {
            "quota_daily_tokens": "1",
            "quota_daily_usd": "",
            "phrases-TOTAL_FORMS": "0",
            "phrases-INITIAL_FORMS": "0",
            "is_public": "on" if avatar.is_public else "",
            "intimate_allowed": "on" if avatar.intimate_allowed else "",
            "proactive_enabled": "on" if avatar.proactive_enabled else "",
        }
    )

    # When staff give it a limit of one token a day
    response = staff.post(f"/admin/avatars/avatar/{avatar.pk}/change/", data)

    # Then it is saved, and the user's first turn with it is admitted (nothing spent yet), the next refused
    assert response.status_code == 302, response.context["adminform"].form.errors
    avatar.refresh_from_db()
    assert (avatar.quota_daily_tokens, avatar.quota_daily_usd) == (1, None)
    provider = FakeProvider(reply="Hi.")
    first = run_turn(conversation, "hello", provider)
    second = run_turn(conversation, "again", provider)
    assert first[-1]["type"] == "reply.end"
    assert (second[-1]["type"], second[-1]["code"]) == ("error", "quota_exceeded")
    assert len(provider.calls) == 1


def test_two_concurrent_turns_at_the_avatars_limit_only_one_calls_the_model() -> None:
    # Given one user, two conversations with one avatar, and 1 token left with it today
    avatar = AvatarFactory(quota_daily_tokens=1000)
    user = UserFactory()
    first, second = ConversationFactory(user=user, avatar=avatar), ConversationFactory(user=user, avatar=avatar)
    UsageAvatarDay.objects.create(user=user, avatar=avatar, day=datetime.now(UTC).date(), tokens=999)
    provider = FakeProvider(reply="Only one of us.", delay=0.05)

    async def both() -> list[Any]:
        return await asyncio.gather(
            *(
                turn_complete(user_id=user.pk, conversation_id=c.pk, message={"content": "hello"}, provider=provider)
                for c in (first, second)
            )
        )

    results = async_to_sync(both)()

    # Then one was answered, the other refused by the avatar's limit, and the row holds no reservation
    assert len(provider.calls) == 1
    assert sorted(result.error is None for result in results) == [False, True]
    refusal = next(result.error for result in results if result.error is not None)
    assert isinstance(refusal, QuotaExceeded)
    assert refusal.limit == "avatar_tokens"
    assert Message.objects.filter(role=Role.ASSISTANT, conversation__user=user).count() == 1
    row = UsageAvatarDay.objects.get(user=user, avatar=avatar)
    assert row.reserved_tokens == 0
    assert row.tokens > 999


def test_on_postgresql_two_threads_at_the_avatars_limit_only_one_is_admitted() -> None:
    if connection.vendor != "postgresql":
        skip_or_fail("DATABASE_URL is not PostgreSQL: two threads cannot share SQLite's in-memory test database")
    user, avatar = UserFactory(), AvatarFactory()
    for attempt in range(10):
        today = date(2030, 1, 1 + attempt)
        UsageAvatarDay.objects.create(user=user, avatar=avatar, day=today, tokens=999)

        outcomes = admitted_by_two_threads(
            today=today,
            user_id=user.pk,
            limits=QuotaLimits(tokens=1_000_000, cost_usd=None),
            avatar_id=avatar.pk,
            avatar_limits=QuotaLimits(tokens=1000, cost_usd=None),
        )

        assert sorted(type(outcome).__name__ for outcome in outcomes) == ["QuotaExceeded", "QuotaTicket"]
        assert UsageAvatarDay.objects.get(user=user, avatar=avatar, day=today).reserved_tokens == 20
        # The refused one's reservation on the user's own row was rolled back with it
        assert UsageDay.objects.get(user=user, day=today).reserved_tokens == 20


def test_on_postgresql_a_background_call_during_an_admission_of_the_same_user_waits_and_does_not_deadlock() -> None:
    if connection.vendor != "postgresql":
        skip_or_fail("DATABASE_URL is not PostgreSQL: two threads cannot share SQLite's in-memory test database")
    # Given a user with a limited avatar, both counter rows of the day there
    user, avatar = UserFactory(), AvatarFactory()
    today = datetime.now(UTC).date()
    UsageDay.objects.create(user=user, day=today)
    UsageAvatarDay.objects.create(user=user, avatar=avatar, day=today)
    user_row_locked, errors = threading.Event(), []
    release_admission = threading.Event()

    def admission() -> None:
        # As quota_admit does: the user's row, then the avatar's, in one transaction
        try:
            with transaction.atomic():
                UsageDay.objects.filter(user=user, day=today).update(reserved_tokens=F("reserved_tokens") + 1)
                user_row_locked.set()
                release_admission.wait(timeout=10)
                UsageAvatarDay.objects.filter(user=user, avatar=avatar, day=today).update(
                    reserved_tokens=F("reserved_tokens") + 1
                )
        except Exception as exc:
            errors.append(exc)
        finally:
            close_old_connections()

    def background_call() -> None:
        try:
            usage_record_add(
                user_id=user.pk,
                avatar_id=avatar.pk,
                conversation_id=None,
                kind=UsageKind.FACTS,
                subject="message:1",
                model="m",
                prompt_tokens=30,
                completion_tokens=12,
            )
        except Exception as exc:
            errors.append(exc)
        finally:
            close_old_connections()

    # When a background call of that user is counted while the admission holds the user's row
    threads = [threading.Thread(target=admission), threading.Thread(target=background_call)]
    threads[0].start()
    assert user_row_locked.wait(timeout=10)
    threads[1].start()
    with connection.cursor() as cursor:
        for _ in range(100):
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                break
            time.sleep(0.05)
    release_admission.set()
    for thread in threads:
        thread.join(timeout=30)

    # Then neither fails (no deadlock: the call waited for the user's row before the avatar's)
    assert errors == []
    assert UsageDay.objects.values_list("tokens", "reserved_tokens").get(user=user, day=today) == (42, 1)
    assert UsageAvatarDay.objects.values_list("tokens", "reserved_tokens").get(user=user, day=today) == (42, 1)


# --- a reservation is a lease ---------------------------------------------------------------


def test_a_crashed_turns_reservation_holds_for_its_lease_then_the_user_can_talk_again(settings: Any) -> None:
    # Given a user whose last turn was admitted, reserving their whole allowance, and whose
    # process then died: the reservation is on the row, nothing will ever settle it
    settings.QUOTA_DAILY_TOKENS = 10_000
    settings.QUOTA_RESERVATION_SECONDS = 600
    conversation = ConversationFactory()
    crashed_at = datetime.now(UTC) - timedelta(seconds=30)
    UsageDay.objects.create(
        user=conversation.user,
        day=datetime.now(UTC).date(),
        tokens=100,
        reserved_tokens=9_900,
        reserved_since=crashed_at,
        reserved_until=crashed_at + timedelta(seconds=600),
    )
    provider = FakeProvider(reply="Hello again.")

    # When they write within the lease, they are refused (the turn may still be running)
    refused = run_turn(conversation, "hello?", provider)
    assert (refused[-1]["type"], refused[-1]["code"]) == ("error", "quota_exceeded")
    assert provider.calls == []

    # When they write after it, the crashed reservation is forgotten and they are answered
    UsageDay.objects.filter(user=conversation.user).update(
        reserved_since=crashed_at - timedelta(seconds=600), reserved_until=crashed_at - timedelta(seconds=1)
    )
    answered = run_turn(conversation, "hello?", provider)
    assert answered[-1]["type"] == "reply.end"
    assert len(provider.calls) == 1
    day = UsageDay.objects.get(user=conversation.user)
    reply = Message.objects.get(conversation=conversation, role=Role.ASSISTANT)
    assert (day.reserved_tokens, day.tokens) == (0, 100 + (reply.prompt_tokens or 0) + (reply.completion_tokens or 0))


def test_a_turn_that_outlives_its_lease_settles_without_giving_back_what_was_already_forgotten() -> None:
    user = UserFactory()
    limits = QuotaLimits(tokens=1_000, cost_usd=None)
    noon = datetime(2030, 3, 1, 12, tzinfo=UTC)
    lease = reservation_lease()
    admit = {"user_id": user.pk, "limits": limits, "zone_name": "UTC", "model": "m", "prompt_tokens": 100}

    # Given a turn admitted at noon that holds the whole allowance
    slow = quota_admit(**admit, max_tokens=900, now=noon)
    assert isinstance(slow, QuotaTicket)
    assert isinstance(quota_admit(**admit, max_tokens=1, now=noon + lease - timedelta(seconds=1)), QuotaExceeded)

    # When its lease is over, a new turn is admitted in a new period
    fresh = quota_admit(**admit, max_tokens=200, now=noon + lease + timedelta(seconds=1))
    assert isinstance(fresh, QuotaTicket)
    row = UsageDay.objects.get(user=user)
    assert row.reserved_tokens == 300
    assert row.reserved_since == noon + lease + timedelta(seconds=1) - timedelta(seconds=CLOCK_SKEW_SECONDS)

    # Then the slow turn, ending at last, counts what it spent but takes nothing off the new period
    quota_settle(ticket=slow, user_id=user.pk, zone_name="UTC", tokens=150, cost_usd=Decimal(0))
    row.refresh_from_db()
    assert (row.tokens, row.reserved_tokens) == (150, 300)
    # ...and the new turn gives back exactly its own
    quota_release(ticket=fresh)
    row.refresh_from_db()
    assert (row.tokens, row.reserved_tokens) == (150, 0)


def test_the_lease_is_the_turn_locks_time_to_live_plus_five_minutes_unless_set(settings: Any) -> None:
    settings.TURN_LOCK_SECONDS = 120
    settings.QUOTA_RESERVATION_SECONDS = None
    assert reservation_lease() == timedelta(seconds=420)

    settings.QUOTA_RESERVATION_SECONDS = 900
    assert reservation_lease() == timedelta(seconds=900)


def test_a_turn_admitted_by_a_process_whose_clock_is_a_little_behind_still_gives_its_reservation_back() -> None:
    # Given a period started by one process at noon, and a turn admitted into it by another
    # process whose clock reads ten seconds earlier
    user = UserFactory()
    limits = QuotaLimits(tokens=10_000, cost_usd=None)
    noon = datetime(2030, 3, 1, 12, tzinfo=UTC)
    admit = {"user_id": user.pk, "limits": limits, "zone_name": "UTC", "model": "m", "prompt_tokens": 100}
    first = quota_admit(**admit, max_tokens=100, now=noon)
    behind = quota_admit(**admit, max_tokens=300, now=noon - timedelta(seconds=10))
    assert isinstance(first, QuotaTicket)
    assert isinstance(behind, QuotaTicket)

    # When both end
    quota_release(ticket=behind)
    quota_release(ticket=first)

    # Then nothing stays reserved
    assert UsageDay.objects.get(user=user).reserved_tokens == 0
