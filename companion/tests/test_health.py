"""/healthz says the process serves; /readyz names each part it depends on and whether it answers."""

from typing import Any

import pytest
from django.db import OperationalError
from django.test import Client

from companion import health

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_credentials(client: Client) -> None:
    response = client.get("/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_names_each_configured_part_and_is_200_when_all_answer(client: Client, settings: Any) -> None:
    response = client.get("/readyz")

    body = response.json()
    assert response.status_code == 200
    assert (body["status"], body["down"]) == ("ok", [])
    expected = {"database", "channel_layer"} | ({"redis", "celery_broker"} if settings.REDIS_URL else set())
    assert set(body["checks"]) == expected
    assert all(check["ok"] for check in body["checks"].values())


def test_readyz_is_a_503_naming_the_part_that_is_down_without_its_error_text(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a database that refuses connections (its error text names the server and user)
    def refused() -> None:
        raise OperationalError('connection to server at "db" failed: password authentication failed for "secret"')

    monkeypatch.setattr(health, "_database_check", refused)

    # When the orchestrator asks whether this process is ready
    response = client.get("/readyz")

    # Then it is told no, and what is down, and nothing of the error's text
    body = response.json()
    assert response.status_code == 503
    assert (body["status"], body["down"]) == ("down", ["database"])
    assert body["checks"]["database"]["ok"] is False
    assert body["checks"]["database"]["error"] == "OperationalError"
    assert "secret" not in response.content.decode()
    assert body["checks"]["channel_layer"]["ok"] is True


def test_readyz_with_a_redis_that_does_not_answer_is_a_503_naming_it(client: Client, settings: Any) -> None:
    # Given a Redis URL where nothing listens (a port taken from the OS and closed again)
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"

    # When readiness is checked
    response = client.get("/readyz")

    # Then Redis is named as down
    assert response.status_code == 503
    assert "redis" in response.json()["down"]
