import importlib
from typing import Any

import pytest
from django.apps import apps


@pytest.fixture(autouse=True)
def crisis_resources_seeded(request: pytest.FixtureRequest) -> None:
    """The lines the data migration seeds: a transactional test's flush removes them, so seed them again."""
    if "django_db_setup" not in request.fixturenames and not request.node.get_closest_marker("django_db"):
        return
    request.getfixturevalue("_django_db_helper")
    seed = importlib.import_module("safety.migrations.0002_crisis_resources_seed")
    schema_editor: Any = None
    seed.resources_seed(apps, schema_editor)


@pytest.fixture(autouse=True)
def memory_work_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory work has its own tests; here it would outlive a test and race the database flush."""
    monkeypatch.setattr("conversations.turns.run.conversation_memory_schedule", lambda **_: None)
