"""Memory while exporting a large account: GET /api/me/export with 100,000 messages.

    python -m bench.export [--messages 100000] [--conversations 20] [--chars 300] [--whole]

One user gets --conversations conversations holding --messages messages between them
(user and assistant in turn, --chars characters each, plus the fields a real reply has:
route, usage, model). Then the export is requested through the ASGI application, as a
server would run it (`django.test.AsyncClient`: the ASGI handler, the view, the streamed
body read piece by piece and thrown away, as a client writing it to a file would).

Measured while the body streams: the process's resident memory (RSS, read from
/proc/self/statm every 2 ms by a thread), its peak growth over the RSS just before the
request, and the peak of Python allocations (tracemalloc, a second pass: it slows the
run down). --whole also measures the same document built in memory first (what a
non-streamed view would hold), for comparison.

Database: a throwaway SQLite file (or, with DATABASE_URL, a database `bench_export_<pid>`
on that PostgreSQL server), dropped at the end. Figures: docs/performance.md, "Export".
"""

import argparse
import gc
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES


class RssSampler:
    """The peak RSS of this process while the block runs, sampled by a thread."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> "RssSampler":
        self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


@dataclass
class Pass:
    seconds: float
    body_bytes: int
    rss_before: int
    rss_peak: int
    python_peak: int | None = None

    @property
    def rss_growth(self) -> int:
        return self.rss_peak - self.rss_before


def mib(value: int) -> str:
    return f"{value / 1024 / 1024:.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--chars", type=int, default=300, help="characters per message")
    parser.add_argument("--whole", action="store_true", help="also build the whole document in memory, to compare")
    args = parser.parse_args()

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "companion.settings")
    django.setup()
    from django.conf import settings

    settings.DEBUG = False  # no SQL kept per query
    original, directory = database_create()
    try:
        run(args)
    finally:
        from django.db import connection

        connection.creation.destroy_test_db(original, verbosity=0)
        if directory:
            shutil.rmtree(directory, ignore_errors=True)


def database_create() -> tuple[str, str | None]:
    from django.db import connection

    original = connection.settings_dict["NAME"]
    directory: str | None = None
    if connection.vendor == "sqlite":
        directory = tempfile.mkdtemp(prefix="bench-export-")
        name = os.path.join(directory, "bench.sqlite3")
    else:
        name = f"bench_export_{os.getpid()}"
    connection.settings_dict["TEST"]["NAME"] = name
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    return str(original), directory


def account_create(*, messages: int, conversations: int, chars: int) -> Any:
    from django.contrib.auth.models import User

    from accounts.models import Profile
    from avatars.models import Avatar
    from conversations.models import Conversation, Message, Origin, Role

    user = User.objects.create_user(username="bench-sam", password=None)
    Profile.objects.create(user=user, display_name="Sam")
    avatar = Avatar.objects.create(name="Ada", slug="ada", is_public=True)
    chats = Conversation.objects.bulk_create(
        Conversation(user=user, avatar=avatar, title=f"Chat {i}") for i in range(conversations)
    )
    text = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * (chars // 56 + 1))[:chars]
    per_chat = messages // conversations
    for chat in chats:
        Message.objects.bulk_create(
            (
                Message(
                    conversation=chat,
                    role=Role.USER if i % 2 == 0 else Role.ASSISTANT,
                    origin=Origin.USER if i % 2 == 0 else Origin.REPLY,
                    content=text,
                    mode="secretary",
                    route={"mode": "secretary", "score": 91, "matched": "remind me", "switch": False}
                    if i % 2 == 0
                    else None,
                    model="" if i % 2 == 0 else "gpt-4o-mini",
                    prompt_tokens=None if i % 2 == 0 else 1_200,
                    completion_tokens=None if i % 2 == 0 else 80,
                )
                for i in range(per_chat)
            ),
            batch_size=2_000,
        )
    return user


def export_streamed(user: Any) -> Callable[[], int]:
    """One GET /api/me/export through the ASGI handler; returns the body's size, read piece by piece."""
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    from accounts.services import token_pair_create

    headers = {"Authorization": f"Bearer {token_pair_create(user=user).access}"}

    async def request() -> int:
        response: Any = await AsyncClient().get("/api/me/export", headers=headers)
        assert response.status_code == 200, response.status_code
        assert response.is_async
        size = 0
        async for piece in response.streaming_content:
            size += len(piece)
        return size

    return async_to_sync(request)


def export_whole(user: Any) -> Callable[[], int]:
    """The same document joined into one string first, as a view that is not streamed would hold it."""
    from accounts.export import user_export_chunks

    def build() -> int:
        document = "".join(user_export_chunks(user=user)).encode()
        return len(document)

    return build


def measure(call: Callable[[], int], *, python: bool) -> Pass:
    gc.collect()
    if python:
        tracemalloc.start()
    before = rss_bytes()
    started = time.perf_counter()
    with RssSampler() as sampler:
        size = call()
    seconds = time.perf_counter() - started
    python_peak = None
    if python:
        python_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return Pass(seconds=seconds, body_bytes=size, rss_before=before, rss_peak=sampler.peak, python_peak=python_peak)


def run(args: argparse.Namespace) -> None:
    from django.db import connection

    started = time.perf_counter()
    user = account_create(messages=args.messages, conversations=args.conversations, chars=args.chars)
    print(
        f"# {args.messages:,} messages in {args.conversations} conversations, {args.chars} chars each; "
        f"loaded in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    print(
        f"# {datetime.now(UTC).date()}  Python {platform.python_version()}  {connection.vendor}  "
        f"{os.cpu_count()} cores  {platform.machine()}",
        flush=True,
    )
    export_streamed(user)()  # warm-up: imports, the first query plans, the allocator's arenas

    streamed = measure(export_streamed(user), python=False)
    traced = measure(export_streamed(user), python=True)
    rows = [("streamed (ASGI)", streamed, traced.python_peak)]
    if args.whole:
        whole = measure(export_whole(user), python=False)
        whole_traced = measure(export_whole(user), python=True)
        rows.append(("whole document in memory", whole, whole_traced.python_peak))

    print(f"{'how':<26} {'body':>10} {'time':>8} {'RSS before':>11} {'RSS peak growth':>16} {'Python peak':>12}")
    for name, result, python_peak in rows:
        print(
            f"{name:<26} {mib(result.body_bytes):>10} {result.seconds:>7.1f}s {mib(result.rss_before):>11} "
            f"{mib(result.rss_growth):>16} {mib(python_peak or 0):>12}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
