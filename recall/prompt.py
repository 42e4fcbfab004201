"""The recalled section of the prompt: pure, values in and values out."""

from dataclasses import dataclass

from core.timezones import zone_or_utc
from llm.tokens import count_tokens
from recall.selectors import Recall
from recall.text import Speakers

RECALL_OPEN = "<recalled>"
RECALL_CLOSE = "</recalled>"
HEADER = (
    "Earlier things from your conversations with the user that may bear on their new message, "
    "with when they were said. Use them only if they help; do not recite them."
)
MESSAGE_CHARS_MAX = 600  # a long message is cut: its start is what a search matched most often


@dataclass(frozen=True, slots=True)
class RecallSection:
    text: str  # "" when nothing fits or nothing was recalled
    message_ids: tuple[int, ...]  # what made it into the text
    fact_ids: tuple[int, ...]
    tokens: int


def recall_section_build(
    *, recall: Recall, speakers: Speakers, budget_tokens: int, zone_name: str = "UTC", known_facts: tuple[str, ...] = ()
) -> RecallSection:
    """The tagged section, best first, within `budget_tokens` (the header and tags included).
    Facts already in the system prompt (`known_facts`) are not repeated."""
    if budget_tokens <= 0 or not (recall.messages or recall.facts):
        return RecallSection(text="", message_ids=(), fact_ids=(), tokens=0)
    zone = zone_or_utc(zone_name)
    lines: list[str] = []
    message_ids: list[int] = []
    fact_ids: list[int] = []
    room = budget_tokens - count_tokens(f"{RECALL_OPEN}\n{HEADER}\n{RECALL_CLOSE}")
    known = set(known_facts)
    for fact in recall.facts:
        if fact.text in known:
            continue
        line = f"- Remembered: {fact.text}"
        cost = count_tokens(line) + 1
        if cost <= room:
            lines.append(line)
            fact_ids.append(fact.memory_id)
            room -= cost
    for message in recall.messages:
        who = speakers.user if message.role == "user" else f"{speakers.avatar} (you)"
        content = (
            message.content if len(message.content) <= MESSAGE_CHARS_MAX else message.content[:MESSAGE_CHARS_MAX] + "…"
        )
        day = message.created_at.astimezone(zone).date().isoformat()
        line = f"- [{day}] {who}: {content}"
        cost = count_tokens(line) + 1
        if cost <= room:
            lines.append(line)
            message_ids.append(message.message_id)
            room -= cost
    if not lines:
        return RecallSection(text="", message_ids=(), fact_ids=(), tokens=0)
    text = "\n".join([RECALL_OPEN, HEADER, *lines, RECALL_CLOSE])
    return RecallSection(text=text, message_ids=tuple(message_ids), fact_ids=tuple(fact_ids), tokens=count_tokens(text))
