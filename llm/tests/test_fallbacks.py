"""Fallback lines: random, never the last one when there is another, defaults when none."""

import random

from llm.fallbacks import DEFAULT_FALLBACK_LINES, fallback_line_pick

LINES = ["one", "two", "three"]


def test_never_repeats_the_last_line_when_another_exists() -> None:
    rng = random.Random(7)

    picks = [fallback_line_pick(lines=LINES, last="two", rng=rng) for _ in range(200)]

    assert set(picks) == {"one", "three"}


def test_a_single_line_is_said_even_if_it_was_the_last() -> None:
    assert fallback_line_pick(lines=["only"], last="only") == "only"


def test_without_lines_the_defaults_are_used() -> None:
    rng = random.Random(1)

    picks = {fallback_line_pick(lines=[], last=DEFAULT_FALLBACK_LINES[0], rng=rng) for _ in range(100)}

    assert picks == set(DEFAULT_FALLBACK_LINES[1:])


def test_blank_and_duplicate_lines_are_ignored() -> None:
    rng = random.Random(3)

    picks = {fallback_line_pick(lines=["  ", "a", "a", ""], last=None, rng=rng) for _ in range(20)}

    assert picks == {"a"}


def test_a_seeded_rng_makes_the_pick_reproducible() -> None:
    first = fallback_line_pick(lines=LINES, last=None, rng=random.Random(42))
    again = fallback_line_pick(lines=LINES, last=None, rng=random.Random(42))

    assert first == again
    assert first in LINES
