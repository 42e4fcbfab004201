"""The usage rows in the admin: staff read them; nobody adds or changes one there."""

from datetime import date
from decimal import Decimal

import pytest
from django.test import Client

from llm.models import UsageAvatarDay, UsageDay, UsageKind, UsageRecord
from testing.support import AvatarFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def test_usage_rows_are_listed_and_shown_read_only_and_cannot_be_added(staff: Client) -> None:
    user, avatar = UserFactory(username="casey"), AvatarFactory()
    day = date(2030, 3, 1)
    rows = {
        "usageday": UsageDay.objects.create(user=user, day=day, tokens=4_321),
        "usageavatarday": UsageAvatarDay.objects.create(user=user, avatar=avatar, day=day, tokens=4_321),
        "usagerecord": UsageRecord.objects.create(
            user=user, kind=UsageKind.SUMMARY, day=day, prompt_tokens=4_321, cost_usd=Decimal("0.01")
        ),
    }
    for name, row in rows.items():
        listed = staff.get(f"/admin/llm/{name}/")
        assert listed.status_code == 200, name
        assert "casey" in listed.content.decode()

        shown = staff.get(f"/admin/llm/{name}/{row.pk}/change/")
        assert shown.status_code == 200, name
        assert "4321" in shown.content.decode() or "4,321" in shown.content.decode()
        assert 'name="tokens"' not in shown.content.decode()
        assert 'name="prompt_tokens"' not in shown.content.decode()

        assert staff.get(f"/admin/llm/{name}/add/").status_code == 403, name
        posted = staff.post(f"/admin/llm/{name}/{row.pk}/change/", {"tokens": 0, "prompt_tokens": 0})
        assert posted.status_code == 403, name
    assert UsageDay.objects.get().tokens == 4_321
    assert UsageRecord.objects.get().prompt_tokens == 4_321
