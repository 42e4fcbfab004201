"""Staff insight: the conversation page (mode decisions, reply figures) and the usage report."""

import re
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from conversations.admin_usage import UsageFilters, UsageRow, message_usage_report
from conversations.models import Conversation, Message, Role, Status
from llm.models import UsageKind, UsageRecord
from testing.support import AvatarFactory, ConversationFactory, MessageFactory, UserFactory

pytestmark = pytest.mark.django_db

USAGE = reverse("admin:conversations_usage_report")
DAY_1 = date(2025, 3, 3)
DAY_2 = date(2025, 3, 4)
RANGE = {"date_from": "2025-03-03", "date_to": "2025-03-04"}


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def message(conversation: Conversation, role: str, when: datetime, **fields) -> Message:
    created = MessageFactory(conversation=conversation, role=role, **fields)
    Message.objects.filter(pk=created.pk).update(created_at=when)  # auto_now_add ignores a value given
    return created


def turn(conversation, when, *, status=Status.COMPLETE, prompt=None, completion=None, ttft=None, mode="secretary"):
    asked = message(conversation, Role.USER, when, mode=mode)
    reply = message(
        conversation,
        Role.ASSISTANT,
        when,
        reply_to=asked,
        status=status,
        mode=mode,
        prompt_tokens=prompt,
        completion_tokens=completion,
        ttft_ms=ttft,
    )
    return asked, reply


@pytest.fixture
def staff_client() -> Client:
    client = Client()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def usage():
    """Known messages: two users, two avatars, two days in range, one day outside it."""
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    ada, milo = AvatarFactory(name="Ada", slug="ada"), AvatarFactory(name="Milo", slug="milo")
    alice_ada = ConversationFactory(user=alice, avatar=ada)
    alice_milo = ConversationFactory(user=alice, avatar=milo)
    bob_ada = ConversationFactory(user=bob, avatar=ada)

    message(alice_ada, Role.ASSISTANT, at(DAY_1, 9), content="Morning.", finish_reason="greeting")  # not a reply
    turn(alice_ada, at(DAY_1), prompt=100, completion=20, ttft=200)
    turn(alice_ada, at(DAY_2), status=Status.FALLBACK)
    turn(alice_milo, at(DAY_2), status=Status.CANCELLED, prompt=50, completion=5, ttft=400)
    turn(bob_ada, at(DAY_2), status=Status.FAILED, prompt=70, completion=7, ttft=300)
    turn(bob_ada, at(DAY_2, 13), status=Status.STREAMING)  # in flight: its question counts, not the reply
    turn(bob_ada, at(date(2025, 2, 1)), prompt=1000, completion=1000, ttft=50)  # outside the range
    return {"alice": alice, "bob": bob, "ada": ada, "milo": milo}


def row(key, label, user_messages, replies, cancelled, fallbacks, failures, prompt, completion, ttft) -> UsageRow:
    return UsageRow(key, label, user_messages, replies, cancelled, fallbacks, failures, prompt, completion, ttft)


# --- the usage figures ------------------------------------------------------------------------


def test_the_report_counts_exactly_the_replies_tokens_fallbacks_and_failures_in_range(usage):
    report = message_usage_report(filters=UsageFilters(date_from=DAY_1, date_to=DAY_2))

    assert report.total == row(None, "All", 5, 4, 1, 1, 1, 220, 32, 300)
    assert report.total.total_tokens == 252
    ada, milo = usage["ada"].pk, usage["milo"].pk
    assert report.by_avatar == [
        row(ada, "Ada", 4, 3, 0, 1, 1, 170, 27, 250),
        row(milo, "Milo", 1, 1, 1, 0, 0, 50, 5, 400),
    ]
    assert report.by_user == [  # the heaviest user first
        row(usage["alice"].pk, "alice", 3, 3, 1, 1, 0, 150, 25, 300),
        row(usage["bob"].pk, "bob", 2, 1, 0, 0, 1, 70, 7, 300),
    ]
    assert report.by_day == [  # the newest day first
        row(DAY_2, "2025-03-04", 4, 3, 1, 1, 1, 120, 12, 350),
        row(DAY_1, "2025-03-03", 1, 1, 0, 0, 0, 100, 20, 200),
    ]


def test_the_report_filters_by_avatar_and_user(usage):
    filters = UsageFilters(date_from=DAY_1, date_to=DAY_2, avatar_id=usage["ada"].pk, user_id=usage["bob"].pk)

    report = message_usage_report(filters=filters)

    assert report.total == row(None, "All", 2, 1, 0, 0, 1, 70, 7, 300)
    assert [r.label for r in report.by_avatar] == ["Ada"]
    assert [r.label for r in report.by_user] == ["bob"]
    assert [r.label for r in report.by_day] == ["2025-03-04"]


def test_a_day_without_messages_reports_zeros_not_nothing(usage):
    report = message_usage_report(filters=UsageFilters(date_from=date(2025, 1, 1), date_to=date(2025, 1, 2)))

    assert report.total == row(None, "All", 0, 0, 0, 0, 0, 0, 0, None)
    assert report.by_avatar == report.by_user == report.by_day == []


# --- the usage page -----------------------------------------------------------------------------


def figures(content: str, table: str) -> list[dict[str, str]]:
    body = content.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    rows = []
    for tr in re.findall(r"<tr data-key=.*?</tr>", body, re.DOTALL):
        cells = dict(re.findall(r'data-figure="(\w+)">([^<]*)<', tr))
        label = re.search(r"<th scope=\"row\">(.*?)</th>", tr, re.DOTALL)
        assert label is not None
        cells["label"] = re.sub(r"<[^>]+>", "", label[1]).strip()
        rows.append(cells)
    return rows


def test_the_page_shows_the_figures_per_avatar_user_and_day(staff_client, usage):
    response = staff_client.get(USAGE, RANGE)

    assert response.status_code == 200
    content = response.content.decode()
    costless = [
        {k: v for k, v in r.items() if "cost" not in k and k != "background_tokens"}
        for r in figures(content, "usage-by-avatar")
    ]
    assert costless == [
        {"label": "Ada", "user_messages": "4", "replies": "3", "cancelled": "0", "fallbacks": "1", "failures": "1",
         "prompt_tokens": "170", "completion_tokens": "27", "total_tokens": "197", "avg_ttft_ms": "250 ms"},
        {"label": "Milo", "user_messages": "1", "replies": "1", "cancelled": "1", "fallbacks": "0", "failures": "0",
         "prompt_tokens": "50", "completion_tokens": "5", "total_tokens": "55", "avg_ttft_ms": "400 ms"},
    ]  # fmt: skip
    assert [(r["label"], r["total_tokens"]) for r in figures(content, "usage-by-user")] == [
        ("alice", "175"),
        ("bob", "77"),
    ]
    assert [(r["label"], r["replies"]) for r in figures(content, "usage-by-day")] == [
        ("2025-03-04", "3"),
        ("2025-03-03", "1"),
    ]
    # Each avatar and user row leads to their conversations.
    conversations = reverse("admin:conversations_conversation_changelist")
    assert f'href="{conversations}?avatar__id__exact={usage["ada"].pk}"' in content
    assert f'href="{conversations}?user__id__exact={usage["alice"].pk}"' in content


def test_the_page_filters_by_avatar_and_username(staff_client, usage):
    response = staff_client.get(USAGE, {**RANGE, "avatar": usage["ada"].pk, "user": "BOB"})

    content = response.content.decode()
    assert [(r["label"], r["replies"], r["failures"]) for r in figures(content, "usage-by-user")] == [("bob", "1", "1")]
    assert [r["label"] for r in figures(content, "usage-by-avatar")] == ["Ada"]


def test_without_a_range_the_page_shows_the_last_30_days(staff_client, usage):
    response = staff_client.get(USAGE)

    assert response.status_code == 200
    form = response.context["form"]
    assert (form.cleaned_data["date_to"] - form.cleaned_data["date_from"]).days == 29


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"date_from": "2025-03-05", "date_to": "2025-03-01"}, "The start of the range is after its end."),
        ({"user": "nobody"}, "No user is called “nobody”."),
        ({"date_from": "yesterday"}, "Enter a valid date."),
        ({"avatar": "999999"}, "Select a valid choice."),
    ],
)
def test_bad_filters_are_explained_and_nothing_is_counted(staff_client, usage, query, error):
    response = staff_client.get(USAGE, query)

    assert response.status_code == 200
    assert error in response.content.decode()
    assert response.context["report"] is None


def test_the_number_of_queries_does_not_grow_with_the_messages(staff_client, usage):
    with CaptureQueriesContext(connection) as few:
        assert staff_client.get(USAGE, {**RANGE, "user": "alice"}).status_code == 200

    # Given many more messages, users, avatars and days
    for n in range(12):
        conversation = ConversationFactory(user=UserFactory(username=f"extra{n}"), avatar=AvatarFactory())
        turn(conversation, at(DAY_1 if n % 2 else DAY_2, 8 + n), prompt=10 + n, completion=n, ttft=100 + n)
    with CaptureQueriesContext(connection) as many:
        response = staff_client.get(USAGE, {**RANGE, "user": "alice"})

    assert response.status_code == 200
    assert len(many.captured_queries) == len(few.captured_queries)
    assert message_usage_report(filters=UsageFilters(date_from=DAY_1, date_to=DAY_2)).total.replies == 4 + 12


def test_staff_without_the_view_message_permission_are_refused(usage):
    client = Client()
    client.force_login(UserFactory(username="helper", is_staff=True))

    response = client.get(USAGE, RANGE)

    assert response.status_code == 403
    assert b"alice" not in response.content


def test_staff_with_the_view_message_permission_may_see_it():
    user = UserFactory(username="analyst", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_message"))
    client = Client()
    client.force_login(User.objects.get(pk=user.pk))

    assert client.get(USAGE, RANGE).status_code == 200


@pytest.mark.parametrize("login", [None, "sam"], ids=["anonymous", "signed-in user"])
def test_everyone_else_is_sent_to_the_admin_login(usage, login):
    client = Client()
    if login:
        client.force_login(UserFactory(username=login))

    response = client.get(USAGE, RANGE)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_the_admin_index_and_the_change_lists_link_the_report(staff_client):
    for url in (
        reverse("admin:index"),
        reverse("admin:conversations_conversation_changelist"),
        reverse("admin:conversations_message_changelist"),
    ):
        response = staff_client.get(url)
        assert response.status_code == 200, url
        assert f'href="{USAGE}"' in response.content.decode(), url


def test_the_index_hides_the_link_from_staff_who_may_not_see_it():
    client = Client()
    client.force_login(UserFactory(username="helper", is_staff=True))

    response = client.get(reverse("admin:index"))

    assert response.status_code == 200
    assert f'href="{USAGE}"' not in response.content.decode()


# --- the conversation page ----------------------------------------------------------------------


def test_the_conversation_page_explains_each_mode_decision_and_each_reply(staff_client):
    conversation = ConversationFactory(mode="intimate")
    message(conversation, Role.ASSISTANT, at(DAY_1), content="Hello <there>!", finish_reason="greeting")
    asked = message(
        conversation,
        Role.USER,
        at(DAY_1),
        content="I need a hug",
        mode="intimate",
        route={
            "mode": "intimate", "previous": "secretary", "pointed": "intimate", "score": 97.4,
            "matched": "i need a hug", "switch": True, "source": "intent", "lock": None,
            "blocked": None, "blocked_reason": None,
        },
    )  # fmt: skip
    message(
        conversation,
        Role.ASSISTANT,
        at(DAY_1),
        content="Come here.",
        mode="intimate",
        reply_to=asked,
        status=Status.CANCELLED,
        prompt_tokens=120,
        completion_tokens=45,
        ttft_ms=230,
        duration_ms=1200,
        model="gpt-4o-mini",
        finish_reason="cancelled",
    )
    message(
        conversation,
        Role.USER,
        at(DAY_2),
        content="tell me something sweet",
        mode="secretary",
        route={
            "mode": "secretary", "previous": "secretary", "pointed": "intimate", "score": 91.0,
            "matched": "tell me something sweet", "switch": False, "source": "intent", "lock": None,
            "blocked": "intimate", "blocked_reason": "opt_in_required",
        },
    )  # fmt: skip

    response = staff_client.get(reverse("admin:conversations_conversation_change", args=[conversation.pk]))

    assert response.status_code == 200
    content = response.content.decode()
    assert '<span class="switched">switched</span> secretary → intimate' in content
    assert "pointed to intimate · matched “i need a hug” · score 97.4" in content
    assert '<span class="blocked">blocked intimate</span> (opt_in_required)' in content
    assert "stayed in secretary" in content
    assert "tokens 120 prompt / 45 completion" in content
    assert "first token 230 ms" in content
    assert '<span class="status-chip cancelled">Cancelled</span>' in content
    assert "Hello &lt;there&gt;!" in content  # message text is escaped, never markup
    assert "1 replies (1 stopped, 0 fallbacks, 0 failures); tokens 120 prompt / 45 completion" in content


@pytest.mark.parametrize(
    "query",
    [
        {"mode__exact": "intimate"},
        {"mode_locked__exact": "1"},
        {"last_message_at__gte": "2025-03-01 00:00:00+00:00", "last_message_at__lt": "2025-03-05 00:00:00+00:00"},
        {"q": "alice"},
    ],
)
def test_the_conversation_list_filters_render(staff_client, usage, query):
    response = staff_client.get(reverse("admin:conversations_conversation_changelist"), query)

    assert response.status_code == 200


def test_a_message_page_shows_its_mode_decision(staff_client):
    asked = MessageFactory(
        route={"mode": "secretary", "previous": "secretary", "pointed": None, "score": 40.0, "matched": "hello",
               "switch": False, "source": "intent", "lock": None, "blocked": None, "blocked_reason": None},
    )  # fmt: skip

    response = staff_client.get(reverse("admin:conversations_message_change", args=[asked.pk]))

    assert response.status_code == 200
    assert "pointed to no mode · matched “hello” · score 40.0" in response.content.decode()


def test_the_report_shows_cost_per_avatar_user_day_and_mode_with_background_work(staff_client, usage):
    # Given priced replies (one in intimate mode) and background calls of alice on both days
    alice, bob, ada, milo = usage["alice"], usage["bob"], usage["ada"], usage["milo"]
    _, reply = turn(
        ConversationFactory(user=alice, avatar=ada), at(DAY_1, 15), prompt=10, completion=10, mode="intimate"
    )
    Message.objects.filter(pk=reply.pk).update(cost_usd=Decimal("0.0100000000"))
    Message.objects.filter(conversation__user=bob, role=Role.ASSISTANT, created_at__date=DAY_2).update(
        cost_usd=Decimal("0.0020000000")
    )  # bob's two replies of day 2 (the failed one and the one still streaming)
    background = {"user": alice, "kind": UsageKind.FACTS, "prompt_tokens": 30, "completion_tokens": 3}
    UsageRecord.objects.create(**background, avatar=ada, cost_usd=Decimal("0.0003000000"), day=DAY_1)
    UsageRecord.objects.create(**background, avatar=milo, cost_usd=Decimal("0.0004000000"), day=DAY_2)
    UsageRecord.objects.create(**background, avatar=milo, cost_usd=Decimal("9"), day=date(2025, 2, 1))  # outside

    report = message_usage_report(filters=UsageFilters(date_from=DAY_1, date_to=DAY_2))

    # Then each breakdown has the messages' cost and the background work beside it, in Decimal
    assert (report.total.cost_usd, report.total.background_tokens, report.total.background_cost_usd) == (
        Decimal("0.014"),
        66,
        Decimal("0.0007"),
    )
    assert report.total.total_cost_usd == Decimal("0.0147")
    assert [(r.label, r.cost_usd, r.background_cost_usd) for r in report.by_avatar] == [
        ("Ada", Decimal("0.014"), Decimal("0.0003")),
        ("Milo", Decimal("0"), Decimal("0.0004")),
    ]
    assert [(r.label, r.cost_usd, r.background_cost_usd) for r in report.by_user] == [
        ("alice", Decimal("0.01"), Decimal("0.0007")),
        ("bob", Decimal("0.004"), Decimal("0")),
    ]
    assert [(r.label, r.cost_usd, r.background_cost_usd) for r in report.by_day] == [
        ("2025-03-04", Decimal("0.004"), Decimal("0.0004")),
        ("2025-03-03", Decimal("0.01"), Decimal("0.0003")),
    ]
    assert [(r.label, r.cost_usd, r.background_tokens, r.background_cost_usd) for r in report.by_mode] == [
        ("intimate", Decimal("0.01"), 0, Decimal("0")),
        ("secretary", Decimal("0.004"), 0, Decimal("0")),
        ("background", Decimal("0"), 66, Decimal("0.0007")),
    ]
    # And the page shows them
    content = staff_client.get(USAGE, RANGE).content.decode()
    assert [(r["label"], r["total_cost_usd"]) for r in figures(content, "usage-by-mode")] == [
        ("intimate", "0.010000"),
        ("secretary", "0.004000"),
        ("background", "0.000700"),
    ]
