"""llmock, a real OpenAI-compatible server on 127.0.0.1, in its own process, for integration tests.

Any app's tests can use it:

    from llm.testing import llmock_server

    with llmock_server(chunk_delay_ms=20) as server:
        server.scenario({"type": "fail", "status": 429, "retry_after": 0.2})
        provider = OpenAICompatibleProvider(base_url=server.base_url, api_key="test", model="gpt-4o-mini")
        ...
        server.verdict_assert_clean()

A scenario queues behaviours that the next matching requests consume (llmock.scenarios):
  {"type": "fail", "status": 503, "retry_after": 0.2, "code": "...", "times": 1}
  {"type": "reply", "text": "..."}                  what the model says
  {"type": "reply", "tool_calls": [{"name": "reminder_create", "arguments": {...}}],
   "match": {"tools": true}}                       tool calls (and "text" if any), for a request offering tools
  {"type": "slow_first_token", "seconds": 2}        delay before the first streamed chunk
  {"type": "delay", "seconds": 2}                   delay before the whole answer
  {"type": "stream_fault", "kind": "disconnect" | "truncate" | "stall" | "malformed",
   "after_chunks": 1, "stall_seconds": 30}          break a stream before chunk n (0 = role chunk)
`verdict()` is llmock's grading of the client over every request since the last `reset()`.

The server is stopped by its PID: terminate, then kill if it does not exit.
"""

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from core.net import free_port, process_stop

STARTUP_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 5.0


class LlmockError(RuntimeError):
    pass


@dataclass
class LlmockServer:
    port: int
    pid: int
    url: str  # http://127.0.0.1:PORT
    base_url: str  # what an OpenAI client needs: http://127.0.0.1:PORT/v1
    _http: httpx.Client = field(repr=False)

    def scenario(self, *behaviors: dict[str, Any]) -> dict[str, Any]:
        """Queue behaviours for the next requests (see the module docstring)."""
        return self._call("POST", "/_llmock/scenario", json={"behaviors": list(behaviors)})

    def scenario_pending(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_llmock/scenario")["pending"])

    def requests(self) -> list[dict[str, Any]]:
        """Every request served since the last reset, oldest first (waits briefly for those in flight)."""
        return list(self._call("GET", "/_llmock/requests")["requests"])

    def verdict(self) -> dict[str, Any]:
        return self._call("GET", "/_llmock/verdict")

    def verdict_text(self) -> str:
        response = self._http.get("/_llmock/verdict", params={"format": "text"})
        response.raise_for_status()
        return response.text

    def verdict_assert_clean(self) -> dict[str, Any]:
        """No FAIL and no WARN finding; the text report is the assertion message."""
        verdict = self.verdict()
        if verdict["errors"] or verdict["warnings"]:
            raise AssertionError(self.verdict_text())
        return verdict

    def reset(self) -> None:
        """Forget recorded requests and queued behaviours."""
        self._call("POST", "/_llmock/reset")

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise LlmockError(f"{method} {path} -> {response.status_code}: {response.text[:500]}")
        body: dict[str, Any] = response.json()
        return body


@contextmanager
def llmock_server(*, latency_ms: int = 0, chunk_delay_ms: int = 0) -> Iterator[LlmockServer]:
    """Start `llmock serve` on a free port, yield a handle, stop it by its PID."""
    port = free_port()
    command = [
        _executable(),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--response-style",
        "static",
    ]
    if latency_ms:
        command += ["--latency-ms", str(latency_ms)]
    if chunk_delay_ms:
        command += ["--stream-chunk-delay-ms", str(chunk_delay_ms)]
    # Settings left in the environment (LLMOCK_*) would change what the server does.
    env = {name: value for name, value in os.environ.items() if not name.startswith("LLMOCK_")}
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)  # noqa: S603
        url = f"http://127.0.0.1:{port}"
        http = httpx.Client(base_url=url, timeout=10.0)
        try:
            _wait_ready(process, http, log)
            yield LlmockServer(port=port, pid=process.pid, url=url, base_url=f"{url}/v1", _http=http)
        finally:
            http.close()
            process_stop(process, timeout=STOP_TIMEOUT_SECONDS)


def _executable() -> str:
    beside_python = Path(sys.executable).with_name("llmock")
    return str(beside_python) if beside_python.exists() else "llmock"


def _wait_ready(process: "subprocess.Popen[bytes]", http: httpx.Client, log: IO[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LlmockError(f"llmock exited with {process.returncode} at startup:\n{_tail(log)}")
        try:
            if http.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process_stop(process, timeout=STOP_TIMEOUT_SECONDS)
    raise LlmockError(f"llmock did not answer /health within {STARTUP_TIMEOUT_SECONDS:g}s:\n{_tail(log)}")


def _tail(log: IO[bytes], size: int = 4000) -> str:
    log.seek(0)
    return log.read()[-size:].decode("utf-8", errors="replace")


@contextmanager
def provider_configured(dotted_path: str | None = None) -> Iterator[None]:
    """The registry's provider built afresh inside (from `LLM_PROVIDER=dotted_path` when given), forgotten after."""
    from django.test import override_settings

    from llm.registry import provider_reset

    settings_override = override_settings(LLM_PROVIDER=dotted_path) if dotted_path else None
    if settings_override is not None:
        settings_override.enable()
    provider_reset()
    try:
        yield
    finally:
        if settings_override is not None:
            settings_override.disable()
        provider_reset()
