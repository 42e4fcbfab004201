"""What the avatar says when the model cannot answer: one of its fallback lines, at random.

Never the line it said last time when there is another to choose, so two failures in a row
do not sound like a broken record. An avatar without lines uses `DEFAULT_FALLBACK_LINES`.
"""

import random
from collections.abc import Sequence

DEFAULT_FALLBACK_LINES: tuple[str, ...] = (
    "Sorry, I lost my train of thought for a moment. Could you say that again?",
    "Give me a moment, my thoughts are a little tangled right now. Try me again shortly?",
    "Hmm, the words escape me just now. Let's try again in a little while.",
)

_rng = random.Random()


def fallback_line_pick(*, lines: Sequence[str], last: str | None, rng: random.Random | None = None) -> str:
    candidates = list(dict.fromkeys(line for line in lines if isinstance(line, str) and line.strip()))
    if not candidates:
        candidates = list(DEFAULT_FALLBACK_LINES)
    fresh = [line for line in candidates if line != last]
    return (rng or _rng).choice(fresh or candidates)
