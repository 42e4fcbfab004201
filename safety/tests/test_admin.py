"""The operator's admin: crisis lines are editable, the daily counts download as CSV (numbers only)."""

from datetime import date

import pytest
from django.test import Client

from safety.models import CrisisResource, SafetyDailyCount
from safety.services import safety_counts_add
from testing.support import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client() -> Client:
    client = Client()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def test_the_seeded_crisis_lines_are_listed_for_the_operator(staff_client: Client) -> None:
    response = staff_client.get("/admin/safety/crisisresource/")

    assert response.status_code == 200
    page = response.content.decode()
    for name in ("988 Suicide &amp; Crisis Lifeline", "Samaritans", "TelefonSeelsorge"):
        assert name in page
    assert CrisisResource.objects.filter(locale="US", phone="988").count() == 1


def test_the_daily_counts_download_as_csv(staff_client: Client) -> None:
    safety_counts_add(day=date(2026, 6, 1), crisis_detections=2, referrals_shown=2, notices_shown=5)
    safety_counts_add(day=date(2026, 6, 2), notices_shown=1)
    ids = [str(pk) for pk in SafetyDailyCount.objects.values_list("pk", flat=True)]

    response = staff_client.post("/admin/safety/safetydailycount/", {"action": "csv_download", "_selected_action": ids})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    assert response.content.decode() == (
        "day,crisis_detections,referrals_shown,notices_shown\n2026-06-01,2,2,5\n2026-06-02,0,0,1\ntotal,2,2,6\n"
    )


def test_the_counts_cannot_be_added_or_edited_by_hand(staff_client: Client) -> None:
    safety_counts_add(day=date(2026, 6, 1), crisis_detections=1)
    row = SafetyDailyCount.objects.get()

    assert staff_client.get("/admin/safety/safetydailycount/add/").status_code == 403
    response = staff_client.post(f"/admin/safety/safetydailycount/{row.pk}/change/", {"crisis_detections": 0})
    assert SafetyDailyCount.objects.get().crisis_detections == 1
    assert response.status_code in (200, 403)
