"""Real server processes for end-to-end tests and benchmarks.

`live_database()` makes a database the server processes can share: a fresh PostgreSQL
database when `DATABASE_URL` points at PostgreSQL (CI), otherwise a SQLite file; it is
migrated and seeded (`seed_demo`) by subprocesses, exactly as `make run` does. Then
`live_server(...)` starts uvicorn (or daphne) on 127.0.0.1 on a free port against it, and
stops it by its PID. Several servers may share one database and one Redis: that is how the
fan-out across processes is tested.

    with live_database() as database, llmock_server() as llm:
        with live_server(database=database, llm_base_url=llm.base_url) as server:
            httpx.post(server.url + "/api/auth/token", ...)
"""

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from core.net import free_port, process_stop, wait_for_port

PROJECT_DIR = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_SECONDS = 40.0
STOP_TIMEOUT_SECONDS = 10.0
ServerKind = Literal["uvicorn", "daphne"]


@dataclass(frozen=True)
class LiveDatabase:
    url: str


@dataclass(frozen=True)
class LiveServer:
    port: int
    pid: int
    url: str  # http://127.0.0.1:PORT
    ws_url: str  # ws://127.0.0.1:PORT
    log_path: Path

    def log_tail(self, size: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-size:]


def _manage(args: list[str], env: dict[str, str]) -> None:
    subprocess.run(  # noqa: S603 - our own manage.py with fixed arguments
        [sys.executable, "manage.py", *args], cwd=PROJECT_DIR, env=env, check=True, capture_output=True, timeout=300
    )


def _base_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DJANGO_SETTINGS"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "companion.settings",
            "DATABASE_URL": database_url,
            "DJANGO_DEBUG": "true",
            "PYTHONPATH": str(PROJECT_DIR),
            "LOG_LEVEL": "WARNING",
            # No scheduler in a test's server unless the test asks for one (extra_env).
            "SCHEDULER_IN_PROCESS": "false",
        }
    )
    return env


def command_env(
    database: LiveDatabase,
    *,
    llm_base_url: str = "",
    llm_api_key: str = "test-key",
    redis_url: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment for a process of ours (a server, `manage.py`) on `database`; without
    `redis_url`, no Redis: embedded defaults."""
    env = _base_env(database.url)
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    env["LLM_BASE_URL"] = llm_base_url
    env["LLM_API_KEY"] = llm_api_key if llm_base_url else ""
    env.update(extra_env or {})
    return env


@contextmanager
def live_database(*, seed: bool = True) -> Iterator[LiveDatabase]:
    """A migrated (and seeded) database of its own, dropped afterwards."""
    configured = os.environ.get("DATABASE_URL", "")
    if configured.startswith(("postgres://", "postgresql://")):
        yield from _postgres_database(configured, seed=seed)
        return
    with tempfile.TemporaryDirectory(prefix="companion-e2e-") as folder:
        url = f"sqlite:///{folder}/db.sqlite3"
        env = _base_env(url)
        env.pop("REDIS_URL", None)
        _manage(["migrate", "--noinput"], env)
        if seed:
            _manage(["seed_demo"], env)
        yield LiveDatabase(url=url)


def _postgres_database(configured: str, *, seed: bool) -> Iterator[LiveDatabase]:
    import psycopg

    base, _, _ = configured.rpartition("/")
    name = f"companion_e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{base}/{name}"
    try:
        env = _base_env(url)
        env.pop("REDIS_URL", None)
        _manage(["migrate", "--noinput"], env)
        if seed:
            _manage(["seed_demo"], env)
        yield LiveDatabase(url=url)
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def live_server(
    *,
    database: LiveDatabase,
    llm_base_url: str = "",
    llm_api_key: str = "test-key",
    redis_url: str | None = None,
    server: ServerKind = "uvicorn",
    extra_env: dict[str, str] | None = None,
    log_level: str = "warning",
) -> Iterator[LiveServer]:
    """An ASGI server process on 127.0.0.1 serving HTTP and websockets on one free port.

    `log_level` is uvicorn's; at "info" or "debug" its access log is on too, as in production.
    """
    port = free_port()
    env = command_env(
        database, llm_base_url=llm_base_url, llm_api_key=llm_api_key, redis_url=redis_url, extra_env=extra_env
    )
    if server == "uvicorn":
        command = [
            sys.executable, "-m", "uvicorn", "companion.asgi:application",
            "--host", "127.0.0.1", "--port", str(port), "--ws", "websockets-sansio",
            "--ws-max-size", "1048576", "--log-level", log_level,
        ]  # fmt: skip
        if log_level not in {"info", "debug", "trace"}:
            command.append("--no-access-log")
    else:
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "companion.asgi:application"]
    log_file = tempfile.NamedTemporaryFile(prefix=f"companion-{server}-", suffix=".log", delete=False)  # noqa: SIM115
    log_path = Path(log_file.name)
    process = subprocess.Popen(  # noqa: S603 - our own server with fixed arguments
        command, cwd=PROJECT_DIR, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        _wait_started(process, port, log_file)
        url = f"127.0.0.1:{port}"
        yield LiveServer(port=port, pid=process.pid, url=f"http://{url}", ws_url=f"ws://{url}", log_path=log_path)
    finally:
        process_stop(process, timeout=STOP_TIMEOUT_SECONDS)
        log_file.close()


def _wait_started(process: "subprocess.Popen[bytes]", port: int, log: IO[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.flush()
            raise RuntimeError(f"the server exited with {process.returncode}:\n{Path(log.name).read_text()[-4000:]}")
        try:
            wait_for_port(port, timeout=0.5)
            return
        except TimeoutError:
            continue
    raise TimeoutError(f"the server did not listen on {port} within {STARTUP_TIMEOUT_SECONDS}s")
