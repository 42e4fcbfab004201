"""The crisis detector: whether a user's recent messages signal suicidal ideation or self-harm.

Pure: values in, an assessment out. No ORM and no I/O at call time; the packaged phrase
files (`safety/phrases/`) are read and compiled once per process, on first use.

How a message is read (docs/safety.md has the figures):

1. Normalised: lower case, contractions expanded ("don't" -> "do not", "wanna" -> "want
   to"), a few chat spellings mapped ("kms", "unalive"), punctuation dropped; split into
   clauses at sentence ends and at "but".
2. Each clause is matched against the crisis bank (`phrases/crisis.txt`: weighted phrases
   in four categories, explicit ideation, implicit hopelessness and farewell, plans and
   means, self-harm) with rapidfuzz `partial_ratio`, so a phrase is found inside a longer
   clause and through a typo ("kil myself").
3. The words around each match change its weight (`phrases/modifiers.txt`): a negation just
   before it ("i would never kill myself"), a figure of speech in the clause ("i want to die
   lol", "if i have to sit through this meeting i'll die"), fiction or a question about the
   idea ("my character kills herself in chapter 3"), someone else ("my friend wants to kill
   himself"), the past ("i used to self harm").
4. A message's score joins its matches like independent evidence: 1 - prod(1 - weight),
   so two implicit signals ("i'm a burden" + "nobody would miss me") add up to a crisis.
5. The conversation's recent user messages count too, at a decaying weight: a crisis that
   builds over several messages is flagged once the newest message adds its own signal;
   a calm newest message is not flagged by what came before.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

PHRASES_DIR = Path(__file__).resolve().parent / "phrases"

# A message at or above this score is a crisis; docs/safety.md gives the measured trade-off.
CRISIS_THRESHOLD = 0.45
# How much each earlier user message counts, newest first (the newest message itself is 1.0).
CONTEXT_DECAY = (0.6, 0.4, 0.3, 0.2)
# The newest message must carry at least this much signal of its own for context to flag it.
CONTEXT_MIN_OWN = 0.25
# A phrase matches when its words occur in order with at most MAX_GAP other words between
# them ("i really just want to die"); a word of TYPO_MIN_LENGTH letters or more that is not in
# the bank is read as the bank's word one edit away, if any ("suicdal", "myslef").
MAX_GAP = 2
TYPO_MIN_LENGTH = 6
# What a modifier does to a match's weight.
MODIFIER_FACTORS: dict[str, float] = {
    "negation": 0.15,
    "figurative": 0.2,
    "fiction": 0.15,
    "hypothetical": 0.3,
    "third_person": 0.35,
    "reported": 0.2,
    "past": 0.4,
    "context": 0.3,  # implicit phrases only
}
NEGATION_WINDOW = 3  # words before the phrase where a negation counts
UNCERTAINTY_WINDOW = 5  # "not sure how much longer i can go on": doubt, not a denial
# Phrases of hope that a negation turns into the crisis ("no reason to live", "no future").
NEGATION_AFFIRMS = frozenset({"reason", "point", "will", "future", "hope", "way", "meaning", "purpose", "sense"})
FIRST_PERSON = frozenset({"i", "me", "my", "myself", "mine"})
MAX_CHARS = 4000  # longer messages are read up to here (the turn's own limit is lower)

_CONTRACTIONS: dict[str, str] = {
    "n't": " not",
    "'m": " am",
    "'re": " are",
    "'ve": " have",
    "'ll": " will",
    "'d": " would",
}
_WORD_MAP: dict[str, str] = {
    "im": "i am",
    "ive": "i have",
    "dont": "do not",
    "didnt": "did not",
    "doesnt": "does not",
    "cant": "can not",
    "cannot": "can not",
    "wont": "will not",
    "wouldnt": "would not",
    "couldnt": "could not",
    "isnt": "is not",
    "wasnt": "was not",
    "wanna": "want to",
    "gonna": "going to",
    "gotta": "have to",
    "whats": "what is",
    "thats": "that is",
    "theres": "there is",
    "u": "you",
    "ur": "your",
    "ppl": "people",
    "idk": "i do not know",
    "idc": "i do not care",
    "rn": "right now",
    "bc": "because",
    "cuz": "because",
    "sh": "self harm",
    "kil": "kill",
    "unalive": "unalive",
    "sewerslide": "suicide",
    "suicde": "suicide",
    "anymore": "anymore",
    "any more": "anymore",
}
_IRREGULAR: dict[str, str] = {"dying": "die", "died": "die", "dies": "die", "took": "take", "taken": "take"}
_LAUGHING = str.maketrans({"😂": " lol ", "🤣": " lol ", "💀": " lol ", "😭": " lol "})
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u02bc": "'"})
# A sentence whose end lost its punctuation ("i lost all hopeI don't know", a title run into
# its text): a lower-case letter straight before a capitalised word marks a clause end.
_GLUED_SENTENCE = re.compile(r"(?<=[a-z])(?=I\b|I'|[A-Z][a-z])")
# A swear word written with a star or a sign in it ("sh*t", "f#ck") is no word of the bank:
# "sh*t" must not read as "sh" (self harm).
_CENSORED = re.compile(r"\b[a-z]+[*#@$%!]+[a-z]*")
_CLAUSE_SPLIT = re.compile(r"[.!?;:\n\r]+|,\s*but\s|\sbut\s|\s+-\s+")
_IS = re.compile(r"\b(it|that|what|there|here|he|she|who|everything|nothing|life)'s\b")
_CONTRACTION = re.compile(r"(n't|'m|'re|'ve|'ll|'d)\b")
_NON_WORD = re.compile(r"[^a-z0-9 ]+")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Phrase:
    text: str
    weight: float
    category: str


@dataclass(frozen=True, slots=True)
class Match:
    """One phrase found in one message: what it matched, how closely, and what changed its weight."""

    phrase: str
    category: str
    similarity: float
    weight: float  # after modifiers
    modifiers: tuple[str, ...] = ()
    message_index: int = 0  # 0 = the newest message, 1 the one before...


@dataclass(frozen=True, slots=True)
class CrisisAssessment:
    """The detector's answer for a conversation's recent user messages."""

    crisis: bool
    score: float  # 0..1, the newest message with its context
    own_score: float  # the newest message alone
    matches: tuple[Match, ...]  # strongest first

    @property
    def matched(self) -> list[str]:
        """The phrases that counted, strongest first, for logs and the `crisis_check` output."""
        seen: list[str] = []
        for match in self.matches:
            label = match.phrase if not match.modifiers else f"{match.phrase} ({', '.join(match.modifiers)})"
            if label not in seen:
                seen.append(label)
        return seen

    def as_dict(self) -> dict[str, object]:
        return {"crisis": self.crisis, "score": round(self.score, 3), "matched": self.matched}


NO_CRISIS = CrisisAssessment(crisis=False, score=0.0, own_score=0.0, matches=())


@dataclass(frozen=True, slots=True)
class CrisisBank:
    """The compiled phrase bank and modifiers: built once per process."""

    phrases: tuple[Phrase, ...]
    sequences: tuple[tuple[str, ...], ...]  # each phrase's words, in order
    phrase_words: tuple[frozenset[str], ...]  # the same as sets, for a quick check
    vocabulary: frozenset[str]
    long_words: tuple[str, ...]  # the vocabulary's words a typo may stand for
    modifiers: dict[str, tuple[str, ...]]
    by_anchor: dict[str, tuple[int, ...]]  # each phrase under its longest word: only those present are tried


def text_normalise(text: str) -> str:
    """Lower case, contractions expanded, punctuation dropped, spaces collapsed (one clause)."""
    text = _IS.sub(r"\1 is", text.lower().replace("can't", "can not").replace("won't", "will not"))
    text = _CONTRACTION.sub(lambda m: _CONTRACTIONS[m.group(1)], text)
    text = _NON_WORD.sub(" ", text.replace("'", ""))
    words = [_WORD_MAP.get(word, word) for word in text.split()]
    return " ".join(words).replace("my self", "myself").replace("kil myself", "kill myself")


def clauses_split(text: str) -> list[str]:
    """A message as normalised clauses, in order."""
    text = _GLUED_SENTENCE.sub(". ", unicodedata.normalize("NFKC", text[:MAX_CHARS]))
    text = _CENSORED.sub(" ", text.translate(_APOSTROPHES).translate(_LAUGHING).lower())
    clauses = (text_normalise(part) for part in _CLAUSE_SPLIT.split(text))
    return [clause for clause in clauses if clause]


def _lines(name: str) -> list[list[str]]:
    rows: list[list[str]] = []
    for line in (PHRASES_DIR / name).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append([part.strip() for part in line.split("|")])
    return rows


@lru_cache(maxsize=1)
def crisis_bank_default() -> CrisisBank:
    """The packaged bank, read and compiled on first use."""
    # Phrases that stem alike ("kill myself", "killing myself") are one phrase: the strongest weight.
    unique: dict[tuple[str, ...], Phrase] = {}
    for weight, category, text in _lines("crisis.txt"):
        phrase = Phrase(text=text_normalise(text), weight=float(weight), category=category)
        key = tuple(word_stem(w) for w in phrase.text.split())
        if key not in unique or unique[key].weight < phrase.weight:
            unique[key] = phrase
    phrases = tuple(unique.values())
    modifiers: dict[str, list[str]] = {}
    for kind, words in _lines("modifiers.txt"):
        modifiers.setdefault(kind, []).append(text_normalise(words.translate(_LAUGHING)))
    vocabulary = frozenset(word for phrase in phrases for word in phrase.text.split())
    by_anchor: dict[str, list[int]] = {}
    for index, phrase in enumerate(phrases):
        by_anchor.setdefault(word_stem(max(phrase.text.split(), key=len)), []).append(index)
    return CrisisBank(
        phrases=phrases,
        sequences=tuple(tuple(word_stem(w) for w in p.text.split()) for p in phrases),
        phrase_words=tuple(frozenset(word_stem(w) for w in p.text.split()) for p in phrases),
        vocabulary=vocabulary,
        long_words=tuple(sorted(word for word in vocabulary if len(word) >= TYPO_MIN_LENGTH)),
        modifiers={kind: tuple(words) for kind, words in modifiers.items()},
        by_anchor={word: tuple(indices) for word, indices in by_anchor.items()},
    )


def _contains(haystack: str, needle: str) -> bool:
    return f" {needle} " in f" {haystack} "


@lru_cache(maxsize=65536)
def word_stem(word: str) -> str:
    """A crude stem, the same for a phrase's words and a message's: "ending", "ended", "ends" -> "end"."""
    word = _IRREGULAR.get(word, word)
    for suffix in ("ing", "ed", "es", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)]
    return word


def _clause_matches(clause: str, bank: CrisisBank, message_index: int) -> list[Match]:
    words = [word_stem(_word_correct(word, bank)) for word in clause.split()]
    present = frozenset(words)
    candidates = sorted({index for word in present for index in bank.by_anchor.get(word, ())})
    matches: list[Match] = []
    in_clause: dict[str, tuple[str, ...]] | None = None  # the clause's modifiers, read once if any phrase matches
    for index in candidates:
        if not bank.phrase_words[index].issubset(present):
            continue
        found = _words_find(words, bank.sequences[index])
        if found is None:
            continue
        start, end = found
        phrase = bank.phrases[index]
        original = clause.split()
        span = " ".join(original[start:end])
        similarity = fuzz.ratio(phrase.text, span)
        if in_clause is None:
            in_clause = _clause_modifiers(clause, bank)
        kinds = _modifiers_found(bank, phrase, span, " ".join(original[:start]), in_clause)
        weight = phrase.weight * (0.5 + similarity / 200.0)
        for kind in kinds:
            weight *= MODIFIER_FACTORS[kind]
        matches.append(Match(phrase.text, phrase.category, round(similarity, 1), weight, kinds, message_index))
    return matches


def _words_find(words: Sequence[str], sequence: tuple[str, ...]) -> tuple[int, int] | None:
    """Where the phrase's words occur in order, with at most MAX_GAP other words in between in all."""
    first = sequence[0]
    for start, word in enumerate(words):
        if word != first:
            continue
        position, gaps = start + 1, 0
        for wanted in sequence[1:]:
            while position < len(words) and words[position] != wanted and gaps < MAX_GAP:
                position, gaps = position + 1, gaps + 1
            if position >= len(words) or words[position] != wanted:
                break
            position += 1
        else:
            return start, position
    return None


def _word_correct(word: str, bank: CrisisBank) -> str:
    """The bank's word a typo stands for ("suicdal" -> "suicidal"); other words unchanged."""
    if word in bank.vocabulary or len(word) < TYPO_MIN_LENGTH:
        return word
    return _word_correct_cached(word, bank.long_words)


@lru_cache(maxsize=65536)
def _word_correct_cached(word: str, long_words: tuple[str, ...]) -> str:
    found = process.extractOne(word, long_words, scorer=OSA.distance, score_cutoff=1)
    return found[0] if found is not None else word


CLAUSE_MODIFIERS = ("figurative", "fiction", "hypothetical", "past", "context")  # looked for in the whole clause


def _clause_modifiers(clause: str, bank: CrisisBank) -> dict[str, tuple[str, ...]]:
    """The clause-wide modifiers it contains, by kind."""
    padded = f" {clause} "
    return {kind: tuple(w for w in bank.modifiers.get(kind, ()) if f" {w} " in padded) for kind in CLAUSE_MODIFIERS}


def _modifiers_found(
    bank: CrisisBank, phrase: Phrase, span: str, before: str, in_clause: dict[str, tuple[str, ...]]
) -> tuple[str, ...]:
    kinds: list[str] = []
    window = " ".join(before.split()[-NEGATION_WINDOW:])
    phrase_words = phrase.text.split()
    # "no reason to live", "no point in life": a negation before a phrase of hope is the crisis itself.
    if phrase_words[0] not in NEGATION_AFFIRMS:
        negators = bank.modifiers.get("negation", ())
        span_negated = any(_contains(span, n) and n not in phrase_words for n in ("not", "never", "no"))
        # "i do not know if i can carry on", "not sure i want to live": the negation is of knowing, not of the phrase.
        doubt_window = " ".join(before.split()[-UNCERTAINTY_WINDOW:])
        doubting = any(_contains(doubt_window, u) for u in bank.modifiers.get("uncertain", ()))
        if span_negated or (not doubting and any(_contains(window, n) for n in negators)):
            kinds.append("negation")
    if any(_contains(window, w) for w in bank.modifiers.get("reported", ())):
        kinds.append("reported")  # "someone told me to kill myself"
    # Someone else's crisis: only for a phrase that does not name the speaker, the other person named before it.
    if not FIRST_PERSON.intersection(phrase_words) and any(
        _contains(before, w) for w in bank.modifiers.get("third_person", ())
    ):
        kinds.append("third_person")
    # Words of the phrase itself ("no longer" in "no longer want to live") are not a modifier of it.
    for kind in CLAUSE_MODIFIERS:
        if kind == "context" and phrase.category != "implicit":
            continue
        if any(not _contains(phrase.text, w) for w in in_clause[kind]):
            kinds.append(kind)
    return tuple(kinds)


def message_matches(text: str, *, bank: CrisisBank | None = None, message_index: int = 0) -> list[Match]:
    """Every crisis phrase in one message, with its weight after modifiers; at most one per phrase."""
    if bank is None:
        # A turn reads its earlier messages again: the default bank's answers are kept per process.
        cached = _message_matches_default(text)
        return [m if m.message_index == message_index else replace(m, message_index=message_index) for m in cached]
    return _message_matches(text, bank, message_index)


@lru_cache(maxsize=4096)
def _message_matches_default(text: str) -> tuple[Match, ...]:
    return tuple(_message_matches(text, crisis_bank_default(), 0))


def _message_matches(text: str, bank: CrisisBank, message_index: int) -> list[Match]:
    best: dict[str, Match] = {}
    for clause in clauses_split(text):
        for match in _clause_matches(clause, bank, message_index):
            held = best.get(match.phrase)
            if held is None or match.weight > held.weight:
                best[match.phrase] = match
    return sorted(best.values(), key=lambda m: -m.weight)


def score_join(weights: Sequence[float]) -> float:
    """Independent evidence: 1 - prod(1 - w). Overlapping phrases (one inside another) count once."""
    remaining = 1.0
    for weight in weights:
        remaining *= 1.0 - min(max(weight, 0.0), 1.0)
    return 1.0 - remaining


def _independent(matches: Sequence[Match]) -> list[Match]:
    """Drop a match whose phrase lies inside a stronger match's phrase ("want to die" in "i want to die").

    Compared stemmed, as they were matched: "giving up" lies inside "i give up".
    """
    kept: list[tuple[str, Match]] = []
    for match in matches:
        stems = _stems(match.phrase)
        if any(_contains(held, stems) or _contains(stems, held) for held, _ in kept):
            continue
        kept.append((stems, match))
    return [match for _, match in kept]


@lru_cache(maxsize=2048)
def _stems(phrase: str) -> str:
    return " ".join(word_stem(word) for word in phrase.split())


def crisis_assess(messages: Sequence[str], *, bank: CrisisBank | None = None) -> CrisisAssessment:
    """Assess a conversation's recent user messages, oldest first; the last one is the newest."""
    if not messages:
        return NO_CRISIS
    newest = _independent(message_matches(messages[-1], bank=bank))
    own = score_join([m.weight for m in newest])
    earlier: list[Match] = []
    for age, text in enumerate(reversed(messages[:-1]), start=1):
        if age > len(CONTEXT_DECAY):
            break
        for match in _independent(message_matches(text, bank=bank, message_index=age)):
            earlier.append(match)
    score = own
    if own >= CONTEXT_MIN_OWN and earlier:
        decayed = [m.weight * CONTEXT_DECAY[m.message_index - 1] for m in earlier]
        score = score_join([own, *decayed])
    matches = tuple(sorted([*newest, *earlier], key=lambda m: (m.message_index, -m.weight)))
    return CrisisAssessment(crisis=score >= CRISIS_THRESHOLD, score=score, own_score=own, matches=matches)


@dataclass(frozen=True, slots=True)
class CrisisEvaluation:
    """The detector on labelled conversations: recall on crisis rows, false alarms on the others."""

    n: int
    true_positive: int
    false_positive: int
    false_negative: int
    true_negative: int

    @property
    def precision(self) -> float:
        flagged = self.true_positive + self.false_positive
        return self.true_positive / flagged if flagged else 0.0

    @property
    def recall(self) -> float:
        crises = self.true_positive + self.false_negative
        return self.true_positive / crises if crises else 0.0

    @property
    def false_positive_rate(self) -> float:
        calm = self.false_positive + self.true_negative
        return self.false_positive / calm if calm else 0.0


def crisis_evaluate(rows: Sequence[tuple[Sequence[str], bool]], *, bank: CrisisBank | None = None) -> CrisisEvaluation:
    """`rows`: (a conversation's user messages oldest first, whether it is a crisis)."""
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for messages, is_crisis in rows:
        flagged = crisis_assess(messages, bank=bank).crisis
        key = ("tp" if flagged else "fn") if is_crisis else ("fp" if flagged else "tn")
        counts[key] += 1
    return CrisisEvaluation(
        n=len(rows),
        true_positive=counts["tp"],
        false_positive=counts["fp"],
        false_negative=counts["fn"],
        true_negative=counts["tn"],
    )


def crisis_cache_clear() -> None:
    """Forget the per-process answers on messages already read (benchmarks and tests)."""
    _message_matches_default.cache_clear()
