"""Routing time per message with a 1,000-phrase bank.

    python -m bench.intents [--messages 5000] [--rounds 5] [--phrases 1000] [--seed 7]

The bank is the packaged default plus generated variants of its mode phrases, up to
--phrases. Messages are generated too (bank phrases with openers, tails, typos and filler;
small talk; word salad; long rambling messages; emoji), never taken from an eval set. Each
message is routed with `route_message` exactly as a turn does; the figures are wall-clock
per call after a warm-up, on one core. The same messages are timed in several rounds: on a
shared machine one round's tail can be another process's time slice, so every round is
printed, with the CPU time per call (which excludes time the process was not running) next to
the wall-clock time, and the verdict uses the median round's wall-clock p99.
"""

import argparse
import os
import platform
import random
import statistics
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "companion.settings")
django.setup()

import rapidfuzz  # noqa: E402  (after django.setup)

from conversations.intents import (  # noqa: E402
    MODES,
    NEUTRAL,
    PhraseBank,
    RouterSettings,
    route_message,
)
from core.modes import Mode  # noqa: E402

OPENERS = ["", "", "please ", "hey ", "can you ", "could you please ", "ok so ", "honestly ", "um "]
TAILS = ["", "", " please", " today", " right now", " tonight", " for me", " thanks", " lol", " 🙂"]
SMALL_TALK = [
    "hi",
    "ok",
    "thanks!",
    "lol",
    "👍",
    "good morning",
    "how is your week going",
    "what's your name",
    "tell me a joke",
    "who won the game last night",
    "how far is the moon",
    "i'm eating a sandwich",
    "that's funny",
    "why is the sky blue",
]
VARIANT_FRAMES = ["please {}", "{} please", "could you {}", "{} today", "hey {}", "i want to {}", "{} now"]


def bank_build(size: int, rng: random.Random) -> tuple[PhraseBank, float]:
    started = time.perf_counter()
    base = PhraseBank.load()
    mode_phrases = [(mode, text) for mode in MODES for text in base.phrases[mode]]
    extra: list[tuple[str, str]] = []
    seen = {text for _, text in mode_phrases}
    while len(base) + len(extra) < size:
        mode, text = rng.choice(mode_phrases)
        variant = rng.choice(VARIANT_FRAMES).format(text)
        if variant not in seen:
            seen.add(variant)
            extra.append((mode, variant))
    bank = base.extended(extra)
    return bank, time.perf_counter() - started


def typo(text: str, rng: random.Random) -> str:
    if len(text) < 4:
        return text
    i = rng.randrange(len(text) - 1)
    return text[:i] + text[i + 1] + text[i] + text[i + 2 :]


def messages_make(bank: PhraseBank, count: int, rng: random.Random) -> list[str]:
    phrases = [text for label in (Mode.SECRETARY, Mode.INTIMATE, NEUTRAL) for text in bank.phrases[label]]
    words = sorted({word for text in phrases for word in text.split()})
    out: list[str] = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.55:
            text = rng.choice(OPENERS) + rng.choice(phrases) + rng.choice(TAILS)
            if rng.random() < 0.2:
                text = typo(text, rng)
        elif kind < 0.7:
            text = rng.choice(SMALL_TALK)
        elif kind < 0.9:
            text = " ".join(rng.choices(words, k=rng.randint(3, 20)))
        else:
            text = " ".join(rng.choice(phrases) for _ in range(rng.randint(3, 6)))  # a long, rambling message
        out.append(text)
    return out


def percentile(sorted_values: list[float], share: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, round(share * (len(sorted_values) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--phrases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    bank, build_seconds = bank_build(args.phrases, rng)
    texts = messages_make(bank, args.messages, rng)
    settings = RouterSettings.from_django_settings()

    def route(text: str) -> None:
        route_message(text, current_mode=Mode.SECRETARY, locked=False, bank=bank, settings=settings)

    for text in texts[:200]:  # warm-up: imports, caches, branch predictors
        route(text)

    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"rapidfuzz {rapidfuzz.__version__}"
    )
    print(
        f"bank: {len(bank)} phrases ({', '.join(f'{k}={len(v)}' for k, v in bank.phrases.items())}), "
        f"{len(bank.cues)} cues; built in {build_seconds * 1000:.0f} ms"
    )
    print(f"messages: {len(texts)} per round (mean {statistics.mean(len(t) for t in texts):.0f} chars)")
    rounds: list[tuple[float, float, float, float, float]] = []
    for number in range(1, args.rounds + 1):
        wall_us: list[float] = []
        cpu_us: list[float] = []
        for text in texts:
            cpu_started = time.process_time_ns()
            started = time.perf_counter_ns()
            route(text)
            wall_us.append((time.perf_counter_ns() - started) / 1000)
            cpu_us.append((time.process_time_ns() - cpu_started) / 1000)
        wall_us.sort()
        cpu_us.sort()
        figures = (
            statistics.mean(wall_us),
            percentile(wall_us, 0.50),
            percentile(wall_us, 0.99),
            wall_us[-1],
            percentile(cpu_us, 0.99),
        )
        rounds.append(figures)
        print(
            f"round {number}: wall mean={figures[0]:.0f} us p50={figures[1]:.0f} us p99={figures[2]:.0f} us "
            f"max={figures[3]:.0f} us | cpu p99={figures[4]:.0f} us"
        )
    median_round = sorted(rounds, key=lambda figures: figures[2])[len(rounds) // 2]
    print(
        f"route_message per message (median round): mean={median_round[0]:.0f} us p50={median_round[1]:.0f} us "
        f"p99={median_round[2]:.0f} us (cpu p99={median_round[4]:.0f} us)"
    )
    print("target: p99 < 1000 us -> " + ("met" if median_round[2] < 1000 else "NOT met"))


if __name__ == "__main__":
    main()
