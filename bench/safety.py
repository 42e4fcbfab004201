"""Crisis-detector time per message, as a turn runs it (the new message with four earlier ones).

    python -m bench.safety [--messages 5000] [--rounds 5] [--seed 7]

Messages are generated, never taken from an eval set: small talk, everyday requests, stress
and figures of speech, long rambling messages, and crisis phrases of the packaged bank with
openers, tails and typos. Each call is `crisis_assess` on the message and the four messages
before it, after a warm-up (the bank is compiled once per process), two ways: "cold", the
per-process cache of messages already read cleared before each call (the worst case: all
five messages read afresh), and "turn", as a conversation runs it (only the newest message
is new). Every round prints wall-clock p50/p99/max and CPU time per call; the verdict uses
the median round's cold p99.
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

from safety.detector import crisis_assess, crisis_bank_default, crisis_cache_clear  # noqa: E402

P99_TARGET_MS = 2.0
CONTEXT = 4

EVERYDAY = [
    "hi",
    "good morning!",
    "remind me to call the dentist tomorrow at 9",
    "what should i cook tonight",
    "this deadline is killing me",
    "i could kill for a pizza right now",
    "ugh my boss is driving me crazy",
    "i'm so tired after work today",
    "lol that movie was so bad i almost died laughing",
    "my character dies at the end of chapter three, is that too sad?",
    "i miss you, how was your day?",
    "i feel a bit down since the breakup but my friends are helping",
    "can you help me plan a trip to lisbon next month",
    "honestly i am stressed about the exam but i think i will be fine",
]
OPENERS = ["", "", "honestly ", "i think ", "sometimes ", "ok so ", "tbh "]
TAILS = ["", "", " tonight", " anymore", " lately", " and i don't know what to do", " ..."]


def typo(text: str, rng: random.Random) -> str:
    if len(text) < 6 or rng.random() < 0.6:
        return text
    i = rng.randrange(1, len(text) - 1)
    return text[:i] + text[i + 1 :]


def messages_make(count: int, rng: random.Random) -> list[str]:
    phrases = [p.text for p in crisis_bank_default().phrases]
    out: list[str] = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.5:
            out.append(rng.choice(EVERYDAY))
        elif kind < 0.8:
            out.append(rng.choice(OPENERS) + typo(rng.choice(phrases), rng) + rng.choice(TAILS))
        else:  # a long, rambling message: several sentences, some with a crisis phrase
            parts = [rng.choice(EVERYDAY if rng.random() < 0.7 else phrases) for _ in range(rng.randint(5, 12))]
            out.append(". ".join(parts))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.perf_counter()
    crisis_bank_default()
    compile_ms = (time.perf_counter() - started) * 1000
    messages = messages_make(args.messages, rng)
    windows = [messages[max(0, i - CONTEXT) : i + 1] for i in range(len(messages))]
    for window in windows[:500]:
        crisis_assess(window)  # warm-up
    print(
        f"python {platform.python_version()} rapidfuzz {rapidfuzz.__version__} {platform.machine()} "
        f"cpus={os.cpu_count()} messages={len(messages)} bank compiled in {compile_ms:.1f} ms"
    )
    p99s: list[float] = []
    for round_number in range(1, args.rounds + 1):
        for kind in ("cold", "turn"):
            times: list[float] = []
            crisis_cache_clear()
            cpu_started = time.process_time()
            for window in windows:
                if kind == "cold":
                    # Every message read afresh: the worst case (a new process, or a long gap).
                    crisis_cache_clear()
                # "turn": as in a conversation, only the newest message is new; the earlier are cached.
                t0 = time.perf_counter()
                crisis_assess(window)
                times.append((time.perf_counter() - t0) * 1000)
            cpu_ms = (time.process_time() - cpu_started) * 1000 / len(windows)
            times.sort()
            p50, p99 = times[len(times) // 2], times[int(len(times) * 0.99)]
            if kind == "cold":
                p99s.append(p99)
            print(
                f"round {round_number} {kind:<4}: p50={p50:.3f} ms p99={p99:.3f} ms max={times[-1]:.3f} ms "
                f"cpu={cpu_ms:.3f} ms/call"
            )
    verdict = statistics.median(p99s)
    status = "ok" if verdict < P99_TARGET_MS else "OVER"
    print(f"cold p99 (median round) = {verdict:.3f} ms, target < {P99_TARGET_MS} ms: {status}")


if __name__ == "__main__":
    main()
