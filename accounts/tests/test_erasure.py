"""DELETE /api/me: erasing an account, and nothing of it left anywhere (accounts/erasure.py)."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.apps import apps
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Group, User
from django.core.files.base import ContentFile
from django.db import models
from django.test import Client
from django.utils import timezone

from accounts.erasure import ERASED_REPR, user_erase_unchecked
from accounts.models import ApiToken
from accounts.selectors import token_family_group_name
from accounts.services import token_pair_create
from accounts.tests.conftest import PASSWORD, bearer
from avatars.models import Avatar, AvatarPhrase
from conversations.admin_usage import UsageFilters, message_usage_report
from conversations.models import Conversation, ErasedUsage, Message, Role
from conversations.realtime import conversation_group_name
from conversations.titles import conversation_title_generate
from llm.base import ChatMessage, Completion, CompletionParams
from llm.fake import FakeProvider
from llm.models import UsageAvatarDay, UsageDay, UsageKind, UsageRecord
from llm.quotas import QuotaLimits, QuotaTicket, quota_admit, quota_settle, usage_day_add, usage_record_add
from memory import services as memory_services
from memory import tasks as memory_tasks
from memory.models import Memory, Summary
from secretary.delivery import reminder_deliver, reminders_claim_due
from secretary.models import Reminder, Task
from testing.support import AvatarFactory, ConversationFactory, MessageFactory, UserFactory

pytestmark = pytest.mark.django_db

# Said only in the erased account's rows: found anywhere afterwards, something kept it.
MARKER = "Zephyrine-4417"

# Rows reachable from the erased user that stay, and why (docs/operations.md, "Erasing an account").
# A model added here must have a reason, and its kept rows must not point at the user.
KEPT_ANONYMISED: dict[type[models.Model], str] = {
    Avatar: "a public avatar the user owned stays in the catalogue, owned by nobody: others talk to it",
}


def erase(client: Client, user: User, password: str = PASSWORD, access: str | None = None) -> Any:
    access = access or token_pair_create(user=user).access
    return client.delete("/api/me", {"password": password}, content_type="application/json", headers=bearer(access))


@pytest.fixture
def media_root(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return Path(settings.MEDIA_ROOT)


@pytest.fixture
def account(media_root: Path) -> dict[str, Any]:
    """A user with one of everything, and another user whose data must not move."""
    user = UserFactory(username="zephyrine", first_name=MARKER)
    user.groups.add(Group.objects.create(name="testers"))
    catalogue = AvatarFactory(name="Ada")
    own = AvatarFactory(owner=user, is_public=False, name=f"{MARKER} own", slug="own")
    own.image.save("own.png", ContentFile(b"\x89PNG not really"), save=True)
    AvatarPhrase.objects.create(avatar=own, mode="secretary", text=f"{MARKER} phrase")
    shared = AvatarFactory(owner=user, is_public=True, name="Shared", slug="shared")

    conversation = ConversationFactory(user=user, avatar=catalogue, title=f"{MARKER} chat")
    first = MessageFactory(conversation=conversation, content=f"I am {MARKER}")
    reply = MessageFactory(
        conversation=conversation,
        role=Role.ASSISTANT,
        content=f"Hello {MARKER}",
        reply_to=first,
        model="gpt-test",
        prompt_tokens=100,
        completion_tokens=20,
    )
    Summary.objects.create(conversation=conversation, text=f"{MARKER} summary", covers_until=reply)
    reminder = Reminder.objects.create(
        user=user,
        conversation=conversation,
        text=f"{MARKER} reminder",
        due_at=timezone.now() + timedelta(hours=1),
        timezone="UTC",
        source_message=first,
    )
    MessageFactory(conversation=conversation, role=Role.ASSISTANT, content=MARKER, reminder=reminder, origin="reminder")
    Memory.objects.create(user=user, avatar=catalogue, key="name", text=f"Called {MARKER}", source_message=first)
    Memory.objects.create(user=user, avatar=own, key="pet", text=f"{MARKER}'s cat")
    Task.objects.create(user=user, title=f"{MARKER} task", source_message=first)
    own_chat = ConversationFactory(user=user, avatar=own)
    MessageFactory(conversation=own_chat, content=MARKER)
    token_pair_create(user=user)
    LogEntry.objects.log_actions(
        user_id=UserFactory(username="staffer", is_staff=True).pk,
        queryset=[user, conversation],
        action_flag=CHANGE,
        change_message=[{"changed": {"name": MARKER}}],
        single_object=False,
    )

    other = UserFactory(username="alex")
    other_chat = ConversationFactory(user=other, avatar=shared)
    MessageFactory(conversation=other_chat, content="kept")
    Memory.objects.create(user=other, avatar=shared, key="name", text="Called Alex")
    return {"user": user, "own": own, "shared": shared, "catalogue": catalogue, "other": other}


def rows_of(user: User, *, shared: set[int]) -> dict[type[models.Model], set[Any]]:
    """Every row of every model (the M2M tables too) that points at the user, or at such a row,
    following foreign keys to a fixed point; not through `shared` avatars, which others use."""
    found: dict[type[models.Model], set[Any]] = {User: {user.pk}}
    changed = True
    while changed:
        changed = False
        for model in apps.get_models(include_auto_created=True):
            for field in model._meta.concrete_fields:
                if not field.is_relation or field.related_model not in found:
                    continue
                target_pks = found[field.related_model]
                pks = set(
                    model._default_manager.filter(**{f"{field.attname}__in": target_pks}).values_list("pk", flat=True)
                )
                if model is Avatar:
                    pks -= shared
                new = pks - found.get(model, set())
                if new:
                    found.setdefault(model, set()).update(new)
                    changed = True
    return found


def text_fields_holding(marker: str) -> Iterator[str]:
    """`app.Model.field` for each stored text (char, text and JSON fields) in which `marker` appears."""
    for model in apps.get_models(include_auto_created=True):
        for field in model._meta.concrete_fields:
            if isinstance(field, models.CharField | models.TextField):
                lookup = f"{field.attname}__contains"
            elif isinstance(field, models.JSONField):
                lookup = f"{field.attname}__icontains"  # compares the JSON text
            else:
                continue
            if model._default_manager.filter(**{lookup: marker}).exists():
                yield f"{model._meta.label}.{field.name}"


# --- completeness -------------------------------------------------------------------------------


def test_after_erasure_no_model_in_the_project_still_holds_the_user_or_their_rows(
    client: Client, account: dict[str, Any]
) -> None:
    # Given an account with a row in every table that can hold one
    user, shared = account["user"], account["shared"]
    before = rows_of(user, shared={shared.pk})
    assert {Message, Conversation, Summary, Memory, Reminder, Task, ApiToken, Avatar, AvatarPhrase} <= set(before)

    # When the user erases it
    response = erase(client, user)

    # Then every row that was theirs is gone, except those kept on purpose, which point at no one
    assert response.status_code == 204
    survivors = {
        model._meta.label: sorted(model._default_manager.filter(pk__in=pks).values_list("pk", flat=True))
        for model, pks in before.items()
        if model not in KEPT_ANONYMISED and model._default_manager.filter(pk__in=pks).exists()
    }
    assert survivors == {}
    # ...no foreign key or many-to-many row of any model points at the erased user id
    for model in apps.get_models(include_auto_created=True):
        for field in model._meta.concrete_fields:
            if field.is_relation and field.related_model is User:
                assert not model._default_manager.filter(**{field.attname: user.pk}).exists(), model._meta.label
    # ...the kept public avatar has no owner and still serves the other user
    shared.refresh_from_db()
    assert shared.owner_id is None
    assert Conversation.objects.filter(user=account["other"], avatar=shared).count() == 1
    # ...and nothing the user wrote or was called is stored anywhere, in any text of any model
    assert list(text_fields_holding(MARKER)) == []
    assert list(text_fields_holding("zephyrine")) == []


def test_the_other_users_rows_are_untouched(client: Client, account: dict[str, Any]) -> None:
    other = account["other"]
    before = {
        "conversations": Conversation.objects.filter(user=other).count(),
        "messages": Message.objects.filter(conversation__user=other).count(),
        "memories": Memory.objects.filter(user=other).count(),
    }

    erase(client, account["user"])

    assert before == {"conversations": 1, "messages": 1, "memories": 1}
    assert {
        "conversations": Conversation.objects.filter(user=other).count(),
        "messages": Message.objects.filter(conversation__user=other).count(),
        "memories": Memory.objects.filter(user=other).count(),
    } == before
    assert User.objects.filter(pk=other.pk).exists()


def test_the_own_avatars_image_file_is_deleted(
    client: Client, account: dict[str, Any], media_root: Path, django_capture_on_commit_callbacks: Any
) -> None:
    path = Path(account["own"].image.path)
    assert path.exists()

    with django_capture_on_commit_callbacks(execute=True):
        response = erase(client, account["user"])

    assert response.status_code == 204
    assert not path.exists()
    assert not Avatar.objects.filter(pk=account["own"].pk).exists()


def test_the_admin_history_of_the_users_rows_is_kept_without_their_names(
    client: Client, account: dict[str, Any]
) -> None:
    erase(client, account["user"])

    entries = list(LogEntry.objects.values_list("content_type__model", "object_repr", "change_message"))
    assert sorted(entries) == [("conversation", ERASED_REPR, ""), ("user", ERASED_REPR, "")]


# --- usage kept anonymised ----------------------------------------------------------------------


def test_usage_figures_are_kept_without_the_user_and_the_report_still_counts_them(
    client: Client, account: dict[str, Any]
) -> None:
    today = timezone.localdate()
    filters = UsageFilters(date_from=today, date_to=today)
    before = message_usage_report(filters=filters).total

    erase(client, account["user"])

    after = message_usage_report(filters=filters)
    assert (after.total.user_messages, after.total.replies, after.total.prompt_tokens) == (
        before.user_messages,
        before.replies,
        before.prompt_tokens,
    )
    assert (after.total.prompt_tokens, after.total.completion_tokens) == (100, 20)
    erased_row = after.by_user[-1]
    assert (erased_row.key, erased_row.label, erased_row.prompt_tokens) == (None, "(erased accounts)", 100)
    # The reply was with a catalogue avatar: kept by name. The private avatar's messages keep none.
    assert set(ErasedUsage.objects.values_list("avatar_id", "model", "user_messages", "replies", "prompt_tokens")) == {
        (account["catalogue"].pk, "", 1, 0, 0),
        (account["catalogue"].pk, "gpt-test", 0, 1, 100),
        (None, "", 1, 0, 0),
    }
    assert {row.label for row in after.by_avatar} == {"Ada", "Shared", "(avatars of erased accounts)"}


# --- the request --------------------------------------------------------------------------------


def test_a_wrong_password_is_a_403_and_erases_nothing(client: Client, account: dict[str, Any]) -> None:
    user = account["user"]
    messages = Message.objects.count()

    response = erase(client, user, password="not-my-password")

    assert response.status_code == 403
    assert response.json()["code"] == "wrong_password"
    assert response.json()["field"] == "password"
    assert User.objects.filter(pk=user.pk).exists()
    assert Message.objects.count() == messages
    assert not ErasedUsage.objects.exists()


def test_guessing_the_password_is_throttled_like_sign_ins(
    client: Client, account: dict[str, Any], settings: Any
) -> None:
    settings.LOGIN_THROTTLE_PER_USERNAME = 2
    access = token_pair_create(user=account["user"]).access
    codes = [erase(client, account["user"], password=f"guess-{i}", access=access).status_code for i in range(3)]

    assert codes == [403, 403, 429]
    assert erase(client, account["user"], access=access).status_code == 429  # even the right one, until it cools
    assert User.objects.filter(pk=account["user"].pk).exists()


@pytest.mark.parametrize("body", [{}, {"password": ""}, {"password": 7}])
def test_a_missing_or_malformed_password_is_a_422(client: Client, user: User, body: Any) -> None:
    access = token_pair_create(user=user).access

    response = client.delete("/api/me", body, content_type="application/json", headers=bearer(access))

    assert response.status_code == 422
    assert User.objects.filter(pk=user.pk).exists()


def test_without_a_token_it_is_a_401(client: Client, user: User) -> None:
    response = client.delete("/api/me", {"password": PASSWORD}, content_type="application/json")

    assert response.status_code == 401
    assert User.objects.filter(pk=user.pk).exists()


def test_every_token_stops_working(client: Client, user: User) -> None:
    pair = token_pair_create(user=user)
    erase(client, user)

    assert client.get("/api/me", headers=bearer(pair.access)).status_code == 401
    refreshed = client.post("/api/auth/refresh", {"refresh": pair.refresh}, content_type="application/json")
    assert refreshed.status_code == 401
    signed_in = client.post(
        "/api/auth/token", {"username": "sam", "password": PASSWORD}, content_type="application/json"
    )
    assert signed_in.status_code == 401


def test_erasing_twice_is_a_quiet_no_op(account: dict[str, Any]) -> None:
    user_id = account["user"].pk
    first = user_erase_unchecked(user_id=user_id)

    second = user_erase_unchecked(user_id=user_id)

    assert first.messages == 4
    assert (second.conversations, second.messages, second.usage_rows) == (0, 0, 0)


# --- sockets and queued work ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_every_open_socket_of_the_user_is_told_to_close(account: dict[str, Any]) -> None:
    # Given a session's group and a conversation's group, each with a listening channel
    from asgiref.sync import sync_to_async

    user = account["user"]
    layer = get_channel_layer()
    family = await sync_to_async(lambda: ApiToken.objects.filter(user=user).values_list("family", flat=True)[0])()
    conversation_id = await sync_to_async(
        lambda: Conversation.objects.filter(user=user).values_list("pk", flat=True)[0]
    )()
    session, chat = await layer.new_channel(), await layer.new_channel()
    await layer.group_add(token_family_group_name(family), session)
    await layer.group_add(conversation_group_name(conversation_id), chat)

    # When the account is erased (on_commit runs at once outside a transaction)
    await sync_to_async(user_erase_unchecked)(user_id=user.pk)

    # Then both are told to close (the consumer's auth_revoked: close code 4401)
    assert await layer.receive(session) == {"type": "auth.revoked"}
    assert await layer.receive(chat) == {"type": "auth.revoked"}


def test_queued_memory_work_for_an_erased_account_finds_nothing_and_calls_no_model(
    account: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = FakeProvider(reply="never")
    monkeypatch.setattr("llm.registry.provider_get", lambda: provider)
    conversation = Conversation.objects.filter(user=account["user"]).first()
    assert conversation is not None
    message_id = Message.objects.filter(conversation=conversation, role=Role.USER).values_list("pk", flat=True)[0]
    user_erase_unchecked(user_id=account["user"].pk)

    summary = memory_tasks.summarize_conversation.apply(kwargs={"conversation_id": conversation.pk})
    facts = memory_tasks.extract_memories.apply(kwargs={"message_id": message_id})

    assert (summary.successful(), summary.result) == (True, None)
    assert (facts.successful(), facts.result) == (True, [])
    assert provider.calls == []
    assert not Summary.objects.exists()
    assert not Memory.objects.exclude(user=account["other"]).exists()


# --- background work that ends after the erasure --------------------------------------------------


@dataclass
class ErasingProvider(FakeProvider):
    """Answers, but the account is erased while it writes (as a DELETE /api/me landing mid-call)."""

    erase_user_id: int = 0

    async def complete(self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None) -> Completion:
        completion = await super().complete(messages, params=params)
        await sync_to_async(user_erase_unchecked)(user_id=self.erase_user_id)
        return completion


def test_background_calls_are_folded_into_erased_usage_by_day_avatar_and_model(account: dict[str, Any]) -> None:
    # Given a summary with the catalogue avatar and a fact extraction with the user's own avatar
    user, catalogue, own = account["user"], account["catalogue"], account["own"]
    common = {"user_id": user.pk, "conversation_id": None, "subject": "conversation:1", "model": "cheap"}
    usage_record_add(**common, avatar_id=catalogue.pk, kind=UsageKind.SUMMARY, prompt_tokens=300, completion_tokens=50)
    usage_record_add(**common, avatar_id=own.pk, kind=UsageKind.FACTS, prompt_tokens=200, completion_tokens=20)
    today = timezone.localdate()
    before = message_usage_report(filters=UsageFilters(date_from=today, date_to=today)).total

    report = user_erase_unchecked(user_id=user.pk)

    # Then the records are gone with the user, their figures kept with no user, the own avatar unnamed
    assert not UsageRecord.objects.exists()
    assert not UsageDay.objects.exists()
    background = set(
        ErasedUsage.objects.filter(background_tokens__gt=0).values_list("avatar_id", "model", "background_tokens")
    )
    assert background == {(catalogue.pk, "cheap", 350), (None, "cheap", 220)}
    assert report.usage_rows == ErasedUsage.objects.count() == 5
    after = message_usage_report(filters=UsageFilters(date_from=today, date_to=today))
    assert (before.background_tokens, after.total.background_tokens) == (570, 570)
    assert after.by_user[-1].background_tokens == 570


def test_facts_whose_account_is_erased_while_the_model_writes_are_counted_without_the_user(
    account: dict[str, Any],
) -> None:
    # Given a message worth remembering, and a model that answers while the account is erased
    user, catalogue = account["user"], account["catalogue"]
    conversation = Conversation.objects.get(user=user, avatar=catalogue)
    message = MessageFactory(conversation=conversation, content="My sister Ana lives in Lisbon and I work nights.")
    provider = ErasingProvider(
        reply='{"facts": [{"key": "sister", "text": "Has a sister, Ana."}]}', erase_user_id=user.pk
    )

    # When the extraction runs
    stored = memory_services.memory_extract(message_id=message.pk, provider=provider)

    # Then the model was called once, nothing of the user came back, and the call is counted with no user
    assert len(provider.calls) == 1
    assert stored == []
    assert not User.objects.filter(pk=user.pk).exists()
    assert not Memory.objects.exclude(user=account["other"]).exists()
    assert not UsageRecord.objects.exists()
    assert not UsageDay.objects.exists()
    [late] = ErasedUsage.objects.filter(background_tokens__gt=0)
    assert (late.avatar_id, late.background_tokens, late.user_messages, late.replies) == (
        catalogue.pk,
        provider._usage(provider.calls[0]).prompt_tokens + provider._usage(provider.calls[0]).completion_tokens,
        0,
        0,
    )


def test_a_title_whose_account_is_erased_while_the_model_writes_is_counted_without_the_user(
    account: dict[str, Any],
) -> None:
    # Given the user's first exchange with their own avatar, still titled with its name
    user, own = account["user"], account["own"]
    conversation = Conversation.objects.get(user=user, avatar=own)
    first = Message.objects.get(conversation=conversation)
    MessageFactory(conversation=conversation, role=Role.ASSISTANT, content="Hi.", reply_to=first)
    provider = ErasingProvider(reply="Lisbon plans", erase_user_id=user.pk)

    title = conversation_title_generate(conversation_id=conversation.pk, provider=provider)

    # Then no title is written, and the call is counted with no user and no avatar (theirs went too)
    assert title is None
    assert len(provider.calls) == 1
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not UsageRecord.objects.exists()
    [late] = ErasedUsage.objects.filter(background_tokens__gt=0)
    asked = provider.params[0]
    assert asked is not None
    assert (late.avatar_id, late.model) == (None, asked.model)


def test_spending_that_ends_after_the_erasure_recreates_no_counter_row(account: dict[str, Any]) -> None:
    # Given a reply or a reminder that ends after its user's account is gone
    user = account["user"]
    user_erase_unchecked(user_id=user.pk)

    usage_day_add(user_id=user.pk, day=timezone.localdate(), tokens=42, cost_usd=Decimal("0.01"), model="m")

    # Then no counter comes back for them, and the spending is kept with no user
    assert not UsageDay.objects.filter(user_id=user.pk).exists()
    [late] = ErasedUsage.objects.filter(background_tokens__gt=0)
    assert (late.model, late.background_tokens, late.background_cost_usd) == ("m", 42, Decimal("0.01"))


@pytest.mark.parametrize("limited", ["user", "avatar"])
def test_a_reply_in_flight_when_its_account_is_erased_is_counted_on_the_catalogue_avatar_it_was_with(
    account: dict[str, Any], limited: str
) -> None:
    # Given a turn with the catalogue avatar admitted under a daily limit (the user's own, or the avatar's)
    user, catalogue = account["user"], account["catalogue"]
    no_limit = QuotaLimits(tokens=None, cost_usd=None)
    limit = QuotaLimits(tokens=10_000, cost_usd=None)
    ticket = quota_admit(
        user_id=user.pk,
        limits=limit if limited == "user" else no_limit,
        zone_name="UTC",
        model="m",
        prompt_tokens=100,
        max_tokens=500,
        avatar_id=catalogue.pk,
        avatar_limits=limit if limited == "avatar" else None,
    )
    assert isinstance(ticket, QuotaTicket)

    # When the account is erased while the model writes, and the reply then ends
    user_erase_unchecked(user_id=user.pk)
    quota_settle(
        ticket=ticket,
        user_id=user.pk,
        zone_name="UTC",
        tokens=130,
        cost_usd=Decimal("0.002"),
        avatar_id=catalogue.pk,
        model="m",
    )

    # Then its cost is kept with no user, on the avatar it was with, and no counter of theirs comes back
    [late] = ErasedUsage.objects.filter(background_tokens__gt=0)
    assert (late.avatar_id, late.model, late.background_tokens, late.background_cost_usd) == (
        catalogue.pk,
        "m",
        130,
        Decimal("0.002"),
    )
    assert not UsageDay.objects.filter(user_id=user.pk).exists()
    assert not UsageAvatarDay.objects.filter(user_id=user.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_reminder_written_while_its_account_is_erased_stores_nothing_and_counts_its_call_without_the_user(
    account: dict[str, Any],
) -> None:
    # Given a reminder of the user that is due and claimed, and a model that answers while the account is erased
    user, catalogue = account["user"], account["catalogue"]
    conversation = Conversation.objects.get(user=user, avatar=catalogue)
    Reminder.objects.create(
        user=user,
        conversation=conversation,
        text="call mum",
        due_at=timezone.now() - timedelta(seconds=5),
        timezone="UTC",
    )
    (claim,) = reminders_claim_due(now=timezone.now(), limit=10)
    provider = ErasingProvider(reply="Time to call your mum!", erase_user_id=user.pk)

    delivered = async_to_sync(reminder_deliver)(claim, provider=provider)

    # Then nothing is delivered or stored, no counter comes back for the user, and the call is kept with no user
    assert delivered is None
    assert len(provider.calls) == 1
    assert not Message.objects.filter(conversation=conversation).exists()
    assert not UsageDay.objects.exists()
    [late] = ErasedUsage.objects.filter(background_tokens__gt=0)
    usage = provider._usage(provider.calls[0])
    assert (late.avatar_id, late.background_tokens) == (catalogue.pk, usage.prompt_tokens + usage.completion_tokens)
