"""Fixtures for the accounts tests."""

import pytest
from django.contrib.auth.models import User

from accounts.services import TokenPair, token_pair_create

PASSWORD = "correct-horse-battery-staple"  # what testing.support.UserFactory sets


@pytest.fixture
def tokens(user: User) -> TokenPair:
    return token_pair_create(user=user)


def bearer(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access}"}
