"""Fixtures shared by every app's tests."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client

from testing.support import UserFactory


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings: Any) -> None:
    # The real hasher is slow on purpose; the suite hashes hundreds of passwords.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def bearer_for() -> Callable[[User], dict[str, str]]:
    """Authorization headers of a fresh token pair for a user."""
    from accounts.services import token_pair_create

    def headers(user: User) -> dict[str, str]:
        return {"Authorization": f"Bearer {token_pair_create(user=user).access}"}

    return headers


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _background_tasks_drained(settings: Any) -> Iterator[None]:
    # Automatic titles would run after every first exchange of every test, on the in-process
    # thread, against the test's in-memory SQLite (shared-cache table locks have no busy
    # timeout): off unless a test turns them on (conversations/tests/test_alternatives.py).
    settings.CONVERSATION_TITLES_AUTO = False
    # Recall's indexing after each turn, likewise: off unless a test turns it on (recall/tests).
    settings.RECALL_INDEX_AUTO = False
    # Background work a test queued finishes before its database is flushed, never against the next test's.
    yield
    from core.background import in_process_tasks_wait

    in_process_tasks_wait(timeout=30)


@pytest.fixture
def user(db: Any) -> User:
    return UserFactory(username="sam")


@pytest.fixture
def other_user(db: Any) -> User:
    return UserFactory(username="alex")


@pytest.fixture
def anon_client() -> Client:
    return Client()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The SQLite test database is a file in the temp folder (settings): Django removes the
    file, and its WAL and shared-memory files, left by threads' connections, go with it."""
    from pathlib import Path

    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        for suffix in ("-wal", "-shm"):
            Path(f"{database['TEST']['NAME']}{suffix}").unlink(missing_ok=True)
