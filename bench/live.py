"""What the real-time benchmarks share: a live stack (database, llmock, one server process) and a client.

The server is started by `testing.live_server` exactly as the end-to-end tests start it,
with production-like settings (DEBUG off, so Django does not record every query) and the
per-user limits raised, because one benchmark client plays hundreds of users' turns.
"""

import asyncio
import contextlib
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from llm.testing import LlmockServer, llmock_server
from testing.live_server import LiveServer, ServerKind, live_database, live_server

PASSWORD = "correct-horse-battery-staple-9"
BENCH_ENV = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": "bench-only-" + "x" * 50,
    "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
    "DJANGO_SECURE_SSL_REDIRECT": "false",
    "MESSAGE_RATE_PER_MINUTE": "1000000",
    "LOGIN_THROTTLE_PER_IP": "1000000",
    "REGISTER_THROTTLE_PER_IP": "1000000",
    "REPLIES_CONCURRENT_PER_USER": "1000000",
    "WS_IDLE_TIMEOUT_SECONDS": "3600",
}
FRAME_TIMEOUT = 60.0


@dataclass
class Stack:
    server: LiveServer
    llm: LlmockServer
    kind: ServerKind
    latency_ms: int
    chunk_delay_ms: int


@contextlib.contextmanager
def stack_running(
    *,
    kind: ServerKind,
    latency_ms: int,
    chunk_delay_ms: int,
    reply: str,
    extra_env: dict[str, str] | None = None,
    redis_url: str | None = None,
) -> Iterator[Stack]:
    """A seeded database, llmock answering `reply` to every streamed request, and one server process.

    With `redis_url`, the server uses that Redis (channel layer, cache, broker); its database
    is flushed before and after, so give it one of its own.
    """
    files_limit_raise()
    with (
        redis_flushed(redis_url),
        live_database() as database,
        llmock_server(latency_ms=latency_ms, chunk_delay_ms=chunk_delay_ms) as llm,
        live_server(
            database=database,
            llm_base_url=llm.base_url,
            server=kind,
            redis_url=redis_url,
            extra_env={**BENCH_ENV, **(extra_env or {})},
        ) as server,
    ):
        llm.scenario({"type": "reply", "text": reply, "times": None, "match": {"stream": True}})
        yield Stack(
            server=server,
            llm=llm,
            kind=kind,
            latency_ms=latency_ms,
            chunk_delay_ms=chunk_delay_ms,
        )


@contextlib.contextmanager
def redis_flushed(url: str | None) -> Iterator[None]:
    if not url:
        yield
        return
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield
    finally:
        client.flushdb()
        client.close()


def files_limit_raise() -> None:
    """Hundreds of sockets on each side: lift the soft limit on open files (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def reply_text(words: int) -> str:
    return " ".join(f"w{i}" for i in range(words))


# --- the client -------------------------------------------------------------------------------


@dataclass
class Account:
    username: str
    headers: dict[str, str]


class Api:
    """The REST calls a client makes before it opens a socket."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.http = httpx.AsyncClient(
            base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=50, max_keepalive_connections=50)
        )
        self.avatar_id: int | None = None

    async def aclose(self) -> None:
        await self.http.aclose()

    async def account_create(self, name: str) -> Account:
        username = f"bench-{name}-{uuid.uuid4().hex[:8]}"
        created = await self.http.post("/api/auth/register", json={"username": username, "password": PASSWORD})
        created.raise_for_status()
        token = await self.http.post("/api/auth/token", json={"username": username, "password": PASSWORD})
        token.raise_for_status()
        return Account(username=username, headers={"Authorization": f"Bearer {token.json()['access']}"})

    async def conversation_create(self, account: Account) -> int:
        if self.avatar_id is None:
            avatars = (await self.http.get("/api/avatars", headers=account.headers)).json()
            self.avatar_id = next(a["id"] for a in avatars if a["slug"] == "ada")
        created = await self.http.post(
            "/api/conversations", json={"avatar_id": self.avatar_id}, headers=account.headers
        )
        created.raise_for_status()
        conversation_id: int = created.json()["id"]
        return conversation_id

    async def socket_open(self, account: Account, conversation_id: int) -> ClientConnection:
        answer = await self.http.post(
            "/api/ws-ticket", json={"conversation_id": conversation_id}, headers=account.headers
        )
        answer.raise_for_status()
        url = f"{self.server.ws_url}/ws/conversations/{conversation_id}/?ticket={answer.json()['ticket']}"
        # No per-message compression: the app's frames are small, and it costs CPU on both sides.
        return await connect(url, origin=Origin(self.server.url), compression=None, open_timeout=60)


async def frame_next(ws: ClientConnection) -> dict[str, Any]:
    """The next frame, with `_at`: when this client got it (perf_counter)."""
    async with asyncio.timeout(FRAME_TIMEOUT):
        frame: dict[str, Any] = json.loads(await ws.recv())
    frame["_at"] = now()
    return frame


async def frames_until(ws: ClientConnection, frame_type: str) -> list[dict[str, Any]]:
    frames = [await frame_next(ws)]
    while frames[-1]["type"] != frame_type:
        frames.append(await frame_next(ws))
    return frames


async def gather_limited(coroutines: list[Any], *, limit: int) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(coroutine: Any) -> Any:
        async with gate:
            return await coroutine

    return list(await asyncio.gather(*(one(c) for c in coroutines)))


# --- measuring ---------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(values: list[float]) -> dict[str, float]:
    """p50, p90, p99, max and mean of seconds, in milliseconds."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50) * 1000, 2),
        "p90": round(percentile(values, 90) * 1000, 2),
        "p99": round(percentile(values, 99) * 1000, 2),
        "max": round(max(values) * 1000, 2),
        "mean": round(statistics.fmean(values) * 1000, 2),
    }


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


@dataclass
class RssSampler:
    """The peak resident memory of a process, sampled in the background."""

    pid: int
    interval: float = 0.25
    peak: float = 0.0
    samples: list[float] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["RssSampler"]:
        async def sample() -> None:
            while True:
                value = rss_mb(self.pid)
                self.samples.append(value)
                self.peak = max(self.peak, value)
                await asyncio.sleep(self.interval)

        task = asyncio.ensure_future(sample())
        try:
            yield self
        finally:
            task.cancel()


@dataclass
class CpuTimes:
    """CPU seconds (user + system) a process used between `start` and `stop`, from /proc."""

    pid: int
    started: float = 0.0

    def read(self) -> float:
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        self.started = self.read()

    def used(self) -> float:
        return round(self.read() - self.started, 2)


def machine() -> dict[str, Any]:
    lscpu = shutil.which("lscpu")
    model = ""
    if lscpu:
        out = subprocess.run([lscpu], capture_output=True, text=True, check=False).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")
    load1, load5, _ = os.getloadavg()
    git = shutil.which("git")
    commit = ""
    if git:
        head = subprocess.run([git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
        dirty = subprocess.run([git, "status", "--porcelain"], capture_output=True, text=True, check=False)
        commit = head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    return {
        "commit": commit,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "load_before": [round(load1, 2), round(load5, 2)],
    }


def report_print(name: str, result: dict[str, Any]) -> None:
    print(f"\n== {name}")
    print(json.dumps(result, indent=2))


def report_save(path: str | None, name: str, result: dict[str, Any]) -> None:
    if not path:
        return
    with open(path, "a") as out:
        out.write(json.dumps({"bench": name, **result}) + "\n")


def now() -> float:
    return time.perf_counter()
