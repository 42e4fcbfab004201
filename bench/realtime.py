"""Real-time benchmarks against llmock on 127.0.0.1: time to first token, load, stop.

    python -m bench.realtime ttft [--server uvicorn|daphne] [--turns 300] [--peer litellm]
    python -m bench.realtime load [--server uvicorn|daphne] [--streams 200] [--idle 1000]
    python -m bench.realtime stop [--server uvicorn|daphne] [--turns 200]
    python -m bench.realtime providers [--turns 300] [--provider anyllm]

Each starts its own stack (`bench.live`): a migrated, seeded database (SQLite, or a fresh
PostgreSQL database when DATABASE_URL names one), llmock with fixed latency settings, and
one server process (uvicorn by default) from `testing.live_server`. The channel layer is
the in-memory one unless `--layer` names a Redis one (`bench/layer_settings.py`); `--env
NAME=VALUE` passes a setting to the server. Figures are printed as JSON (and appended to
`--json FILE`); docs/performance.md has them with their targets.

ttft  Added time to first token. The same turn two ways, interleaved: a websocket client
      through our server to llmock (send `message` -> first `token` frame), and the openai
      SDK straight to llmock with the very request our server sent (create -> first text
      chunk). Added = percentile of the first minus the same percentile of the second.
      Target: at most 5 ms p50 and 20 ms p99 added.
      `--peer litellm`: a neutral comparison. The LiteLLM proxy (`litellm[proxy]`, pinned,
      installed on first use into its own virtualenv `.bench/litellm-venv/`, never the
      project's requirements) runs on 127.0.0.1 on a free port in front of the same llmock,
      with a fixed master key, and is stopped by its PID at the end. Each turn is then
      taken three ways, interleaved in a rotating order: our websocket, the SDK straight
      to llmock, and the SDK through the proxy with the same request body (the model named
      as the proxy knows it, the master key as API key) -> first text chunk. The added
      p50 / p90 / p99 of both, each over the direct call, are in the JSON (`added_ms`,
      `peer.added_ms`) and in the closing lines.
load  `--streams` conversations streaming at once (each runs `--turns-per-stream` turns back
      to back) while `--idle` other sockets stay open and silent on the same process.
      Added inter-token delay: the gaps between token frames at the client minus the gaps
      the SDK sees straight from llmock at the same concurrency. Errors (target: none):
      error frames, missing or repeated `seq`, replies not `complete`, sockets that failed
      or stopped answering a ping. Memory: the server's RSS from /proc.
providers  Time to first token through our providers, in-process, against one llmock (no
      server, no database): `stream()` -> first text delta. Interleaved in a rotating order:
      the OpenAI provider on `/v1` (the baseline), `--provider anyllm` with `openai:MODEL` on the
      same `/v1` (the same wire: what any-llm itself adds), and `anyllm` with
      `anthropic:claude-haiku-4-5` on llmock's Anthropic Messages API (any-llm and Anthropic's
      SDK, a native wire with two more events before the first text). Added = percentile of
      each minus the same percentile of the baseline. Target: at most 2 ms added at p50.
stop  Stop latency: after the third token, send `stop` and time until `reply.end` with
      status `cancelled`. Target: 100 ms p99. llmock's journal must show every stopped
      stream as not completed (the upstream connection was closed).
"""

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import uvloop
from websockets.exceptions import WebSocketException

from bench.live import (
    Account,
    Api,
    CpuTimes,
    RssSampler,
    Stack,
    frame_next,
    frames_until,
    gather_limited,
    machine,
    now,
    percentile,
    reply_text,
    report_print,
    report_save,
    rss_mb,
    stack_running,
    summary_ms,
)
from core.net import free_port, process_stop
from llm.testing import llmock_server
from testing.live_server import PROJECT_DIR, LiveServer

TURNS_PER_CONVERSATION = 5  # then a new one: history (and the prompt) stays the size of a young chat

# --- the peer: the LiteLLM proxy in front of the same llmock ------------------------------------

# Pinned, in a virtualenv of its own (never the project's requirements). 1.82.6 is the last release
# before the March 2026 compromise of litellm's PyPI releases (1.82.7 and 1.82.8 carried a
# credential stealer; later, 1.107.0 was withdrawn for the same reason): do not move the pin
# without checking the release.
LITELLM_REQUIREMENT = "litellm[proxy]==1.82.6"
LITELLM_VENV = PROJECT_DIR / ".bench" / "litellm-venv"
LITELLM_MASTER_KEY = "sk-bench-litellm-master-key"
LITELLM_UPSTREAM_MODEL = "openai/gpt-4o-mini"
LITELLM_STARTUP_TIMEOUT_SECONDS = 180.0


@dataclass(frozen=True)
class Peer:
    name: str
    version: str
    pid: int
    base_url: str  # what an OpenAI client needs: http://127.0.0.1:PORT/v1
    api_key: str
    model: str  # the model name as the peer knows it
    log_path: Path


def litellm_installed() -> Path:
    """The `litellm` command of the benchmark's own virtualenv, created and installed on first use."""
    command = LITELLM_VENV / "bin" / "litellm"
    marker = LITELLM_VENV / ".installed"
    if command.exists() and marker.exists() and marker.read_text().strip() == LITELLM_REQUIREMENT:
        return command
    print(f"installing {LITELLM_REQUIREMENT} into {LITELLM_VENV} (first use)", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(LITELLM_VENV)], check=True)
    pip = [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "install", "--quiet"]
    subprocess.run([*pip, LITELLM_REQUIREMENT], check=True)
    marker.write_text(LITELLM_REQUIREMENT + "\n")
    return command


@contextlib.contextmanager
def litellm_running(upstream_base_url: str) -> Iterator[Peer]:
    """The LiteLLM proxy on 127.0.0.1 on a free port in front of `upstream_base_url`; stopped by its PID."""
    command = litellm_installed()
    port = free_port()
    # Only what the proxy needs: no DATABASE_URL (it would want Prisma), none of our settings or secrets.
    env = {
        "PATH": f"{command.parent}:/usr/bin:/bin",
        "HOME": tempfile.gettempdir(),
        "LITELLM_MASTER_KEY": LITELLM_MASTER_KEY,
        "OPENAI_API_KEY": "bench",  # what the proxy sends upstream; llmock takes any
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the model price list at startup
        "LITELLM_LOG": "ERROR",
    }
    arguments = [
        str(command), "--model", LITELLM_UPSTREAM_MODEL, "--api_base", upstream_base_url,
        "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1", "--telemetry", "False",
    ]  # fmt: skip
    log_file = tempfile.NamedTemporaryFile(prefix="bench-litellm-", suffix=".log", delete=False)  # noqa: SIM115
    log_path = Path(log_file.name)
    process = subprocess.Popen(
        arguments, env=env, cwd=tempfile.gettempdir(), stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        model = _litellm_wait_ready(process, url, log_path)
        yield Peer(
            name="litellm",
            version=LITELLM_REQUIREMENT.split("==")[1],
            pid=process.pid,
            base_url=f"{url}/v1",
            api_key=LITELLM_MASTER_KEY,
            model=model,
            log_path=log_path,
        )
    finally:
        process_stop(process, timeout=10)
        log_file.close()


def _litellm_wait_ready(process: "subprocess.Popen[bytes]", url: str, log_path: Path) -> str:
    """Wait until the proxy answers its model list (with the master key); the first model's name."""
    deadline = time.monotonic() + LITELLM_STARTUP_TIMEOUT_SECONDS
    headers = {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"}
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"litellm exited with {process.returncode} at startup:\n{tail}")
        try:
            answer = httpx.get(f"{url}/v1/models", headers=headers, timeout=2)
            if answer.status_code == 200:
                return str(answer.json()["data"][0]["id"])
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    tail = log_path.read_text(errors="replace")[-4000:]
    raise TimeoutError(f"litellm did not answer within {LITELLM_STARTUP_TIMEOUT_SECONDS:g}s:\n{tail}")


def added_ms(ours: dict[str, float], direct: dict[str, float]) -> dict[str, float]:
    return {key: round(ours[key] - direct[key], 2) for key in ("p50", "p90", "p99") if key in ours and key in direct}


def direct_client(stack: Stack, connections: int) -> openai.AsyncOpenAI:
    return sdk_client(stack.llm.base_url, "bench", connections)


def sdk_client(base_url: str, api_key: str, connections: int) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(
        timeout=60, limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    )
    # The SDK takes a plain httpx client at run time; only its annotation names httpx2 (as in llm.providers.openai).
    return openai.AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        max_retries=0,
        http_client=http,  # type: ignore[arg-type]
    )


async def direct_stream(client: openai.AsyncOpenAI, body: dict[str, Any]) -> tuple[float, list[float]]:
    """One streamed completion straight to llmock: (time to first text, arrival times of text chunks)."""
    started = now()
    stream = await client.chat.completions.create(**body)
    arrivals: list[float] = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(now())
    return arrivals[0] - started, arrivals


def request_body(stack: Stack) -> dict[str, Any]:
    """The last chat request our server sent to llmock, to send the same one straight."""
    body = dict(next(r for r in reversed(stack.llm.requests()) if r["stream"])["body"])
    body["stream"] = True
    return body


class Chat:
    """A user's conversation over one socket, renewed every few turns."""

    def __init__(self, api: Api, account: Account) -> None:
        self.api, self.account = api, account
        self.ws: Any = None
        self.turns = 0

    async def ready(self) -> None:
        if self.ws is None or self.turns >= TURNS_PER_CONVERSATION:
            await self.close()
            conversation_id = await self.api.conversation_create(self.account)
            self.ws = await self.api.socket_open(self.account, conversation_id)
            self.turns = 0

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None

    async def send(self, content: str = "hi") -> float:
        await self.ready()
        self.turns += 1
        started = now()
        await self.ws.send(f'{{"type":"message","content":"{content}"}}')
        return started


# --- ttft ------------------------------------------------------------------------------------


async def ttft_run(stack: Stack, *, turns: int, warmup: int, peer: Peer | None = None) -> dict[str, Any]:
    api = Api(stack.server)
    account = await api.account_create("ttft")
    chat = Chat(api, account)
    client = direct_client(stack, 4)
    peer_client = sdk_client(peer.base_url, peer.api_key, 4) if peer is not None else None

    phases: dict[str, list[float]] = {"message.created": [], "reply.start": [], "token": []}

    async def ours() -> float:
        started = await chat.send()
        frames = [await frame_next(chat.ws)]
        while frames[-1]["type"] != "token":
            frames.append(await frame_next(chat.ws))
        first = now() - started
        previous = started
        for frame in frames:
            if frame["type"] in phases:
                phases[frame["type"]].append(frame["_at"] - previous)
                previous = frame["_at"]
        await frames_until(chat.ws, "reply.end")
        return first

    for _ in range(warmup):
        await ours()
    for values in phases.values():
        values.clear()
    body = request_body(stack)
    # The peer gets the very same body, with the model named as the peer knows it.
    peer_body = {**body, "model": peer.model} if peer is not None else body
    for _ in range(warmup):
        await direct_stream(client, body)
        if peer_client is not None:
            await direct_stream(peer_client, peer_body)

    async def direct() -> float:
        return (await direct_stream(client, body))[0]

    async def peered() -> float:
        assert peer_client is not None
        return (await direct_stream(peer_client, peer_body))[0]

    ways = {"ours": ours, "direct": direct} | ({"peer": peered} if peer_client is not None else {})
    taken: dict[str, list[float]] = {name: [] for name in ways}
    order = list(ways)
    cpu = CpuTimes(stack.server.pid)
    cpu.start()
    for i in range(turns):
        # Interleaved, rotating who goes first: every way sees the same machine at the same time.
        for name in order[i % len(order) :] + order[: i % len(order)]:
            taken[name].append(await ways[name]())
    server_cpu = cpu.used()
    await chat.close()
    await client.close()
    if peer_client is not None:
        await peer_client.close()
    await api.aclose()

    ours_s, direct_s = taken["ours"], taken["direct"]
    ours_ms, direct_ms = summary_ms(ours_s), summary_ms(direct_s)
    added = added_ms(ours_ms, direct_ms)
    result: dict[str, Any] = {
        "server": stack.kind,
        "settings": {"latency_ms": stack.latency_ms, "chunk_delay_ms": stack.chunk_delay_ms, "turns": turns},
        "ttft_ours_ms": ours_ms,
        "ttft_direct_ms": direct_ms,
        "added_ms": added,
        "added_paired_ms": paired_ms(ours_s, direct_s),
        # Where our time goes, as the client sees it: send -> message.created (validate, store,
        # route, build the prompt) -> reply.start -> first token (the model's answer).
        "ours_phases_p50_ms": {k: round(percentile(v, 50) * 1000, 2) for k, v in phases.items()},
        "server_cpu_ms_per_turn": round(server_cpu * 1000 / turns, 2),
        "target": "added p50 <= 5 ms and p99 <= 20 ms",
        "met": added.get("p50", 1e9) <= 5 and added.get("p99", 1e9) <= 20,
    }
    if peer is not None:
        peer_ms = summary_ms(taken["peer"])
        result["peer"] = {
            "name": peer.name,
            "version": peer.version,
            "model": peer.model,
            "ttft_ms": peer_ms,
            "added_ms": added_ms(peer_ms, direct_ms),
            "added_paired_ms": paired_ms(taken["peer"], direct_s),
        }
    return result


def paired_ms(ours: list[float], direct: list[float]) -> dict[str, float]:
    """Percentiles of the per-turn differences (each turn's way minus the direct call beside it)."""
    paired = [a - b for a, b in zip(ours, direct, strict=True)]
    return {p: round(percentile(paired, int(p[1:])) * 1000, 2) for p in ("p50", "p99")}


def ttft_summary(result: dict[str, Any]) -> str:
    """The added time to first token of each way over the direct call, one line each."""

    def line(name: str, added: dict[str, float]) -> str:
        return f"  {name:<16} " + " / ".join(f"{added.get(p, float('nan')):.2f}" for p in ("p50", "p90", "p99"))

    lines = ["added to first token over the SDK straight to llmock, p50 / p90 / p99 ms:"]
    lines.append(line("companion", result["added_ms"]))
    if "peer" in result:
        lines.append(line(f"{result['peer']['name']} {result['peer']['version']}", result["peer"]["added_ms"]))
    return "\n".join(lines)


# --- load ------------------------------------------------------------------------------------


def gaps(arrivals: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(arrivals)]


async def load_direct(stack: Stack, body: dict[str, Any], *, streams: int, turns: int) -> dict[str, Any]:
    client = direct_client(stack, streams + 10)
    first: list[float] = []
    between: list[float] = []
    errors: Counter[str] = Counter()

    async def one() -> None:
        for _ in range(turns):
            try:
                ttft, arrivals = await direct_stream(client, body)
            except openai.OpenAIError as exc:
                errors[type(exc).__name__] += 1
                continue
            first.append(ttft)
            between.extend(gaps(arrivals))

    await asyncio.gather(*(one() for _ in range(streams)))
    await client.close()
    return {"ttft_ms": summary_ms(first), "inter_token_ms": summary_ms(between), "errors": dict(errors)}


async def load_run(stack: Stack, *, streams: int, idle: int, turns: int, words: int, users: int) -> dict[str, Any]:
    api = Api(stack.server)
    accounts = await gather_limited([api.account_create(f"load{i}") for i in range(users)], limit=4)
    memory: dict[str, float] = {"server_start": rss_mb(stack.server.pid)}

    # Warm up (imports, connections, the provider's pool), then learn the request for the baseline.
    warm = Chat(api, accounts[0])
    await warm.send()
    await frames_until(warm.ws, "reply.end")
    await warm.close()
    body = request_body(stack)

    baseline = await load_direct(stack, body, streams=streams, turns=turns)

    # The idle sockets: one per conversation, spread over the users.
    idle_conversations = await gather_limited(
        [api.conversation_create(accounts[i % users]) for i in range(idle)], limit=20
    )
    memory["before_idle_sockets"] = rss_mb(stack.server.pid)
    opened = await gather_limited(
        [api.socket_open(accounts[i % users], c) for i, c in enumerate(idle_conversations)], limit=50
    )
    memory["with_idle_sockets"] = rss_mb(stack.server.pid)

    errors: Counter[str] = Counter()
    first: list[float] = []
    between: list[float] = []
    chats = [Chat(api, accounts[i % users]) for i in range(streams)]
    await gather_limited([c.ready() for c in chats], limit=50)

    async def converse(chat: Chat) -> None:
        for _ in range(turns):
            try:
                started = await chat.send()
                frames = await frames_until(chat.ws, "reply.end")
            except (TimeoutError, WebSocketException) as exc:
                errors[type(exc).__name__] += 1
                return
            arrivals: list[float] = []
            seqs: list[int] = []
            for frame in frames:
                if frame["type"] == "token":
                    seqs.append(frame["seq"])
                    arrivals.append(frame["_at"])
                elif frame["type"] == "error":
                    errors["error:" + frame["code"]] += 1
            if seqs != list(range(words)):
                errors["seq_gap_or_repeat"] += 1
            if frames[-1]["status"] != "complete":
                errors["reply_" + frames[-1]["status"]] += 1
            if arrivals:
                first.append(arrivals[0] - started)
                between.extend(gaps(arrivals))

    cpu = CpuTimes(stack.server.pid)
    sampler = RssSampler(stack.server.pid)
    cpu.start()
    async with sampler.running():
        started = now()
        await asyncio.gather(*(converse(c) for c in chats))
        elapsed = now() - started
    server_cpu = cpu.used()
    memory["peak_while_streaming"] = sampler.peak
    memory["after"] = rss_mb(stack.server.pid)

    # Every idle socket must still be there and answer.
    async def alive(ws: Any) -> bool:
        try:
            await ws.send('{"type":"ping"}')
            return (await frame_next(ws))["type"] == "pong"
        except (TimeoutError, WebSocketException):
            return False

    answered = await gather_limited([alive(ws) for ws in opened], limit=100)
    errors["idle_socket_lost"] += answered.count(False)
    await gather_limited([ws.close() for ws in opened], limit=100)
    await gather_limited([c.close() for c in chats], limit=100)
    await api.aclose()
    errors = +errors  # drop zero counts

    ours = {"ttft_ms": summary_ms(first), "inter_token_ms": summary_ms(between)}
    tokens = len(between) + len(first)
    return {
        "server": stack.kind,
        "settings": {
            "latency_ms": stack.latency_ms,
            "chunk_delay_ms": stack.chunk_delay_ms,
            "streams": streams,
            "idle_sockets": idle,
            "turns_per_stream": turns,
            "tokens_per_reply": words,
            "users": users,
        },
        "ours": ours,
        "direct": baseline,
        "added_inter_token_ms": added_ms(ours["inter_token_ms"], baseline["inter_token_ms"]),
        "added_ttft_ms": added_ms(ours["ttft_ms"], baseline["ttft_ms"]),
        "tokens_per_second": round(tokens / elapsed),
        "server_cpu_seconds": server_cpu,
        "wall_seconds": round(elapsed, 2),
        "errors": dict(errors),
        "memory_mb": memory,
        "memory_per_idle_socket_kb": round(
            (memory["with_idle_sockets"] - memory["before_idle_sockets"]) * 1024 / max(idle, 1), 1
        ),
        "target": "errors: none",
        "met": not errors,
    }


# --- stop ------------------------------------------------------------------------------------


async def _busy_chat(other: Chat, finished: asyncio.Event) -> int:
    """Another conversation streaming turn after turn, so stops are timed on a busy server.

    Started at random moments, with a pause between turns like a person reading, so the
    background turns do not all start and end together.
    """
    await asyncio.sleep(random.uniform(0, 4))
    turns = 0
    while not finished.is_set():
        await other.send()
        await frames_until(other.ws, "reply.end")
        turns += 1
        await asyncio.sleep(random.uniform(0.5, 3))
    return turns


async def _background_chats(server: LiveServer, streams: int, ready: Any, finished: Any) -> int:
    api = Api(server)
    account = await api.account_create("busy")
    others = [Chat(api, account) for _ in range(streams)]
    await gather_limited([o.ready() for o in others], limit=20)
    done = asyncio.Event()
    tasks = [asyncio.ensure_future(_busy_chat(o, done)) for o in others]
    ready.set()
    await asyncio.to_thread(finished.wait)
    done.set()
    turns = sum(await asyncio.gather(*tasks))
    await gather_limited([o.close() for o in others], limit=20)
    await api.aclose()
    return turns


def _background_main(server: LiveServer, streams: int, ready: Any, finished: Any, report: Any) -> None:
    report.put(uvloop.run(_background_chats(server, streams, ready, finished)))


async def stop_run(stack: Stack, *, turns: int, warmup: int, after_tokens: int, background: int) -> dict[str, Any]:
    """Stops timed by a client that reads only its own socket.

    The background conversations run in a process of their own: read in this one, their
    thousands of frames a second would queue ahead of our `reply.end` in this client's event
    loop, and the figure would be the benchmark's backlog rather than the server's.
    """
    api = Api(stack.server)
    account = await api.account_create("stop")
    chat = Chat(api, account)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()

    async def one() -> float:
        await chat.send()
        seen = 0
        while seen < after_tokens:
            seen += (await frame_next(chat.ws))["type"] == "token"
        started = now()
        await chat.ws.send('{"type":"stop"}')
        end = (await frames_until(chat.ws, "reply.end"))[-1]
        statuses[end["status"]] += 1
        return now() - started

    for _ in range(warmup):
        await one()
    journal_before = {r["seq"] for r in stack.llm.requests()}
    spawn = multiprocessing.get_context("spawn")
    ready, finished, report = spawn.Event(), spawn.Event(), spawn.Queue()
    busy = spawn.Process(target=_background_main, args=(stack.server, background, ready, finished, report))
    if background:
        busy.start()
        await asyncio.to_thread(ready.wait, 120)
        await asyncio.sleep(4.0)  # let the background replies get going
    statuses.clear()
    for _ in range(turns):
        latencies.append(await one())
    background_turns = 0
    if background:
        finished.set()
        background_turns = await asyncio.to_thread(report.get, True, 120)
        await asyncio.to_thread(busy.join, 30)
    await chat.close()
    await api.aclose()
    # Our stopped streams are those that were cut short; background replies run to the end.
    journal = [r for r in stack.llm.requests() if r["stream"] and r["seq"] not in journal_before]
    stopped_upstream = sum(1 for r in journal if not r["completed"])
    result_ms = summary_ms(latencies)
    return {
        "server": stack.kind,
        "settings": {
            "latency_ms": stack.latency_ms,
            "chunk_delay_ms": stack.chunk_delay_ms,
            "turns": turns,
            "stop_after_tokens": after_tokens,
            "background_streams": background,
        },
        "background_turns": background_turns,
        "stop_to_reply_end_ms": result_ms,
        "statuses": dict(statuses),
        "upstream_closed": f"{stopped_upstream} of {turns} stopped streams",
        "target": "p99 <= 100 ms",
        "met": result_ms["p99"] <= 100 and statuses == Counter({"cancelled": turns}) and stopped_upstream == turns,
    }


# --- providers: ttft through each provider, in-process ----------------------------------------------


async def providers_run(*, llm_url: str, turns: int, warmup: int) -> dict[str, Any]:
    from llm.base import ChatMessage, TextDelta
    from llm.providers.anyllm import AnyLLMProvider
    from llm.providers.openai import OpenAICompatibleProvider

    key = "sk-bench-0123456789"
    ways: dict[str, Any] = {
        "openai": OpenAICompatibleProvider(base_url=f"{llm_url}/v1", api_key=key, model="gpt-4o-mini"),
        "anyllm-openai": AnyLLMProvider(base_url=f"{llm_url}/v1", api_key=key, model="openai:gpt-4o-mini"),
        "anyllm-anthropic": AnyLLMProvider(
            base_url=f"{llm_url}/anthropic", api_key=key, model="anthropic:claude-haiku-4-5"
        ),
    }
    prompt = [
        ChatMessage(role="system", content="You are Ada, a warm and concise companion."),
        ChatMessage(role="user", content="Good morning! What should I do first today?"),
    ]

    async def first_token(provider: Any) -> float:
        started = time.perf_counter()
        stream = provider.stream(prompt)
        try:
            async for event in stream:
                if isinstance(event, TextDelta):
                    return time.perf_counter() - started
        finally:
            await stream.aclose()
        raise RuntimeError("no text")

    for _ in range(warmup):
        for provider in ways.values():
            await first_token(provider)
    taken: dict[str, list[float]] = {name: [] for name in ways}
    names = list(ways)
    for turn in range(turns):
        shift = turn % len(names)
        for name in names[shift:] + names[:shift]:
            taken[name].append(await first_token(ways[name]))
    for provider in ways.values():
        await provider.aclose()
    base = summary_ms(taken["openai"])
    return {
        "turns": turns,
        "ttft_ms": {name: summary_ms(values) for name, values in taken.items()},
        "added_ms": {name: added_ms(summary_ms(values), base) for name, values in taken.items() if name != "openai"},
    }


def providers_main(args: argparse.Namespace) -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "companion.settings")
    django.setup()
    from any_llm import __version__ as any_llm_version

    info = machine()
    with llmock_server(latency_ms=args.latency_ms, chunk_delay_ms=args.chunk_delay_ms) as llm:
        result = uvloop.run(providers_run(llm_url=llm.url, turns=args.turns, warmup=args.warmup))
    result["any_llm_version"] = any_llm_version
    result["machine"] = info
    report_print("providers", result)
    for name, added in result["added_ms"].items():
        print(
            f"{name:18s} added over the OpenAI provider: "
            f"p50 {added['p50']} ms, p90 {added['p90']} ms, p99 {added['p99']} ms"
        )
    report_save(args.json, "providers", result)


# --- command line ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="append the result as one JSON line to this file")
    parser.add_argument(
        "--layer",
        choices=["in-memory", "redis", "redis-pubsub", "redis-tuned"],
        default="in-memory",
        help="the server's channel layer: in-memory (no REDIS_URL, the embedded default), redis (REDIS_URL with "
        "the project's settings), redis-pubsub or redis-tuned (see bench/layer_settings.py)",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        default="redis://127.0.0.1:6379/7",
        help="the Redis for the redis layers; its database is flushed before and after (default: %(default)s)",
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="a setting for the server (repeatable)"
    )
    commands = parser.add_subparsers(dest="bench", required=True)

    def command(name: str, latency: int, chunk: int) -> argparse.ArgumentParser:
        sub = commands.add_parser(name)
        sub.add_argument("--server", choices=["uvicorn", "daphne"], default="uvicorn")
        sub.add_argument("--latency-ms", type=int, default=latency, help="llmock: wait before answering")
        sub.add_argument("--chunk-delay-ms", type=int, default=chunk, help="llmock: wait between chunks")
        return sub

    ttft = command("ttft", 20, 5)
    ttft.add_argument("--turns", type=int, default=300)
    ttft.add_argument("--warmup", type=int, default=20)
    ttft.add_argument("--words", type=int, default=5)
    ttft.add_argument(
        "--peer",
        choices=["litellm"],
        help="also time the same request through this proxy in front of the same llmock (installed on first use "
        f"into {LITELLM_VENV.relative_to(PROJECT_DIR)}/)",
    )
    load = command("load", 20, 50)
    load.add_argument("--streams", type=int, default=200)
    load.add_argument("--idle", type=int, default=1000)
    load.add_argument("--turns-per-stream", type=int, default=3)
    load.add_argument("--words", type=int, default=40)
    load.add_argument("--users", type=int, default=10)
    stop = command("stop", 20, 20)
    stop.add_argument("--turns", type=int, default=200)
    stop.add_argument("--warmup", type=int, default=10)
    stop.add_argument("--after-tokens", type=int, default=3)
    stop.add_argument("--background", type=int, default=0, help="other conversations streaming meanwhile")
    providers = command("providers", 20, 5)
    providers.add_argument("--turns", type=int, default=300)
    providers.add_argument("--warmup", type=int, default=20)
    providers.add_argument("--provider", choices=["anyllm"], default="anyllm", help="compared with the OpenAI provider")
    args = parser.parse_args()
    if args.bench == "providers":
        providers_main(args)
        return

    words = args.words if args.bench in {"ttft", "load"} else 400
    extra_env = dict(pair.split("=", 1) for pair in args.env)
    if args.layer in {"redis-pubsub", "redis-tuned"}:
        extra_env |= {"DJANGO_SETTINGS_MODULE": "bench.layer_settings", "BENCH_CHANNEL_LAYER": args.layer}
    info = machine()
    with stack_running(
        kind=args.server,
        latency_ms=args.latency_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        reply=reply_text(words),
        extra_env=extra_env,
        redis_url=args.redis if args.layer != "in-memory" else None,
    ) as stack:
        if args.bench == "ttft":
            with contextlib.ExitStack() as peers:
                peer = peers.enter_context(litellm_running(stack.llm.base_url)) if args.peer == "litellm" else None
                result = uvloop.run(ttft_run(stack, turns=args.turns, warmup=args.warmup, peer=peer))
        elif args.bench == "load":
            result = uvloop.run(
                load_run(
                    stack,
                    streams=args.streams,
                    idle=args.idle,
                    turns=args.turns_per_stream,
                    words=args.words,
                    users=args.users,
                )
            )
        else:
            result = uvloop.run(
                stop_run(
                    stack,
                    turns=args.turns,
                    warmup=args.warmup,
                    after_tokens=args.after_tokens,
                    background=args.background,
                )
            )
    result["channel_layer"] = args.layer
    result["database"] = "postgresql" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
    result["machine"] = info
    result["server_env"] = args.env
    report_print(args.bench, result)
    if args.bench == "ttft":
        print(ttft_summary(result))
    report_save(args.json, args.bench, result)


if __name__ == "__main__":
    main()
