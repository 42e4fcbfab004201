"""A live server with llmock as the model, and Debian's Chromium, shared by the browser tests of a module."""

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from testing.support import skip_or_fail
from web.browser import DESKTOP_VIEWPORT, chromium_missing_reason

PASSWORD = "a-long-passphrase-42"
STREAM_CHUNK_DELAY_MS = 30  # slow enough to watch a reply stream, and to stop it
# The server's own scheduler delivers reminders, as with `make run` on embedded defaults.
LIVE_ENV = {
    "REGISTER_THROTTLE_PER_IP": "100",
    "SCHEDULER_IN_PROCESS": "true",
    # Two models, so the chat shows its model picker (llmock answers for any model name).
    "LLM_MODELS": json.dumps(
        [
            {
                "id": "gpt-4o-mini",
                "provider": "openai",
                "label": "GPT-4o mini",
                "default": True,
                "input_usd_per_mtok": 0.15,
                "output_usd_per_mtok": 0.6,
            },
            {
                "id": "claude-haiku-4-5",
                "provider": "openai",
                "label": "Claude Haiku",
                "input_usd_per_mtok": 1,
                "output_usd_per_mtok": 5,
            },
        ]
    ),
}


@dataclass(frozen=True)
class Live:
    url: str
    llm: Any  # llm.testing.LlmockServer
    database_url: str

    def shell(self, code: str) -> None:
        """Run Python in `manage.py shell` against the live server's database (to set up rows fast)."""
        from testing.live_server import PROJECT_DIR

        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DJANGO_SETTINGS", "REDIS_URL"))}
        env.update({"DATABASE_URL": self.database_url, "DJANGO_SETTINGS_MODULE": "companion.settings"})
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=PROJECT_DIR,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def reply(self, text: str) -> None:
        """The next chat reply says `text` (background memory calls, which do not stream, are left alone)."""
        self.llm.scenario({"type": "reply", "text": text, "match": {"stream": True}})

    def api(self, username: str, password: str = PASSWORD) -> httpx.Client:
        client = httpx.Client(base_url=self.url + "/api", timeout=10)
        answer = client.post("/auth/token", json={"username": username, "password": password})
        answer.raise_for_status()
        client.headers["Authorization"] = f"Bearer {answer.json()['access']}"
        return client


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    missing = chromium_missing_reason()
    if missing:
        skip_or_fail(missing)
    from llm.testing import llmock_server
    from testing.live_server import live_database, live_server

    with (
        live_database() as database,
        llmock_server(chunk_delay_ms=STREAM_CHUNK_DELAY_MS) as llm,
        # Most tests register a user of their own, all from 127.0.0.1: more than a real address may in an hour.
        live_server(database=database, llm_base_url=llm.base_url, extra_env=LIVE_ENV) as server,
    ):
        yield Live(url=server.url, llm=llm, database_url=database.url)


@pytest.fixture(scope="module")
def browser(live: Live) -> Iterator[Any]:
    from web.browser import chromium_browser

    with chromium_browser() as browser:
        yield browser


@pytest.fixture
def page(browser: Any, live: Live) -> Iterator[Any]:
    """A fresh tab in a browser context of its own (its own localStorage); any uncaught script error fails the test."""
    live.llm.reset()
    context = browser.new_context(viewport=DESKTOP_VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == []


@pytest.fixture
def username() -> str:
    return f"web{uuid.uuid4().hex[:10]}"
