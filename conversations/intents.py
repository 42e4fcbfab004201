"""Mode routing: which mode a user message points to, and whether the conversation switches.

Pure: values in, a decision out. No ORM and no I/O at call time; the packaged phrase files
(`conversations/phrases/`) are read once, when the default bank is first built.

A message is scored against three labels: the two modes and "neutral" (greetings, thanks,
questions about the bot, trivia...), which competes so that small talk does not drift into a
mode. Each label's score combines two kinds of evidence, the stronger raised a little when the
other agrees:

* weighted cues (`phrases/cues.txt`): words and short patterns such as "remind me" or
  "i * {sad}", matched on stemmed words after typo correction (rapidfuzz OSA distance);
* the nearest phrase of the label's bank (`phrases/<label>.txt`, plus an avatar's own
  phrases): rapidfuzz `token_sort_ratio` against the whole message, and for mode phrases
  `token_set_ratio` for a phrase found inside a longer message, weighted by how specific the
  phrase is.

The message points to the best mode if its score clears a threshold and beats neutral by a
margin; `route_message` then applies commands, the lock, hysteresis and the intimate gate.
docs/intents.md explains every threshold and gives the measured figures.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from core.modes import Mode

PHRASES_DIR = Path(__file__).resolve().parent / "phrases"

NEUTRAL = "neutral"
MODES: tuple[str, ...] = (Mode.SECRETARY, Mode.INTIMATE)
LABELS: tuple[str, ...] = (Mode.SECRETARY, Mode.INTIMATE, NEUTRAL)
AUTO = "auto"


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


SOURCE_INTENT = "intent"
SOURCE_COMMAND = "command"
SOURCE_LOCK = "lock"
SOURCE_NONE = "none"

# Words that carry no request and no feeling: a message made only of these never switches.
FILLER_WORDS = _word_set(
    """
    ok okay k kk yes yeah yep yup yea ye no nope nah not nothing thanks thank thx you ty lol lmao
    rofl haha hahaha hehe hmm hm mm um uh oh ah aha wow cool nice great good fine sure alright
    right true correct exactly absolutely definitely certainly totally please so well and oops
    yay hi hey hello bye the a it that is this i am really very much too just got maybe idk worries
    problem
    """
)

# Short function words: never typo-corrected into a cue word, never evidence on their own.
STOP_WORDS = _word_set(
    """
    a an the to of in on at for from by with about as into over and or but if so than then
    i me my mine myself you your yours yourself we us our they them their he him his she her
    it its this that these those there here what which who whom whose when where why how
    is am are was were be been being do does did doing have has had having will would shall
    should can could may might must not no yes please just also too very really
    """
)

_TOKEN_MAP: dict[str, str] = {
    "im": "i am",
    "ive": "i have",
    "youre": "you are",
    "youve": "you have",
    "ur": "your",
    "u": "you",
    "r": "are",
    "ya": "you",
    "yall": "you all",
    "dont": "do not",
    "doesnt": "does not",
    "didnt": "did not",
    "cant": "can not",
    "cannot": "can not",
    "wont": "will not",
    "isnt": "is not",
    "arent": "are not",
    "wasnt": "was not",
    "werent": "were not",
    "havent": "have not",
    "hasnt": "has not",
    "shouldnt": "should not",
    "wouldnt": "would not",
    "couldnt": "could not",
    "thats": "that is",
    "whats": "what is",
    "hows": "how is",
    "wheres": "where is",
    "whos": "who is",
    "lets": "let us",
    "wanna": "want to",
    "gonna": "going to",
    "gotta": "have to",
    "luv": "love",
    "pls": "please",
    "plz": "please",
    "plse": "please",
    "thx": "thanks",
    "thnx": "thanks",
    "thanx": "thanks",
    "ty": "thanks",
    "tysm": "thanks",
    "kthx": "ok thanks",
    "bday": "birthday",
    "tmrw": "tomorrow",
    "tmr": "tomorrow",
    "tmrrw": "tomorrow",
    "tomoro": "tomorrow",
    "2moro": "tomorrow",
    "tonite": "tonight",
    "appt": "appointment",
    "mtg": "meeting",
    "msg": "message",
    "txt": "text",
    "mins": "minutes",
    "hrs": "hours",
    "gf": "girlfriend",
    "bf": "boyfriend",
    "ppl": "people",
    "cuz": "because",
    "coz": "because",
    "rn": "right now",
    "idk": "i do not know",
    "omg": "oh my god",
    "abt": "about",
    "wyd": "what are you doing",
    "hbu": "how about you",
    "sup": "what is up",
    "wassup": "what is up",
    "whassup": "what is up",
    "wazzup": "what is up",
}

_CONTRACTIONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"\bcan't\b", "can not"),
        (r"\bwon't\b", "will not"),
        (r"\bain't\b", "is not"),
        (r"n't\b", " not"),
        (r"'m\b", " am"),
        (r"'re\b", " are"),
        (r"'ve\b", " have"),
        (r"'ll\b", " will"),
        (r"'d\b", " would"),
        (r"\b(it|that|what|who|where|when|how|there|here|he|she|this)'s\b", r"\1 is"),
        (r"\blet's\b", "let us"),
        (r"'s\b", ""),
        (r"\bto-do\b", "todo"),
        (r"\be-mail", "email"),
        (r"(\d)(am|pm)\b", r"\1 \2"),
    )
)

# Rewrites on the normalised token string. A polite request frame ("i'd like you to...") is
# filler, not affection: without this "i want you to add eggs" would read as "i want you"
# (while "i want you to like me" still reads "you please like me": affection).
_PHRASE_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"\b(i|we) (would like|want|need) you to\b", "you please"),
        (r"\b(do|would|should) you (want|need|like) me to\b", "should i"),
        (r"\be mail", "email"),
        (r"\bto do list", "todo list"),
    )
)

_NON_WORD = re.compile(r"[^a-z0-9]+")
_NUMBER = re.compile(r"\d+(st|nd|rd|th)?")
# Nouns in -ing whose stem would be another word ("till we meet again" is no meeting).
_STEM_KEEP = _word_set("meeting morning evening wedding building nothing something anything everything")
# Suffixes the stemmer strips (one of them), with the shortest word it strips them from.
_SUFFIXES = (("ing", 6), ("est", 6), ("ed", 5))
_LONG_RUN = re.compile(r"([a-z])\1{2,}")
_SLASH_COMMAND = re.compile(r"^\s*/([a-z]+)\b")
_SLASH_TARGETS: dict[str, str] = {
    "secretary": Mode.SECRETARY,
    "work": Mode.SECRETARY,
    "assistant": Mode.SECRETARY,
    "intimate": Mode.INTIMATE,
    "companion": Mode.INTIMATE,
    "friend": Mode.INTIMATE,
    "auto": AUTO,
    "automatic": AUTO,
}
# A long message is routed on its opening and closing words, where its request or its mood is
# stated ("...anyway, can you remind me to call mom?"); this also bounds the routing time.
_EDGE_WORDS = 40
_EDGE_CHARS = 400
# Messages longer than this are never commands.
_COMMAND_MAX_WORDS = 12
# Dropped from both sides before a message is compared with the command phrases.
_COMMAND_FILLER = _word_set("please ok okay hey now can could would will you so alright right then again kindly")

# How several cues of one label add up: each further cue closes this share of the remaining gap
# to 100, scaled by its own weight. Two weak cues tip a message; one strong cue is not inflated.
_AGREEMENT = 0.5
_GAP = "*"
_GAP_WORDS = 2
_ANCHOR = "^"
_TYPO_MIN_LENGTH = 5
_TYPO_CACHE_SIZE = 10_000
# A word ending like an inflection may be a real word we do not know ("ticked" is not "ticket").
_INFLECTION_ENDINGS = ("ed", "ing", "s")
# rapidfuzz similarity between unrelated short phrases is far from 0: in our banks the nearest
# phrase of a *different* label scores 55 (median) with token_sort_ratio, 67 at the 90th
# percentile. Phrase similarity is therefore rescaled so that 50 maps to 0 and 100 stays 100.
_PHRASE_BASELINE = 50.0
# How much a phrase found inside a longer message counts, by how many content words it has:
# "remind me to call the plumber" inside a message says a lot, "what" or "hug me" little. One
# content word fully inside a message (65) cannot point on its own: a cue must agree.
_SPECIFICITY = {0: 0.5, 1: 0.65, 2: 0.85}
# An avatar's own phrases are curated for it: found inside a message they count at least this
# much, whatever their length (they still need a content word in common with the message).
_CURATED_SPECIFICITY = 0.85
# How many nearest whole-message phrases are re-scored for content-word coverage.
_WHOLE_CANDIDATES = 3
# Words that say little about what a phrase is about: they do not count towards its specificity.
GENERIC_WORDS = STOP_WORDS | _word_set(
    """
    tell say give get got make know think something anything thing things let go see look one some
    any all now right well way much more lot little bit ever even still again always never yet
    already want need like
    """
)
# A message that names neither the user nor the avatar and is not an imperative is more likely
# about the world ("who invented the alarm clock", "why do people cry") than about the user's
# day or feelings: its mode scores are scaled by this factor.
_IMPERSONAL_FACTOR = 0.85
_PERSONAL_WORDS = _word_set("i me my mine myself we us our ours you your yours yourself u ur")
# Verbs that open a request in the imperative ("book a table", "wake me up", "start a timer"),
# and "any", which opens the elliptic "(do i have) any new emails?".
_IMPERATIVE_VERBS = _word_set(
    """
    add set schedule book cancel delete remove move reschedule put create make send text email call remind pay
    order reserve arrange organise organize plan note save update change confirm check block forward push take
    start stop open show read find get tell write compose reply wake clear mark list look give hug kiss hold
    request submit message rent renew ring phone dial ping notify alert snooze pause resume invite accept decline
    approve print share sort prioritise prioritize draft any
    """
)
# Words a request may open with before its verb: "could you please add...", "i need to pay...".
_LEAD_FILLER = _word_set(
    "please can could would will you hey ok okay so now and also just i need want to let us go ahead kindly"
)


def text_normalise(text: str) -> str:
    """Lower-case, ASCII-ish, contractions and chat shorthand expanded, punctuation removed."""
    folded = unicodedata.normalize("NFKC", text).lower()
    folded = folded.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    for pattern, replacement in _CONTRACTIONS:
        folded = pattern.sub(replacement, folded)
    folded = _LONG_RUN.sub(r"\1\1", _NON_WORD.sub(" ", folded))
    tokens = [_TOKEN_MAP.get(token, token) for token in folded.split()]
    joined = " ".join(tokens)
    for pattern, replacement in _PHRASE_REWRITES:
        joined = pattern.sub(replacement, joined)
    return joined


def word_stem(word: str) -> str:
    """A deliberately small stemmer, applied the same way to cues and messages.

    "alarms" ~ "alarm", "texting" ~ "texted" ~ "text", "scheduled" ~ "schedule". Digits and
    ordinals ("10", "3rd") all become "0", so a cue can say "at {number}".
    """
    if _NUMBER.fullmatch(word):
        return "0"
    if word in _STEM_KEEP or word in STOP_WORDS:
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("s") and len(word) > 4 and word[-2] not in "siu":
        word = word[:-1]
    if word in _STEM_KEEP:
        return word
    for suffix, min_length in _SUFFIXES:
        if word.endswith(suffix) and len(word) >= min_length and word[: -len(suffix)] not in STOP_WORDS:
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 3 and word[:-1] not in STOP_WORDS:
        word = word[:-1]
    return word


@dataclass(frozen=True)
class RouterSettings:
    """Thresholds of the router; every score is on a 0-100 scale.

    point_threshold: a mode's score must reach this for a message to point to it at all.
    neutral_margin: ... and beat the neutral score by this much (small talk wins ties).
    switch_threshold: the score a pointed mode needs to switch the conversation to it.
    switch_margin: ... and by how much it must beat the current mode's score (hysteresis).
    min_chars: messages with fewer letters than this never switch ("ok", "yes", "lol").
    command_threshold: rapidfuzz ratio a message needs to count as a natural command.
    """

    point_threshold: float = 70.0
    neutral_margin: float = 5.0
    switch_threshold: float = 80.0
    switch_margin: float = 10.0
    min_chars: int = 4
    command_threshold: float = 90.0

    @classmethod
    def from_django_settings(cls) -> RouterSettings:
        from django.conf import settings

        defaults = cls()
        return cls(
            point_threshold=float(getattr(settings, "ROUTER_POINT_THRESHOLD", defaults.point_threshold)),
            neutral_margin=float(getattr(settings, "ROUTER_NEUTRAL_MARGIN", defaults.neutral_margin)),
            switch_threshold=float(getattr(settings, "ROUTER_SWITCH_THRESHOLD", defaults.switch_threshold)),
            switch_margin=float(getattr(settings, "ROUTER_SWITCH_MARGIN", defaults.switch_margin)),
            min_chars=int(getattr(settings, "ROUTER_MIN_CHARS", defaults.min_chars)),
            command_threshold=float(getattr(settings, "ROUTER_COMMAND_THRESHOLD", defaults.command_threshold)),
        )


@dataclass(frozen=True)
class Cue:
    """A weighted word or short pattern; `steps` are stem sets, `None` is a gap of 0-2 words."""

    label: str
    weight: float
    pattern: str
    steps: tuple[frozenset[str] | None, ...]
    anchored: bool = False  # only at the start of the request (after "please", "can you"...)
    words: tuple[str, ...] = ()  # the literal words it is made of (typo-correction targets)

    def match_span(self, stems: Sequence[str], *, lead: int, starts: Iterable[int]) -> tuple[int, int] | None:
        """The first (start, end) word span of `stems` this cue matches, or None.

        `starts`: the positions of `stems` that hold one of the cue's first words.
        """
        for start in sorted(starts):
            if self.anchored and start != lead:
                continue
            end = self._match_from(stems, 1, start + 1)
            if end is not None:
                return start, end
        return None

    def _match_from(self, stems: Sequence[str], step: int, position: int) -> int | None:
        if step == len(self.steps):
            return position
        wanted = self.steps[step]
        if wanted is None:
            for skip in range(_GAP_WORDS + 1):
                end = self._match_from(stems, step + 1, position + skip)
                if end is not None:
                    return end
            return None
        if position < len(stems) and stems[position] in wanted:
            return self._match_from(stems, step + 1, position + 1)
        return None


@dataclass(frozen=True)
class Evidence:
    score: float
    matched: str | None


@dataclass(frozen=True)
class IntentMatch:
    mode: str | None  # mode the text points to, None = neutral
    score: float  # 0-100: strength of the evidence for `mode` (for None: for neutral)
    matched: str | None  # the phrase or cue that matched
    scores: dict[str, float] = field(default_factory=dict, compare=False)  # every label's score
    content_free: bool = False  # nothing but filler words, emoji or punctuation
    letters: int = field(default=0, compare=False)  # letters in the normalised message (short ones never switch)


@dataclass(frozen=True)
class RouteDecision:
    mode: str  # mode the turn runs in after this decision
    previous: str  # mode before
    pointed: str | None  # mode the text points to (None: neutral)
    score: float
    matched: str | None
    switch: bool  # mode != previous
    source: str  # "intent" | "command" | "lock" | "none"
    lock: bool | None  # True: a command locks the mode; False: released; None: unchanged
    blocked: str | None  # "intimate" when intimate was pointed to/commanded but is not allowed
    blocked_reason: str | None  # the intimate_block code passed in

    def as_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "previous": self.previous,
            "pointed": self.pointed,
            "score": self.score,
            "matched": self.matched,
            "switch": self.switch,
            "source": self.source,
            "lock": self.lock,
            "blocked": self.blocked,
            "blocked_reason": self.blocked_reason,
        }


@dataclass(frozen=True)
class _Query:
    normalised: str
    stems: tuple[str, ...]
    lead: int  # index of the first word after opening filler ("please", "can you")
    letters: int
    content_free: bool
    personal: bool  # names the user or the avatar, or is an imperative request


class PhraseBank:
    """Phrases, cues and commands, normalised once when the bank is built and reused per message."""

    def __init__(
        self,
        *,
        phrases: Iterable[tuple[str, str]],
        cues: Sequence[Cue],
        commands: Iterable[tuple[str, str]],
        curated: Iterable[tuple[str, str]] = (),
    ) -> None:
        """`curated`: an avatar's own (mode, text) phrases, trusted more than the packaged ones."""
        originals: dict[str, list[str]] = {label: [] for label in LABELS}
        choices: dict[str, list[str]] = {label: [] for label in LABELS}
        floors: dict[str, list[float]] = {label: [] for label in LABELS}
        seen: set[tuple[str, str]] = set()
        kept_curated: list[tuple[str, str]] = []
        sources = [(phrase, 0.0) for phrase in phrases] + [(phrase, _CURATED_SPECIFICITY) for phrase in curated]
        for (label, text), floor in sources:
            if label not in LABELS:
                raise ValueError(f"unknown phrase label {label!r}")
            normalised = text_normalise(text)
            if not normalised or (label, normalised) in seen:
                continue
            seen.add((label, normalised))
            originals[label].append(text.strip())
            choices[label].append(normalised)
            floors[label].append(floor)
            if floor:
                kept_curated.append((label, text.strip()))
        self._curated = tuple(kept_curated)
        self.phrases: dict[str, tuple[str, ...]] = {label: tuple(originals[label]) for label in LABELS}
        self.choices: dict[str, tuple[str, ...]] = {label: tuple(choices[label]) for label in LABELS}
        # token_sort_ratio(a, b) is ratio(sorted words of a, sorted words of b): sorting the
        # choices once here makes the per-message search a plain (fast) ratio.
        self._sorted_choices = {
            label: tuple(_words_sorted(choice) for choice in self.choices[label]) for label in LABELS
        }
        self._lengths = {label: tuple(len(choice.split()) for choice in self.choices[label]) for label in LABELS}
        self._specificity = {
            label: tuple(
                max(_phrase_specificity(choice), floor)
                for choice, floor in zip(self.choices[label], floors[label], strict=True)
            )
            for label in LABELS
        }
        self._content_stems = {label: tuple(map(_content_stems, self.choices[label])) for label in LABELS}
        # Content word (stemmed) -> the phrases that contain it: containment is only looked for
        # in phrases that share a content word with the message.
        self._content_index: dict[str, dict[str, tuple[int, ...]]] = {}
        for label in MODES:
            index: dict[str, list[int]] = {}
            for position, stems in enumerate(self._content_stems[label]):
                for stem in stems:
                    index.setdefault(stem, []).append(position)
            self._content_index[label] = {stem: tuple(positions) for stem, positions in index.items()}

        self.cues: tuple[Cue, ...] = tuple(cues)
        cue_index: dict[str, list[int]] = {}
        for position, cue in enumerate(self.cues):
            first = cue.steps[0]
            assert first is not None
            for stem in first:
                cue_index.setdefault(stem, []).append(position)
        self._cue_index = {stem: tuple(positions) for stem, positions in cue_index.items()}

        self.commands: tuple[tuple[str, str], ...] = tuple(commands)
        self._command_choices = tuple(_command_core(text_normalise(phrase)) for _, phrase in self.commands)

        # Typos are corrected only towards the words that decide routing: the cue words.
        known: set[str] = set(FILLER_WORDS) | set(STOP_WORDS)
        for label in LABELS:
            for choice in self.choices[label]:
                known.update(choice.split())
        targets = {word for cue in self.cues for word in cue.words}
        self._known_words = frozenset(known | targets)
        self._known_stems = frozenset(word_stem(word) for word in self._known_words)
        by_prefix: dict[str, list[str]] = {}
        for word in sorted(targets):
            if len(word) >= _TYPO_MIN_LENGTH - 1:
                by_prefix.setdefault(word[:2], []).append(word)
        self._typo_targets = {prefix: tuple(words) for prefix, words in by_prefix.items()}
        self._typo_cache: dict[str, str] = {}

    @classmethod
    def load(cls, directory: Path = PHRASES_DIR) -> PhraseBank:
        phrases = [(label, line) for label in LABELS for line in _data_lines(directory / f"{label}.txt")]
        cues = cues_parse(_data_lines(directory / "cues.txt"))
        commands = []
        for line in _data_lines(directory / "commands.txt"):
            target, _, phrase = line.partition(" ")
            if target not in (*MODES, AUTO) or not phrase.strip():
                raise ValueError(f"bad command line {line!r}")
            commands.append((target, phrase.strip()))
        return cls(phrases=phrases, cues=cues, commands=commands)

    def extended(self, extra: Iterable[tuple[str, str]]) -> PhraseBank:
        """A new bank: these phrases plus an avatar's curated `extra` (mode, text) pairs."""
        curated = set(self._curated)
        phrases = [(label, text) for label in LABELS for text in self.phrases[label] if (label, text) not in curated]
        return PhraseBank(phrases=phrases, cues=self.cues, commands=self.commands, curated=[*self._curated, *extra])

    def __len__(self) -> int:
        return sum(len(self.choices[label]) for label in LABELS)

    def query_prepare(self, text: str) -> _Query:
        if len(text) > 2 * _EDGE_CHARS:
            text = f"{text[:_EDGE_CHARS]} {text[-_EDGE_CHARS:]}"
        words = text_normalise(text).split()
        if len(words) > 2 * _EDGE_WORDS:
            words = words[:_EDGE_WORDS] + words[-_EDGE_WORDS:]
        words = [self._word_correct(word) for word in words]
        normalised = " ".join(words)
        lead = 0
        while lead < len(words) and words[lead] in _LEAD_FILLER:
            lead += 1
        return _Query(
            normalised=normalised,
            stems=tuple(word_stem(word) for word in words),
            lead=lead,
            letters=sum(character.isalpha() for character in normalised),
            content_free=all(word in FILLER_WORDS or word.isdigit() for word in words),
            personal=any(word in _PERSONAL_WORDS for word in words)
            or (lead < len(words) and words[lead] in _IMPERATIVE_VERBS),
        )

    def cue_evidence(self, query: _Query) -> dict[str, Evidence]:
        """Per label: the cues that match, non-overlapping, strongest first, added up."""
        stems = query.stems
        where: dict[str, list[int]] = {}
        for position, stem in enumerate(stems):
            where.setdefault(stem, []).append(position)
        candidates = sorted(
            {cue for stem in where for cue in self._cue_index.get(stem, ())},
            key=lambda cue: -self.cues[cue].weight,
        )
        spans: dict[str, list[tuple[int, int]]] = {label: [] for label in LABELS}
        evidence: dict[str, Evidence] = {}
        for candidate in candidates:
            cue = self.cues[candidate]
            first = cue.steps[0]
            assert first is not None  # a pattern never starts with a gap (checked when parsed)
            starts = [position for stem in first & where.keys() for position in where[stem]]
            span = cue.match_span(stems, lead=query.lead, starts=starts)
            if span is None or any(span[0] < end and start < span[1] for start, end in spans[cue.label]):
                continue
            spans[cue.label].append(span)
            held = evidence.get(cue.label)
            if held is None:
                matched = " ".join(query.normalised.split()[span[0] : span[1]])
                evidence[cue.label] = Evidence(cue.weight, matched)
            else:
                evidence[cue.label] = Evidence(score_agree(held.score, cue.weight), held.matched)
        return evidence

    def phrase_evidence(self, query: _Query) -> dict[str, Evidence]:
        """Per label: the nearest phrase, as a paraphrase of the whole message or found inside it.

        Whole message: `token_sort_ratio` (as `ratio` on presorted words). Inside it (mode
        phrases only: a greeting or a thanks is neutral when it is the whole message, not when
        it opens a request): `token_set_ratio`, only against phrases that share a content word
        with the message and are no longer than it (a one-word message is not "inside" a long
        phrase), scaled by the phrase's specificity so that "hug me" cannot claim a long message
        the way "remind me to call the plumber" can. Similarities are rescaled from the baseline
        (see _PHRASE_BASELINE) to 0-100.
        """
        text = query.normalised
        length = len(query.stems)
        content = {stem for stem, word in zip(query.stems, text.split(), strict=True) if word not in GENERIC_WORDS}
        ordered = _words_sorted(text)
        evidence: dict[str, Evidence] = {}
        for label in LABELS:
            best_score, best_position = 0.0, -1
            nearest = process.extract(
                ordered,
                self._sorted_choices[label],
                scorer=fuzz.ratio,
                processor=None,  # both sides are already normalised by text_normalise, and sorted
                score_cutoff=_PHRASE_BASELINE,
                limit=_WHOLE_CANDIDATES,
            )
            for _, similarity, position in nearest:
                # Characters alone mislead on short messages ("how tall are you" is 76% "how are
                # you really"): the score counts fully only if the phrase has the message's
                # content words.
                if content:
                    covered = len(content & self._content_stems[label][position]) / len(content)
                    score = phrase_confidence(similarity) * (0.5 + 0.5 * covered)
                else:
                    score = phrase_confidence(similarity)
                if score > best_score:
                    best_score, best_position = score, position
            if label in MODES:
                index, lengths, specificity = self._content_index[label], self._lengths[label], self._specificity[label]
                candidates: dict[float, list[int]] = {}
                for position in {position for stem in content for position in index.get(stem, ())}:
                    if lengths[position] <= length:
                        candidates.setdefault(specificity[position], []).append(position)
                for weight in sorted(candidates, reverse=True):
                    if weight * 100.0 <= best_score:
                        break
                    positions = candidates[weight]
                    inside = process.extractOne(
                        text,
                        [self.choices[label][position] for position in positions],
                        scorer=fuzz.token_set_ratio,
                        processor=None,  # both sides are already normalised by text_normalise
                        score_cutoff=phrase_similarity_needed(best_score / weight),
                    )
                    if inside is not None and phrase_confidence(inside[1]) * weight > best_score:
                        best_score, best_position = phrase_confidence(inside[1]) * weight, positions[inside[2]]
            if best_position >= 0 and best_score > 0:
                evidence[label] = Evidence(best_score, self.phrases[label][best_position])
        return evidence

    def command_find(self, text: str, *, threshold: float, query: _Query | None = None) -> tuple[str, str] | None:
        """(target, command) when the whole message is an explicit mode command."""
        slash = _SLASH_COMMAND.match(text.lower())
        if slash is not None and slash.group(1) in _SLASH_TARGETS:
            return _SLASH_TARGETS[slash.group(1)], f"/{slash.group(1)}"
        query = query or self.query_prepare(text)
        if len(query.stems) > _COMMAND_MAX_WORDS:
            return None
        core = _command_core(query.normalised)
        if not core or not self._command_choices:
            return None
        found = process.extractOne(
            core,
            self._command_choices,
            scorer=fuzz.ratio,
            processor=None,  # both sides normalised and stripped of filler by _command_core
            score_cutoff=threshold,
        )
        if found is None:
            return None
        return self.commands[found[2]]

    def _word_correct(self, word: str) -> str:
        """A typo of a cue word ("calender", "remidner") becomes that word; other words stay.

        Without a dictionary, a real word must not be "corrected" into a cue ("white" is not
        "write", "though" is not "tough"): only unknown words are considered, never ones that
        end like an inflection of a word we do not know, and the first two letters must agree
        (typing errors rarely hit them).
        """
        if (
            len(word) < _TYPO_MIN_LENGTH
            or not word.isalpha()
            or word in self._known_words
            or word_stem(word) in self._known_stems
            or word.endswith(_INFLECTION_ENDINGS)
        ):
            return word
        cached = self._typo_cache.get(word)
        if cached is not None:
            return cached
        found = process.extractOne(
            word,
            self._typo_targets.get(word[:2], ()),
            scorer=OSA.distance,
            processor=None,  # single lower-case words
            score_cutoff=1 if len(word) < 8 else 2,
        )
        corrected = word if found is None else str(found[0])
        if len(self._typo_cache) < _TYPO_CACHE_SIZE:
            self._typo_cache[word] = corrected
        return corrected


def _words_sorted(text: str) -> str:
    return " ".join(sorted(text.split()))


def _content_stems(choice: str) -> frozenset[str]:
    return frozenset(word_stem(word) for word in choice.split() if word not in GENERIC_WORDS)


def _phrase_specificity(choice: str) -> float:
    content = sum(word not in GENERIC_WORDS for word in choice.split())
    return _SPECIFICITY.get(content, 1.0)


def phrase_confidence(similarity: float) -> float:
    """A rapidfuzz similarity (0-100) rescaled from the unrelated-phrase baseline to 0-100."""
    return max(0.0, (float(similarity) - _PHRASE_BASELINE) * 100.0 / (100.0 - _PHRASE_BASELINE))


def phrase_similarity_needed(confidence: float) -> float:
    """The rapidfuzz similarity that yields `confidence` (the inverse of phrase_confidence)."""
    return _PHRASE_BASELINE + min(confidence, 100.0) * (100.0 - _PHRASE_BASELINE) / 100.0


def score_agree(held: float, added: float) -> float:
    """Add a further piece of evidence to a score, with diminishing returns (never above 100)."""
    return held + (100.0 - held) * (added / 100.0) * _AGREEMENT


def cues_parse(lines: Iterable[str]) -> list[Cue]:
    groups: dict[str, tuple[str, ...]] = {}
    cues: list[Cue] = []
    for line in lines:
        if line.startswith("@"):
            name, *members = line[1:].split()
            groups[name] = tuple(members)
            continue
        label, weight, *pattern = line.split()
        anchored = bool(pattern) and pattern[0] == _ANCHOR
        body = pattern[1:] if anchored else pattern
        if label not in LABELS or not body or body[0] == _GAP:
            raise ValueError(f"bad cue line {line!r}")
        steps: list[frozenset[str] | None] = []
        words: list[str] = []
        for token in body:
            if token == _GAP:
                steps.append(None)
                continue
            if token.startswith("{") and token.endswith("}"):
                alternatives = groups[token[1:-1]]
            else:
                alternatives = tuple(text_normalise(token).split())
            words.extend(word for word in alternatives if word.isalpha())
            steps.append(frozenset(word_stem(word) for word in alternatives))
        cues.append(
            Cue(
                label=label,
                weight=float(weight),
                pattern=" ".join(pattern),
                steps=tuple(steps),
                anchored=anchored,
                words=tuple(words),
            )
        )
    return cues


def _data_lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def _command_core(normalised: str) -> str:
    return " ".join(word for word in normalised.split() if word not in _COMMAND_FILLER)


@lru_cache(maxsize=1)
def phrase_bank_default() -> PhraseBank:
    return PhraseBank.load(PHRASES_DIR)


@lru_cache(maxsize=256)
def phrase_bank_for_avatar(extra: tuple[tuple[str, str], ...]) -> PhraseBank:
    """The default bank plus an avatar's extra (mode, text) phrases; cached by the tuple."""
    default = phrase_bank_default()
    if not extra:
        return default
    for mode, _ in extra:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} in extra phrases")
    return default.extended(extra)


def intent_match(text: str, *, bank: PhraseBank, settings: RouterSettings | None = None) -> IntentMatch:
    """The mode `text` points to (None: neutral), with the score and the phrase or cue that won."""
    return _intent_match_query(bank.query_prepare(text), bank=bank, settings=settings or _DEFAULT_SETTINGS)


def _intent_match_query(query: _Query, *, bank: PhraseBank, settings: RouterSettings) -> IntentMatch:
    if query.content_free:
        return IntentMatch(
            mode=None,
            score=0.0,
            matched=None,
            scores=dict.fromkeys(LABELS, 0.0),
            content_free=True,
            letters=query.letters,
        )
    cues = bank.cue_evidence(query)
    phrases = bank.phrase_evidence(query)
    combined = {label: evidence_combine(cues.get(label), phrases.get(label)) for label in LABELS}
    if not query.personal:
        for mode in MODES:
            combined[mode] = Evidence(combined[mode].score * _IMPERSONAL_FACTOR, combined[mode].matched)
    scores = {label: round(combined[label].score, 1) for label in LABELS}
    best = max(MODES, key=lambda mode: scores[mode])
    if scores[best] >= settings.point_threshold and scores[best] >= scores[NEUTRAL] + settings.neutral_margin:
        return IntentMatch(
            mode=best, score=scores[best], matched=combined[best].matched, scores=scores, letters=query.letters
        )
    return IntentMatch(
        mode=None, score=scores[NEUTRAL], matched=combined[NEUTRAL].matched, scores=scores, letters=query.letters
    )


def evidence_combine(cue: Evidence | None, phrase: Evidence | None) -> Evidence:
    """One label's score: the stronger evidence, raised a little when the other agrees."""
    if cue is None and phrase is None:
        return Evidence(0.0, None)
    if cue is None or phrase is None:
        held = cue or phrase
        assert held is not None
        return held
    strong, weak = (cue, phrase) if cue.score >= phrase.score else (phrase, cue)
    return Evidence(score_agree(strong.score, weak.score), strong.matched)


def route_message(
    text: str,
    *,
    current_mode: str,
    locked: bool,
    bank: PhraseBank,
    intimate_block: str | None = None,
    settings: RouterSettings | None = None,
) -> RouteDecision:
    """The mode this turn runs in, and why.

    In order: an explicit command always wins (and sets or releases the lock); a locked
    conversation stays put; a content-free or very short message stays put; otherwise the
    conversation switches only when the pointed mode clears `switch_threshold` and beats the
    current mode's score by `switch_margin`. Intimate mode is never entered while
    `intimate_block` holds a reason code, and a conversation found in it falls back to secretary.
    """
    if current_mode not in MODES:
        raise ValueError(f"unknown current mode {current_mode!r}")
    settings = settings or router_settings_default()
    decision = _route_decide(text, current_mode, locked, bank, intimate_block, settings)
    if decision.mode == Mode.INTIMATE and intimate_block is not None:
        return replace(
            decision,
            mode=Mode.SECRETARY,
            switch=current_mode != Mode.SECRETARY,
            blocked=Mode.INTIMATE,
            blocked_reason=intimate_block,
        )
    return decision


def _route_decide(
    text: str,
    current: str,
    locked: bool,
    bank: PhraseBank,
    intimate_block: str | None,
    settings: RouterSettings,
) -> RouteDecision:
    def decision(
        *,
        mode: str,
        pointed: str | None,
        score: float,
        matched: str | None,
        source: str,
        lock: bool | None = None,
        blocked: bool = False,
    ) -> RouteDecision:
        return RouteDecision(
            mode=mode,
            previous=current,
            pointed=pointed,
            score=score,
            matched=matched,
            switch=mode != current,
            source=source,
            lock=lock,
            blocked=Mode.INTIMATE if blocked else None,
            blocked_reason=intimate_block if blocked else None,
        )

    query = bank.query_prepare(text)
    command = bank.command_find(text, threshold=settings.command_threshold, query=query)
    if command is not None:
        target, phrase = command
        if target == AUTO:
            return decision(mode=current, pointed=None, score=100.0, matched=phrase, source=SOURCE_COMMAND, lock=False)
        if target == Mode.INTIMATE and intimate_block is not None:
            return decision(
                mode=current, pointed=target, score=100.0, matched=phrase, source=SOURCE_COMMAND, blocked=True
            )
        return decision(mode=target, pointed=target, score=100.0, matched=phrase, source=SOURCE_COMMAND, lock=True)

    match = _intent_match_query(query, bank=bank, settings=settings)

    def stay(source: str, *, blocked: bool = False) -> RouteDecision:
        return decision(
            mode=current, pointed=match.mode, score=match.score, matched=match.matched, source=source, blocked=blocked
        )

    if locked:
        return stay(SOURCE_LOCK)
    if match.mode is None or match.content_free or match.letters < settings.min_chars:
        return stay(SOURCE_NONE)
    if match.mode == current:
        return stay(SOURCE_INTENT)
    clears = match.score >= settings.switch_threshold
    beats = match.score - match.scores.get(current, 0.0) >= settings.switch_margin
    if not (clears and beats):
        return stay(SOURCE_INTENT)
    if match.mode == Mode.INTIMATE and intimate_block is not None:
        return stay(SOURCE_INTENT, blocked=True)
    return decision(mode=match.mode, pointed=match.mode, score=match.score, matched=match.matched, source=SOURCE_INTENT)


def router_settings_default() -> RouterSettings:
    """The project's thresholds when Django is configured, the built-in defaults otherwise."""
    from django.conf import settings

    if settings.configured:
        return RouterSettings.from_django_settings()
    return _DEFAULT_SETTINGS


@dataclass(frozen=True)
class LabelMetrics:
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class IntentEvaluation:
    labels: tuple[LabelMetrics, ...]
    macro_f1: float
    false_switch: float  # share of neutral rows routed to a mode
    n: int


def intent_evaluate(
    rows: Iterable[tuple[str, str]], *, bank: PhraseBank, settings: RouterSettings | None = None
) -> IntentEvaluation:
    """Precision, recall and F1 per label of (text, label) rows; label is a mode or "neutral"."""
    settings = settings or _DEFAULT_SETTINGS
    true_positive = dict.fromkeys(LABELS, 0)
    predicted = dict.fromkeys(LABELS, 0)
    support = dict.fromkeys(LABELS, 0)
    n = 0
    for text, label in rows:
        if label not in LABELS:
            raise ValueError(f"unknown label {label!r}")
        guess = intent_match(text, bank=bank, settings=settings).mode or NEUTRAL
        n += 1
        support[label] += 1
        predicted[guess] += 1
        true_positive[guess] += guess == label
    metrics = []
    for label in LABELS:
        precision = true_positive[label] / predicted[label] if predicted[label] else 0.0
        recall = true_positive[label] / support[label] if support[label] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        metrics.append(LabelMetrics(label, precision, recall, f1, support[label]))
    neutral_routed = support[NEUTRAL] - true_positive[NEUTRAL]
    return IntentEvaluation(
        labels=tuple(metrics),
        macro_f1=sum(metric.f1 for metric in metrics) / len(metrics),
        false_switch=neutral_routed / support[NEUTRAL] if support[NEUTRAL] else 0.0,
        n=n,
    )


_DEFAULT_SETTINGS = RouterSettings()
