"""Pure text work of recall: the search terms of a message, the dates it names, a document's parts.

No I/O. The database does the stemming (FTS5's porter tokenizer, PostgreSQL's `english`
configuration); this module only decides which words are worth searching for, who "I" and
"you" are, and which stretch of time a message points to.
"""

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

MAX_QUERY_TERMS = 24  # a long message searches for its first words that matter, not all of them
MAX_TERM_CHARS = 40

_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)?", re.UNICODE)

# Words that carry no topic: the search engine's own lists differ (FTS5 has none), so one list here.
STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "also",
        "am",
        "an",
        "and",
        "any",
        "are",
        "aren",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "didn",
        "do",
        "does",
        "doesn",
        "doing",
        "don",
        "down",
        "during",
        "each",
        "either",
        "else",
        "ever",
        "every",
        "few",
        "for",
        "from",
        "further",
        "get",
        "gets",
        "getting",
        "got",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "isn",
        "it",
        "its",
        "itself",
        "just",
        "let",
        "like",
        "ll",
        "me",
        "mine",
        "more",
        "most",
        "much",
        "must",
        "my",
        "myself",
        "need",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "oh",
        "ok",
        "okay",
        "on",
        "once",
        "one",
        "only",
        "or",
        "other",
        "ought",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "really",
        "remember",
        "right",
        "s",
        "same",
        "say",
        "said",
        "she",
        "should",
        "so",
        "some",
        "such",
        "t",
        "tell",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "thing",
        "things",
        "think",
        "this",
        "those",
        "through",
        "to",
        "told",
        "too",
        "under",
        "until",
        "up",
        "us",
        "ve",
        "very",
        "was",
        "wasn",
        "way",
        "we",
        "were",
        "weren",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "whose",
        "why",
        "will",
        "with",
        "would",
        "yeah",
        "yes",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "hey",
        "hi",
        "hello",
        "thanks",
        "thank",
        "please",
        "name",
        "called",
    ]
)
FIRST_PERSON = frozenset({"i", "me", "my", "mine", "myself", "i'm", "i've", "i'd", "i'll"})
SECOND_PERSON = frozenset({"you", "your", "yours", "yourself", "you're", "you've", "you'd", "you'll"})

_MONTHS = {name.lower(): index for index, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): index for index, name in enumerate(calendar.month_abbr) if name})
_MONTHS.pop("may", None)  # "may" alone is a verb far more often than a month: only with a day or year
_SEASONS = {"spring": (3, 5), "summer": (6, 8), "autumn": (9, 11), "fall": (9, 11), "winter": (12, 2)}
_DATE = re.compile(
    r"\b(?:(?P<day1>\d{1,2})(?:st|nd|rd|th)?\s+)?(?P<month>[a-z]{3,9})\.?"
    r"(?:\s+(?P<day2>\d{1,2})(?:st|nd|rd|th)?\b)?(?:,?\s+(?P<year>(?:19|20)\d\d))?\b"
)
_YEAR = re.compile(r"\b(?:in|of|during)\s+(?P<year>(?:19|20)\d\d)\b")
_RELATIVE = re.compile(
    r"\b(?P<which>last|this|past)\s+(?P<unit>week|month|year|spring|summer|autumn|fall|winter|weekend)\b"
    r"|\b(?P<n>\d+|a|two|three|four|five|six)\s+(?P<units>days|weeks|months|years|week|month|year|day)\s+ago\b"
    r"|\b(?P<yesterday>yesterday)\b"
)
_NUMBERS = {"a": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


@dataclass(frozen=True, slots=True)
class Speakers:
    """Who "I" and "you" are in this conversation: the user's display name and the avatar's name."""

    user: str
    avatar: str


@dataclass(frozen=True, slots=True)
class DateSpan:
    first: date
    last: date  # inclusive

    def holds(self, day: date) -> bool:
        return self.first <= day <= self.last


@dataclass(frozen=True, slots=True)
class RecallQuery:
    """What a new message searches for."""

    terms: tuple[str, ...]  # lower-cased words, stopwords out, in order of appearance, no repeats
    about_user: bool  # the message is about the user: "I", "my", or their name
    about_avatar: bool  # ... about the avatar: "you", "your", or its name
    dates: tuple[DateSpan, ...]  # the stretches of time it names ("in May", "last summer")
    asks_when: bool = False  # "when did ...", "how long ago ..."


def words(text: str) -> list[str]:
    return [word.replace("\u2019", "'").lower() for word in _WORD.findall(text)]


def query_parse(text: str, *, speakers: Speakers, context: tuple[str, ...] = (), today: date) -> RecallQuery:
    """The search terms of `text`; `context` (the last turns) lends its words only when `text`
    has too few of its own ("and what did she say about it?")."""
    said = words(text)
    user_names = set(words(speakers.user))
    avatar_names = set(words(speakers.avatar))
    about_user = bool(FIRST_PERSON.intersection(said) or (user_names and user_names <= set(said)))
    about_avatar = bool(SECOND_PERSON.intersection(said) or (avatar_names and avatar_names <= set(said)))
    terms = _terms(said)
    if len(terms) < 2:
        for earlier in reversed(context):
            terms = _terms([*said, *words(earlier)])
            if len(terms) >= 2:
                break
    return RecallQuery(
        terms=tuple(terms[:MAX_QUERY_TERMS]),
        about_user=about_user,
        about_avatar=about_avatar,
        dates=date_spans(text, today=today),
        asks_when=bool(said) and (said[0] == "when" or said[:2] == ["how", "long"] or "when" in said[:3]),
    )


def _terms(said: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for word in said:
        word = word.split("'")[0]
        if (len(word) < 2 and not word.isdigit()) or word in STOPWORDS or len(word) > MAX_TERM_CHARS:
            continue
        seen.setdefault(word, None)
    return list(seen)


def date_spans(text: str, *, today: date) -> tuple[DateSpan, ...]:
    """The stretches of time `text` names: a day ("on May 3, 2023"), a month ("in June"), a
    season or a relative one ("last summer", "two weeks ago", "yesterday"), seen from `today`."""
    lowered = text.lower()
    spans: list[DateSpan] = []
    for match in _DATE.finditer(lowered):
        span = _absolute_span(match, today=today)
        if span is not None:
            spans.append(span)
    for match in _YEAR.finditer(lowered):
        year = int(match["year"])
        spans.append(DateSpan(date(year, 1, 1), date(year, 12, 31)))
    for match in _RELATIVE.finditer(lowered):
        spans.append(_relative_span(match, today=today))
    return tuple(spans)


def _absolute_span(match: re.Match[str], *, today: date) -> DateSpan | None:
    name = match["month"]
    day_text = match["day1"] or match["day2"]
    month = _MONTHS.get(name) or (5 if name == "may" and (day_text or match["year"]) else None)
    if month is None:
        return None
    year = int(match["year"]) if match["year"] else (today.year if month <= today.month else today.year - 1)
    last_day = calendar.monthrange(year, month)[1]
    if day_text and 1 <= int(day_text) <= last_day:
        # "on May 3" is often told a day or two later ("yesterday I ..."): the days after count too.
        day = date(year, month, int(day_text))
        return DateSpan(day - timedelta(days=1), day + timedelta(days=3))
    return DateSpan(date(year, month, 1), date(year, month, last_day))


def _relative_span(match: re.Match[str], *, today: date) -> DateSpan:
    if match["yesterday"]:
        day = today - timedelta(days=1)
        return DateSpan(day, day)
    if match["units"]:
        count = _NUMBERS.get(match["n"]) or int(match["n"])
        unit_days = {"day": 1, "week": 7, "month": 30, "year": 365}[match["units"].rstrip("s")]
        centre = today - timedelta(days=count * unit_days)
        slack = timedelta(days=max(1, count * unit_days // 4))
        return DateSpan(centre - slack, centre + slack)
    unit = match["unit"]
    this = match["which"] == "this"
    if unit in ("week", "weekend"):
        start = today - timedelta(days=today.weekday() + (0 if this else 7))
        return DateSpan(start, start + timedelta(days=6))
    if unit == "month":
        first = today.replace(day=1) if this else (today.replace(day=1) - timedelta(days=1)).replace(day=1)
        return DateSpan(first, first.replace(day=calendar.monthrange(first.year, first.month)[1]))
    if unit == "year":
        year = today.year if this else today.year - 1
        return DateSpan(date(year, 1, 1), date(year, 12, 31))
    first_month, last_month = _SEASONS[unit]
    year = today.year if this or today.month > last_month else today.year - 1
    start_year = year - 1 if first_month > last_month else year
    end = date(year, last_month, calendar.monthrange(year, last_month)[1])
    return DateSpan(date(start_year, first_month, 1), end)


def match_expression(terms: tuple[str, ...]) -> str:
    """An FTS5 MATCH expression: any of the terms, each a quoted string (no operator can slip in)."""
    return " OR ".join('"{}"'.format(term.replace('"', "")) for term in terms)


def day_of(moment: datetime) -> date:
    return moment.date()
