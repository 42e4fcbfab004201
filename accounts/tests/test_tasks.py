"""The accounts tasks, run as beat runs them."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from accounts import tasks
from accounts.models import ApiToken


@pytest.mark.django_db
def test_the_daily_cleanup_deletes_expired_api_tokens(user: User) -> None:
    ApiToken.objects.create(
        user=user, kind="access", token_hash="a" * 64, family="6f1c0a52-5c1b-4a57-9a53-1d7c8b1f0e01",
        expires_at=timezone.now() - timedelta(minutes=1),
    )  # fmt: skip
    ApiToken.objects.create(
        user=user, kind="refresh", token_hash="b" * 64, family="6f1c0a52-5c1b-4a57-9a53-1d7c8b1f0e01",
        expires_at=timezone.now() + timedelta(days=1),
    )  # fmt: skip

    assert tasks.api_token_delete_expired.apply().result == 1
    assert list(ApiToken.objects.values_list("kind", flat=True)) == ["refresh"]
