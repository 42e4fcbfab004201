"""Fixtures of the LLM layer's tests: llmock processes, captured `companion.llm` records."""

from collections.abc import Iterator

import pytest

from llm.testing import LlmockServer, llmock_server, provider_configured
from testing.support import logger_captured


@pytest.fixture(scope="session")
def llmock_process() -> Iterator[LlmockServer]:
    """One llmock process for the session (started on first use, stopped by its PID)."""
    with llmock_server() as server:
        yield server


@pytest.fixture
def llmock(llmock_process: LlmockServer) -> LlmockServer:
    """The session's llmock with an empty journal and no queued behaviour.

    Shadows llmock's own pytest-plugin fixture of the same name (an in-thread server).
    """
    llmock_process.reset()
    return llmock_process


@pytest.fixture(scope="module")
def paced_llmock_process() -> Iterator[LlmockServer]:
    """An llmock that waits 25 ms between streamed chunks, like a model generating."""
    with llmock_server(chunk_delay_ms=25) as server:
        yield server


@pytest.fixture
def paced_llmock(paced_llmock_process: LlmockServer) -> LlmockServer:
    paced_llmock_process.reset()
    return paced_llmock_process


@pytest.fixture
def llm_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Records of the "companion.llm" logger at every level.

    That logger's parent does not propagate to the root, where caplog usually listens; the
    handler is attached directly unless pytest already reaches it.
    """
    with logger_captured(caplog, "companion.llm") as captured:
        yield captured


@pytest.fixture(autouse=True)
def _fresh_provider() -> Iterator[None]:
    with provider_configured():
        yield
