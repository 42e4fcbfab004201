"""Fixtures of the pictures' tests: a storage of their own, the fake provider (or llmock), fast retries."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from images.providers.fake import FakeImageProvider
from images.registry import image_provider_get, image_provider_reset
from llm.testing import LlmockServer, llmock_server


@pytest.fixture(autouse=True)
def picture_storage(settings: Any, tmp_path: Path) -> Path:
    """Pictures saved under this test's own directory (never the project's media/)."""
    location = tmp_path / "pictures-storage"
    settings.STORAGES = {
        **settings.STORAGES,
        "images": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(location), "base_url": None},
        },
    }
    return location


@pytest.fixture(autouse=True)
def _tasks_in_process() -> Iterator[None]:
    """Pictures are made on the in-process thread, as on embedded defaults, also where REDIS_URL
    is set (CI): no Celery worker runs beside the tests."""
    from companion.celery import app

    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = eager


@pytest.fixture(autouse=True)
def _picture_settings(settings: Any) -> Iterator[None]:
    settings.IMAGE_PROVIDER = "fake"
    settings.IMAGE_RETRY_SECONDS = 0.05
    settings.IMAGE_SIZE = "1024x1024"
    settings.IMAGE_QUALITY = "medium"
    settings.QUOTA_DAILY_IMAGES = None
    image_provider_reset()
    yield
    image_provider_reset()


@pytest.fixture
def fake_pictures() -> FakeImageProvider:
    provider = image_provider_get()
    assert isinstance(provider, FakeImageProvider)
    return provider


@pytest.fixture(scope="session")
def llmock_process() -> Iterator[LlmockServer]:
    with llmock_server() as server:
        yield server


@pytest.fixture
def llmock(llmock_process: LlmockServer) -> LlmockServer:
    llmock_process.reset()
    return llmock_process


@pytest.fixture
def llmock_pictures(llmock: LlmockServer, settings: Any) -> LlmockServer:
    """The configured image provider is llmock's /v1/images/generations (answers: SVG as a data URL)."""
    settings.IMAGE_PROVIDER = "openai"
    settings.IMAGE_BASE_URL = llmock.base_url
    settings.IMAGE_API_KEY = "test-key"
    settings.IMAGE_MODEL = "gpt-image-1"
    settings.IMAGE_TIMEOUT = 2.0
    image_provider_reset()
    return llmock


def image_requests(server: LlmockServer) -> list[dict[str, Any]]:
    return [r for r in server.requests() if str(r.get("path", "")).endswith("/images/generations")]
