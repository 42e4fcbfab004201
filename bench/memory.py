"""Prompt size and turn time as a conversation's history grows from 10 to 10,000 messages.

    python -m bench.memory [--sizes 10,100,1000,10000] [--turns 200] [--warmup 3] [--seed 7]

For each size a new conversation (the demo avatar Ada, one user) gets that many stored
messages: user and assistant in turn, 15 to 60 words each. Then the memory is brought to
where the background task leaves it: `summary_update` runs, with a fake summary model that
writes 90% of SUMMARY_MAX_TOKENS, until no summary is due, and the user has
MEMORY_MAX_FACTS remembered facts (a quarter of them pinned). Then --turns real turns run
through the turn's door (`conversations.turns.turn_start`) with `llm.fake.FakeProvider` (no network), after
--warmup turns that are not counted; the sizes take turns, one turn each in a round, so
a busy moment on a shared machine falls on every size alike.

Per turn: the prompt tokens the provider was sent (the assistant message's `prompt_tokens`,
which FakeProvider counts from the built context), the history messages in the prompt,
and the turn's wall and CPU time (CPU time leaves out the slices other processes take on a
shared machine). After each turn the in-process memory work it queued (fact extraction, a
summary when due) runs to the end before the next turn starts, untimed, as a worker that
keeps up would leave it. Queries per turn are counted on one more turn.

Database: a throwaway one, dropped at the end. SQLite (a temporary file) by default; with
DATABASE_URL, a database `bench_memory_<pid>` on that PostgreSQL server. The bulk load is
followed by ANALYZE, as autovacuum would. Memory tasks run in process whatever REDIS_URL
says. Figures: docs/memory.md, "Benchmark".
"""

import argparse
import logging
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import django
from asgiref.sync import async_to_sync
from django.apps import apps

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "companion.settings")
# The registry imports this module again, by name, for BenchMemoryModel: set up (and configure logging) once.
if not apps.ready:
    django.setup()

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Profile
from avatars.demo import demo_seed
from avatars.models import Avatar
from companion.celery import app as celery_app
from conversations.context import ContextBudget
from conversations.models import Conversation, Message, Role
from conversations.services import conversation_create
from conversations.turns import TurnResult, turn_start
from core import background
from llm.base import ChatMessage, Completion, CompletionParams
from llm.fake import FakeProvider
from llm.registry import provider_reset
from llm.tokens import count_tokens
from memory.config import MemorySettings
from memory.models import Memory, Summary
from memory.selectors import summary_is_due
from memory.services import summary_update

VOCABULARY = (
    "the a and to of in that it with for on was you I my we our about just really think know today "
    "yesterday tomorrow work meeting sister brother friend coffee weekend trip plan call email project "
    "deadline dinner morning evening walk book film music train late early tired happy busy quiet "
    "remember maybe still again always never little much more time week month garden kitchen rain sun"
)
WORDS = VOCABULARY.split(" ")
TURN_MESSAGES = (
    "Can you help me plan tomorrow? I have the dentist at 9:40 and a call at eleven.",
    "I started a new job at the bakery last week, early shifts.",
    "What do you think I should cook tonight?",
    "ok thanks!",
    "My sister Ana's birthday is 3 May, remind me a week before.",
    "Tell me something calming, it was a long day.",
)
REPLY = (
    "Here is a plan: dentist at 9:40, leave at 9:10, and block 10:30 to 11:00 to prepare for the call. "
    "I will nudge you at 8:50. Anything else you want on tomorrow's list?"
)


class BenchMemoryModel(FakeProvider):
    """What the memory tasks call: summaries of 90% of the allowed tokens, and no new facts."""

    async def complete(self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None) -> Completion:
        self.calls.append(list(messages))
        prompt = messages[-1].content
        if "<new_messages>" in prompt:
            limit = params.max_tokens if params and params.max_tokens else 600
            text = summary_text(int(limit * 0.9))
        else:
            text = "[]"
        return Completion(text=text, finish_reason="stop", usage=self._usage(messages), model="bench-memory")


def summary_text(tokens: int) -> str:
    sentence = (
        "Sam told Ada about the new job at the bakery, the early shifts, the dentist on Thursday and the plan "
        "to visit Ana in Porto, and they agreed on a calmer evening routine. "
    )
    text = ""
    while count_tokens(text + sentence) <= tokens:
        text += sentence
    return text.strip()


def database_create() -> tuple[str, str | None]:
    """A throwaway database for this run; returns the original name and a temporary directory to remove."""
    original = connection.settings_dict["NAME"]
    directory: str | None = None
    if connection.vendor == "sqlite":
        directory = tempfile.mkdtemp(prefix="bench-memory-")
        name = os.path.join(directory, "bench.sqlite3")
    else:
        name = f"bench_memory_{os.getpid()}"
    connection.settings_dict["TEST"]["NAME"] = name
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    return str(original), directory


def people_create(rng: random.Random) -> tuple[User, Avatar]:
    demo_seed(with_logins=False)
    avatar = Avatar.objects.get(name="Ada")
    user = User.objects.create_user(username="bench-sam", password=None)
    Profile.objects.update_or_create(user=user, defaults={"display_name": "Sam"})
    facts_max = MemorySettings.from_django_settings().facts_max
    Memory.objects.bulk_create(
        Memory(
            user=user,
            avatar=avatar,
            key=f"fact_{i}",
            text=f"Sam {' '.join(rng.choices(WORDS, k=rng.randint(6, 14)))} (fact {i}).",
            pinned=i % 4 == 0,
        )
        for i in range(facts_max)
    )
    return user, avatar


def conversation_fill(conversation: Conversation, size: int, rng: random.Random) -> None:
    Message.objects.bulk_create(
        (
            Message(
                conversation=conversation,
                role=Role.USER if i % 2 == 0 else Role.ASSISTANT,
                content=" ".join(rng.choices(WORDS, k=rng.randint(15, 60))).capitalize() + ".",
                mode=conversation.mode,
            )
            for i in range(size)
        ),
        batch_size=1000,
    )
    # Fresh planner statistics, as autovacuum keeps them on a live database: right after a bulk
    # load PostgreSQL still thinks the table is nearly empty and plans bitmap scans of a whole conversation.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE conversations_message")


def memory_catch_up(conversation: Conversation) -> int:
    """Summarise as the background task would until nothing is due; returns how many runs it took."""
    runs = 0
    model = BenchMemoryModel()
    while summary_is_due(conversation_id=conversation.pk):
        if summary_update(conversation_id=conversation.pk, provider=model) is None:
            break
        runs += 1
    return runs


async def _turn_complete(conversation: Conversation, content: str, provider: FakeProvider) -> TurnResult:
    running = await turn_start(
        user_id=conversation.user_id, conversation_id=conversation.pk, message={"content": content}, provider=provider
    )
    return await running.result()


def turn(conversation: Conversation, content: str, provider: FakeProvider) -> tuple[float, float, int, int]:
    """One turn and then its memory work; returns the turn's wall and CPU ms, prompt tokens, history messages."""
    cpu_started = time.process_time()
    started = time.perf_counter()
    result = async_to_sync(_turn_complete)(conversation, content, provider)
    elapsed = (time.perf_counter() - started) * 1000
    cpu = (time.process_time() - cpu_started) * 1000
    if not background.in_process_tasks_wait(timeout=120):
        sys.exit("the in-process memory work did not finish within 120 s")
    assert result.assistant_message is not None
    prompt = provider.calls[-1]
    history = sum(1 for message in prompt[:-1] if message.role in ("user", "assistant"))
    return elapsed, cpu, int(result.assistant_message["usage"]["prompt_tokens"]), history


@dataclass
class SizeRun:
    """One conversation of a given size, and what its timed turns measured."""

    size: int
    conversation: Conversation
    provider: FakeProvider
    summary_runs: int
    covered: int
    turn_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    history: list[int] = field(default_factory=list)
    queries: int = 0

    def percentile(self, share: float, *, cpu: bool = False) -> float:
        values = sorted(self.cpu_ms if cpu else self.turn_ms)
        return values[min(len(values) - 1, round(share * (len(values) - 1)))]


def size_prepare(user: User, avatar: Avatar, size: int, *, warmup: int, rng: random.Random) -> SizeRun:
    conversation = conversation_create(user=user, avatar_id=avatar.pk)
    conversation_fill(conversation, size, rng)
    runs = memory_catch_up(conversation)
    covered_until = Summary.objects.filter(conversation=conversation).values_list("covers_until_id", flat=True).first()
    covered = Message.objects.filter(conversation=conversation, pk__lte=covered_until or 0).count()
    run = SizeRun(size, conversation, FakeProvider(reply=REPLY, chunks=8), runs, covered)
    for i in range(warmup):
        turn(conversation, TURN_MESSAGES[i % len(TURN_MESSAGES)], run.provider)
    return run


def timed_turn(run: SizeRun, number: int) -> None:
    elapsed, cpu, prompt_tokens, history = turn(
        run.conversation, TURN_MESSAGES[number % len(TURN_MESSAGES)], run.provider
    )
    run.turn_ms.append(elapsed)
    run.cpu_ms.append(cpu)
    run.prompt_tokens.append(prompt_tokens)
    run.history.append(history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,100,1000,10000", help="stored messages before the timed turns")
    parser.add_argument("--turns", type=int, default=200, help="timed turns per size")
    parser.add_argument("--warmup", type=int, default=3, help="untimed turns per size before them")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    sizes = [int(size.replace("_", "")) for size in args.sizes.split(",")]

    # Memory work in process with the bench's summary model; no per-minute limit on one user's turns;
    # the memory log's INFO lines ("summary stored") would bury the table.
    logging.getLogger("companion").setLevel(logging.WARNING)
    celery_app.conf.task_always_eager = True
    settings.LLM_PROVIDER = "bench.memory.BenchMemoryModel"
    provider_reset()
    settings.MESSAGE_RATE_PER_MINUTE = 1_000_000
    settings.DEBUG = False  # as in production: no SQL kept per query (the query count below asks for it)

    original, directory = database_create()
    try:
        rng = random.Random(args.seed)
        user, avatar = people_create(rng)
        budget = ContextBudget.from_django_settings()
        memory = MemorySettings.from_django_settings()
        print(
            f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"Django {django.get_version()}, {connection.vendor}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        )
        print(
            f"budget: CONTEXT_MAX_TOKENS={budget.max_tokens} CONTEXT_MAX_PAIRS={budget.max_pairs}; "
            f"SUMMARY_KEEP_RECENT={memory.keep_recent} SUMMARY_TRIGGER_MESSAGES={memory.trigger_messages} "
            f"SUMMARY_MAX_TOKENS={memory.summary_max_tokens} MEMORY_MAX_FACTS={memory.facts_max}; "
            f"{args.turns} timed turns per size after {args.warmup} warm-up"
        )
        header = (
            f"{'messages':>8} | {'summary runs':>12} | {'covered':>7} | {'history in prompt':>17} | "
            f"{'prompt tokens':>13} | {'queries':>7} | {'turn p50':>8} | {'turn p99':>8} | {'max':>8} | "
            f"{'cpu p50':>8} | {'cpu p99':>8}"
        )
        print(header)
        print("-" * len(header))
        runs = [size_prepare(user, avatar, size, warmup=args.warmup, rng=rng) for size in sizes]
        # Round-robin, one turn per size at a time: a busy moment on a shared machine hits every size alike.
        for number in range(args.turns):
            for run in runs:
                timed_turn(run, number)
        for run in runs:
            with CaptureQueriesContext(connection) as queries:
                turn(run.conversation, TURN_MESSAGES[0], run.provider)
            run.queries = len(queries)
            print(
                f"{run.size:>8,} | {run.summary_runs:>12} | {run.covered:>7,} | "
                f"{f'{min(run.history)}-{max(run.history)}':>17} | "
                f"{f'{min(run.prompt_tokens)}-{max(run.prompt_tokens)}':>13} | {run.queries:>7} | "
                f"{run.percentile(0.5):>5.1f} ms | {run.percentile(0.99):>5.1f} ms | "
                f"{max(run.turn_ms):>5.1f} ms | {run.percentile(0.5, cpu=True):>5.1f} ms | "
                f"{run.percentile(0.99, cpu=True):>5.1f} ms",
                flush=True,
            )
        within = all(max(run.prompt_tokens) <= budget.max_tokens for run in runs)
        smallest, largest = min(runs, key=lambda run: run.size), max(runs, key=lambda run: run.size)
        growth = largest.percentile(0.5) / smallest.percentile(0.5)
        cpu_growth = largest.percentile(0.5, cpu=True) / smallest.percentile(0.5, cpu=True)
        print(f"prompt tokens within CONTEXT_MAX_TOKENS={budget.max_tokens} at every size: {'yes' if within else 'NO'}")
        print(
            f"turn p50 at {largest.size:,} messages / at {smallest.size:,}: wall {growth:.2f}x, "
            f"cpu {cpu_growth:.2f}x ({'flat' if max(growth, cpu_growth) < 1.5 else 'GROWS'}; flat means under 1.5x)"
        )
    finally:
        background.in_process_tasks_wait(timeout=120)
        connection.creation.destroy_test_db(original, verbosity=0)
        if directory:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
