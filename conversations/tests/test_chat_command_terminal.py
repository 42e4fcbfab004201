"""`manage.py chat` in a real terminal: a subprocess on a pseudo-terminal, Ctrl-C sent as SIGINT.

Quitting must be clean wherever the user is: Ctrl-C or Ctrl-D at the idle prompt leaves at
once with a goodbye and exit code 0, never a traceback; Ctrl-C during a streamed reply stops
that reply (stored as cancelled) and the prompt comes back.
"""

import contextlib
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from llm.testing import LlmockServer, llmock_server
from testing.live_server import PROJECT_DIR, LiveDatabase, command_env, live_database

pytestmark = [pytest.mark.e2e, pytest.mark.llmock]

PROMPT = b"you> "
EXIT_TIMEOUT = 15.0
LONG_REPLY = " ".join(f"word{i}" for i in range(200))  # 200 chunks, 40 ms apart: 8 s


@pytest.fixture(scope="module")
def database() -> Iterator[LiveDatabase]:
    with live_database() as db:
        yield db


@pytest.fixture(scope="module")
def model() -> Iterator[LlmockServer]:
    with llmock_server(chunk_delay_ms=40) as llm:
        yield llm


class Terminal:
    """`manage.py chat ada` (the demo user) with a pseudo-terminal for stdin, stdout and stderr."""

    def __init__(self, database: LiveDatabase, model: LlmockServer) -> None:
        self.master, replica = pty.openpty()
        env = command_env(database, llm_base_url=model.base_url, extra_env={"LLM_MAX_RETRIES": "0"})
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "chat", "ada", "--new"],
            cwd=PROJECT_DIR,
            env=env,
            stdin=replica,
            stdout=replica,
            stderr=replica,
            start_new_session=True,
        )
        os.close(replica)
        self.output = b""

    def read_until(self, wanted: bytes, *, after: int = 0, timeout: float = EXIT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while wanted not in self.output[after:]:
            assert time.monotonic() < deadline, f"no {wanted!r} within {timeout} s; the terminal shows:\n{self.text}"
            self._read(0.1)

    def exit_code(self) -> int | None:
        """The exit code once the process ends, reading what it writes meanwhile; None if it hangs."""
        deadline = time.monotonic() + EXIT_TIMEOUT
        while time.monotonic() < deadline:
            self._read(0.1)
            if self.process.poll() is not None:
                self._read(0.1)
                return self.process.returncode
        return None

    def interrupt(self) -> None:
        os.kill(self.process.pid, signal.SIGINT)

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            with contextlib.suppress(OSError):  # the other end is closed: the process has exited
                self.output += os.read(self.master, 65536)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        os.close(self.master)


@pytest.fixture
def terminal(database: LiveDatabase, model: LlmockServer) -> Iterator[Terminal]:
    model.reset()
    term = Terminal(database, model)
    try:
        yield term
    finally:
        term.close()


def test_ctrl_c_at_the_idle_prompt_quits_at_once_with_a_goodbye(terminal: Terminal) -> None:
    terminal.read_until(PROMPT)

    terminal.interrupt()

    assert terminal.exit_code() == 0, f"still running after Ctrl-C; the terminal shows:\n{terminal.text}"
    assert terminal.text.rstrip().endswith("bye")
    assert "Traceback" not in terminal.text
    assert "KeyboardInterrupt" not in terminal.text


def test_ctrl_d_at_the_idle_prompt_quits_with_a_goodbye(terminal: Terminal) -> None:
    terminal.read_until(PROMPT)

    terminal.type(b"\x04")  # the terminal's end of input

    assert terminal.exit_code() == 0, f"still running after Ctrl-D; the terminal shows:\n{terminal.text}"
    assert terminal.text.rstrip().endswith("bye")
    assert "Traceback" not in terminal.text


def test_ctrl_c_during_a_reply_stops_it_and_the_prompt_comes_back(terminal: Terminal, model: LlmockServer) -> None:
    # Given a reply streaming into the terminal
    model.scenario({"type": "reply", "text": LONG_REPLY, "match": {"stream": True}})
    terminal.read_until(PROMPT)
    start = len(terminal.output)
    terminal.type(b"Tell me the whole plan\n")
    terminal.read_until(b"Ada> word0 word1 word2", after=start)

    # When Ctrl-C is pressed
    terminal.interrupt()

    # Then the reply ends as cancelled, short of its end, and the prompt is back, the process alive
    terminal.read_until(b"[cancelled]", after=start)
    terminal.read_until(PROMPT, after=start + terminal.output[start:].index(b"[cancelled]"))
    assert terminal.process.poll() is None
    assert "word199" not in terminal.text
    # and a second Ctrl-C, now at the prompt, quits cleanly
    terminal.interrupt()
    assert terminal.exit_code() == 0
    assert terminal.text.rstrip().endswith("bye")
    assert "Traceback" not in terminal.text
