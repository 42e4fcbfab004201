"""Fixtures shared by every app's tests."""

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client

from companion.testing import UserFactory


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def user(db: Any) -> User:
    return UserFactory(username="sam")


@pytest.fixture
def other_user(db: Any) -> User:
    return UserFactory(username="alex")


@pytest.fixture
def anon_client() -> Client:
    return Client()
