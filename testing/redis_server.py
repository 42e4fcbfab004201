"""A throwaway Redis server for outage tests: started on a free port, killed by its PID, restarted.

    with redis_server() as redis:
        with live_server(database=database, redis_url=redis.url) as server:
            redis.kill()      # the outage: SIGKILL, as a crashed Redis
            redis.start()     # back on the same port, empty (no persistence)

Needs `redis-server` on PATH (CI installs it; `.ci/run`); `redis_server_binary()` is None
without it, so a test can skip.
"""

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from core.net import free_port, process_stop, wait_for_port

START_TIMEOUT_SECONDS = 10.0


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


class RedisServer:
    """One redis-server process on 127.0.0.1:`port`, without persistence; `kill` and `start` again."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(  # noqa: S603 - redis-server with fixed arguments
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        wait_for_port(self.port, timeout=START_TIMEOUT_SECONDS)

    def kill(self) -> None:
        """SIGKILL, by PID: connections are cut at once, nothing is saved."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=START_TIMEOUT_SECONDS)

    def stop(self) -> None:
        if self.process is not None:
            process_stop(self.process, timeout=START_TIMEOUT_SECONDS)


@contextmanager
def redis_server(*, binary: str | None = None) -> Iterator[RedisServer]:
    found = binary or redis_server_binary()
    if found is None:
        raise RuntimeError("redis-server is not on PATH")
    server = RedisServer(found, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
