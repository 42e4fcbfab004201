"""Reads of recall: the earlier messages and remembered facts that bear on a new message.

`recall_search` is what the turn asks (conversations/turns/prepare.py) and what
`manage.py recall_eval` measures. It searches the user's documents (recall.models) with the
database's own full-text search and BM25 ranking (SQLite: FTS5's `bm25()`; PostgreSQL: BM25
computed over the GIN-matched rows, since `ts_rank_cd` knows no term rarity), then reranks
the best candidates with what a turn knows and a search engine does not: who is speaking
("I" is the user, "you" the avatar), and the dates the message names. Never another
user's messages; another avatar's only when the user shares memory between avatars.
docs/memory.md ("Recall") has the measurements behind each choice.
"""

import functools
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

from django.core.cache import cache
from django.db import connection
from django.db.models import Avg, Count

from memory.models import Memory
from recall.models import RecallDocument
from recall.text import DateSpan, RecallQuery, Speakers, match_expression, query_parse, words

CANDIDATES = 50  # rows the database ranks; the rerank orders these
DEFAULT_LIMIT = 10
FACTS_LIMIT = 5
BODY_WEIGHT, SPEAKER_WEIGHT, CONTEXT_WEIGHT = 1.0, 1.0, 0.3
SPEAKER_BOOST = 1.6  # a message by the person the new message is about
DATE_BOOST = 1.5  # a message from a time the new message names
K1, B = 1.2, 0.75
TIME_BOOST = 1.3  # a message that says when, for a question asking when
SESSION_WEIGHT = 0.3  # up to x1.3 for a message of the day whose best message matches best


@dataclass(frozen=True, slots=True)
class RecallScope:
    user_id: int
    avatar_id: int | None  # None: every avatar of the user (they share memory between avatars)
    conversation_id: int
    exclude_ids: tuple[int, ...] = ()  # already in the prompt (the recent window)


@dataclass(frozen=True, slots=True)
class RecalledMessage:
    message_id: int
    conversation_id: int
    role: str
    content: str
    created_at: datetime
    score: float
    reason: str


@dataclass(frozen=True, slots=True)
class RecalledFact:
    memory_id: int
    text: str
    score: float
    reason: str


@dataclass(frozen=True, slots=True)
class Recall:
    messages: tuple[RecalledMessage, ...] = ()
    facts: tuple[RecalledFact, ...] = ()
    terms: tuple[str, ...] = ()
    took_ms: float = 0.0
    error: str = ""  # an exception's class name when the search failed (the turn goes on without it)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_record(self, *, used: Sequence[int] = (), used_facts: Sequence[int] = ()) -> dict[str, Any]:
        """What the reply stores: ids, scores and reasons, no text (`used`: what fitted the prompt)."""
        return {
            "terms": list(self.terms),
            "took_ms": round(self.took_ms, 2),
            "error": self.error,
            "messages": [
                {
                    "id": m.message_id,
                    "conversation_id": m.conversation_id,
                    "score": m.score,
                    "reason": m.reason,
                    "in_prompt": m.message_id in used,
                }
                for m in self.messages
            ],
            "facts": [
                {"id": f.memory_id, "score": f.score, "reason": f.reason, "in_prompt": f.memory_id in used_facts}
                for f in self.facts
            ],
        }


def recall_search(
    *,
    scope: RecallScope,
    text: str,
    speakers: Speakers,
    context: tuple[str, ...] = (),
    today: date,
    limit: int = DEFAULT_LIMIT,
    facts_limit: int = FACTS_LIMIT,
) -> Recall:
    """The `limit` earlier messages and `facts_limit` remembered facts most relevant to `text`, best first."""
    started = time.perf_counter()
    query = query_parse(text, speakers=speakers, context=context, today=today)
    if not query.terms:
        return Recall(took_ms=(time.perf_counter() - started) * 1000)
    rows = _candidates_postgres(scope, query) if connection.vendor == "postgresql" else _candidates_sqlite(scope, query)
    messages = [_with_words(message, query) for message in _reranked(rows, query)[:limit]]
    facts = _facts_ranked(scope, query)[:facts_limit] if facts_limit else []
    return Recall(
        messages=tuple(messages),
        facts=tuple(facts),
        terms=query.terms,
        took_ms=(time.perf_counter() - started) * 1000,
    )


# --- candidates: the database ranks ------------------------------------------------------------


def _candidates_sqlite(scope: RecallScope, query: RecallQuery) -> list[tuple[Any, ...]]:
    avatar_filter = "AND d.avatar_id = %s" if scope.avatar_id is not None else ""
    placeholders = ", ".join(["%s"] * len(scope.exclude_ids))
    excluded = f"AND m.id NOT IN ({placeholders})" if placeholders else ""
    sql = f"""
        SELECT m.id, -bm25(recall_fts, {BODY_WEIGHT}, {SPEAKER_WEIGHT}, {CONTEXT_WEIGHT}) AS score,
               m.conversation_id, m.role, m.content, m.created_at
        FROM recall_fts f
        JOIN recall_recalldocument d ON d.message_id = f.rowid
        JOIN conversations_message m ON m.id = d.message_id
        WHERE recall_fts MATCH %s AND d.user_id = %s {avatar_filter}
          AND NOT m.superseded AND m.status <> 'streaming' {excluded}
        ORDER BY score DESC LIMIT {CANDIDATES}
    """  # noqa: S608 - only numbers and placeholders are formatted in
    params: list[Any] = [match_expression(query.terms), scope.user_id]
    if scope.avatar_id is not None:
        params.append(scope.avatar_id)
    params.extend(scope.exclude_ids)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


# Per word of the message: its lexeme (PostgreSQL's `english` stemmer) and how many of the
# user's documents hold it: read from `recall_recalllexeme` (counted in the background), or
# where it is not there yet (a word new since the last count) counted here; up to COMMON_DF.
# One of these per word, each word a constant, so that the planner folds `plainto_tsquery`
# and picks the GIN index for a rare lexeme and stops early on a common one.
_POSTGRES_DF_SQL = """
SELECT {position}, stem.lexeme, COALESCE((
    SELECT least(sum(l.documents), %(common)s) FROM recall_recalllexeme l
    WHERE l.user_id = %(user_id)s AND (%(avatar_id)s::bigint IS NULL OR l.avatar_id = %(avatar_id)s::bigint)
      AND l.lexeme_hash = left(md5(stem.lexeme), 16)
), (
    SELECT count(*) FROM (
        SELECT 1 FROM recall_recalldocument d
        WHERE d.user_id = %(user_id)s AND (%(avatar_id)s::bigint IS NULL OR d.avatar_id = %(avatar_id)s::bigint)
          AND d.search @@ plainto_tsquery('english', {word})
        LIMIT %(common)s
    ) counted
))
FROM (SELECT (SELECT string_agg(lexeme, ' ') FROM unnest(to_tsvector('english', {word}))) AS lexeme) stem
"""

# Two stages. The candidates (at most SCORED_MAX, the newest first) are ranked in C: each
# lexeme's rarity (idf) times `ts_rank` of that lexeme alone (it saturates with the weighted
# frequency and is normalised by length, flag 1). The best RESCORED of them get BM25 proper:
# each lexeme's weighted frequency (body, speaker, context) read from the unnested tsvector,
# which costs too much to do for every candidate.
_POSTGRES_SQL = """
WITH df(lexeme, idf) AS (
    SELECT * FROM unnest(%(lexemes)s::text[], %(idfs)s::float8[])
),
ranked AS (
    SELECT message_id, length, search FROM (
        SELECT d.message_id, d.length, (d.search || ''::tsvector) AS search  -- read (detoasted) once, not per lexeme
        FROM recall_recalldocument d
        WHERE d.user_id = %(user_id)s AND (%(avatar_id)s::bigint IS NULL OR d.avatar_id = %(avatar_id)s::bigint)
          AND d.search @@ %(finders)s::tsquery
        ORDER BY d.message_id DESC
        LIMIT %(scored)s
    ) d
    ORDER BY ({score}) DESC
    LIMIT %(rescored)s
),
scored AS (
    SELECT r.message_id, sum(
        df.idf * (tf.tf * (%(k1)s + 1)) / (tf.tf + %(k1)s * (1 - %(b)s + %(b)s * r.length / %(avgdl)s))
    ) AS score
    FROM ranked r
    CROSS JOIN LATERAL unnest(r.search) u
    JOIN df ON df.lexeme = u.lexeme
    CROSS JOIN LATERAL (
        SELECT sum(CASE w WHEN 'A' THEN %(body)s WHEN 'B' THEN %(speaker)s ELSE %(context)s END) AS tf
        FROM unnest(u.weights) w
    ) tf
    GROUP BY r.message_id
)
SELECT m.id, sc.score, m.conversation_id, m.role, m.content, m.created_at
FROM scored sc JOIN conversations_message m ON m.id = sc.message_id
WHERE NOT m.superseded AND m.status <> 'streaming' AND NOT (m.id = ANY(%(exclude)s))
ORDER BY sc.score DESC LIMIT %(limit)s
"""
_TERM_SCORE = "%(idf_{index})s * ts_rank(%(weights)s::float4[], search, %(lexeme_{index})s::tsquery, 1)"

# A lexeme found in this many documents is common: it adds to a candidate's score but does not
# find candidates (the rarer ones do; all of them when none is rare). Counting stops there.
COMMON_DF = 100
SCORED_MAX = 300  # candidates scored at most, the newest first (for a message of only common words)
RESCORED = 50  # the best of them by ts_rank, scored again by BM25
STATS_SECONDS = 600  # the document count, average length and lexeme counts of a user's documents, cached


def _candidates_postgres(scope: RecallScope, query: RecallQuery) -> list[tuple[Any, ...]]:
    owner = {"user_id": scope.user_id, "avatar_id": scope.avatar_id}
    with connection.cursor() as cursor:
        frequencies = _frequencies(cursor, scope, query.terms)
        rare = [lexeme for lexeme, found in frequencies if 0 < found < COMMON_DF]
        present = [lexeme for lexeme, found in frequencies if found > 0]
        finders = rare or present
        if not finders:
            return []
        count, average = _collection_stats(scope)
        # The cached count may be older than the lexeme counts: never fewer documents than hold a lexeme.
        total = float(max(count, 1, *(found for _, found in frequencies)))
        params: dict[str, Any] = {
            **owner,
            "finders": " | ".join(_tsquery_literal(lexeme) for lexeme in finders),
            # ts_rank's weights are listed D, C, B, A: unused, context, speaker, body.
            "weights": [0.0, CONTEXT_WEIGHT, SPEAKER_WEIGHT, BODY_WEIGHT],
            "scored": SCORED_MAX,
            "rescored": RESCORED,
            "avgdl": float(max(average, 1.0)),
            "k1": K1,
            "b": B,
            "body": BODY_WEIGHT,
            "speaker": SPEAKER_WEIGHT,
            "context": CONTEXT_WEIGHT,
            "exclude": list(scope.exclude_ids),
            "limit": CANDIDATES,
        }
        present_frequencies = [(lexeme, found) for lexeme, found in frequencies if found > 0]
        for index, (lexeme, found) in enumerate(present_frequencies):
            params[f"lexeme_{index}"] = _tsquery_literal(lexeme)
            params[f"idf_{index}"] = math.log(1 + (total - found + 0.5) / (found + 0.5))
        params["lexemes"] = [lexeme for lexeme, _ in present_frequencies]
        params["idfs"] = [params[f"idf_{index}"] for index in range(len(present_frequencies))]
        score = " + ".join(_TERM_SCORE.format(index=index) for index in range(len(present_frequencies)))
        cursor.execute(_POSTGRES_SQL.format(score=score), params)
        return cursor.fetchall()


def _frequencies(cursor: Any, scope: RecallScope, terms: tuple[str, ...]) -> list[tuple[str, float]]:
    """Each term's lexeme and how many of the scope's documents hold it (up to COMMON_DF), one
    pair per distinct lexeme: cached for minutes, since they move slowly and only weigh the
    terms (a term found nowhere is asked again next time)."""
    keys = {term: f"recall:df:{scope.user_id}:{scope.avatar_id}:{term}" for term in terms}
    cached = cache.get_many(list(keys.values()))
    known: dict[str, tuple[str, float]] = {term: cached[key] for term, key in keys.items() if key in cached}
    missing = [term for term in terms if term not in known]
    if missing:
        counts = " UNION ALL ".join(
            f"({_POSTGRES_DF_SQL.format(position=index, word=f'%(word_{index})s')})" for index in range(len(missing))
        )
        params: dict[str, Any] = {"user_id": scope.user_id, "avatar_id": scope.avatar_id, "common": COMMON_DF}
        params.update({f"word_{index}": term for index, term in enumerate(missing)})
        cursor.execute(counts, params)
        fresh = {
            missing[position]: (lexeme, float(found))
            for position, lexeme, found in cursor.fetchall()
            if lexeme and " " not in lexeme  # a stopword to PostgreSQL has none; a compound is left out
        }
        cache.set_many({keys[term]: pair for term, pair in fresh.items() if pair[1] > 0}, STATS_SECONDS)
        known.update(fresh)
    frequencies: dict[str, float] = {}
    for term in terms:
        if term in known:
            lexeme, found = known[term]
            frequencies[lexeme] = found
    return sorted(frequencies.items())


def _tsquery_literal(lexeme: str) -> str:
    """A lexeme as a tsquery operand, quoted as `quote_literal` would (no operator can slip in)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _collection_stats(scope: RecallScope) -> tuple[int, float]:
    """How many documents the user has (with this avatar) and their average length: BM25's N and avgdl.

    Cached for minutes: both move slowly, and counting them costs more than the search."""
    key = f"recall:stats:{scope.user_id}:{scope.avatar_id}"
    cached = cache.get(key)
    if cached is not None:
        return cached[0], cached[1]
    documents = RecallDocument.objects.filter(user_id=scope.user_id)
    if scope.avatar_id is not None:
        documents = documents.filter(avatar_id=scope.avatar_id)
    figures = documents.aggregate(count=Count("pk"), average=Avg("length"))
    stats = (int(figures["count"] or 0), float(figures["average"] or 1.0))
    cache.set(key, stats, STATS_SECONDS)
    return stats


# --- the rerank: what the turn knows ------------------------------------------------------------


def _reranked(rows: list[tuple[Any, ...]], query: RecallQuery) -> list[RecalledMessage]:
    about = _about_role(query)
    scored = []
    for message_id, score, conversation_id, role, content, created_at in rows:
        moment = _as_datetime(created_at)
        reasons = [f"bm25 {score:.2f}"]
        if about is not None and role == about:
            score *= SPEAKER_BOOST
            reasons.append(f"said by the {role}")
        if query.asks_when and _TIME_WORDS.search(content.lower()):
            score *= TIME_BOOST
            reasons.append("tells when")
        if query.dates and _dated_in(moment.date(), query.dates):
            score *= DATE_BOOST
            reasons.append("from the time named")
        scored.append((float(score), reasons, message_id, conversation_id, role, content, moment))
    factors = _day_factors([(conversation_id, moment, score) for score, _, _, conversation_id, _, _, moment in scored])
    recalled = []
    for (score, reasons, message_id, conversation_id, role, content, moment), factor in zip(
        scored, factors, strict=True
    ):
        reasons.append(f"its day x{factor:.2f}")
        recalled.append(
            RecalledMessage(
                message_id=message_id,
                conversation_id=conversation_id,
                role=role,
                content=content,
                created_at=moment,
                score=round(score * factor, 3),
                reason="; ".join(reasons),
            )
        )
    recalled.sort(key=lambda m: (-m.score, -m.message_id))
    return recalled


def _day_factors(candidates: list[tuple[int, datetime, float]]) -> list[float]:
    """Each candidate weighed by its session (its conversation's day): by the best score among the
    candidates of that day, relative to the best of all. An answer's day tends to match the
    question as a whole, and a near miss on the day of a strong match is worth more than one alone."""
    best_of_day: dict[tuple[int, date], float] = {}
    for conversation_id, moment, score in candidates:
        day = (conversation_id, moment.date())
        best_of_day[day] = max(best_of_day.get(day, 0.0), score)
    best = max(best_of_day.values(), default=0.0) or 1.0
    return [
        1 + SESSION_WEIGHT * best_of_day[(conversation_id, moment.date())] / best
        for conversation_id, moment, _ in candidates
    ]


def _with_words(message: RecalledMessage, query: RecallQuery) -> RecalledMessage:
    """The reason, with the words of the message that matched (worked out for the few kept only)."""
    matched = _matched_terms(query.terms, message.content)
    if not matched:
        return message
    return replace(message, reason=f"words: {', '.join(matched)}; {message.reason}")


_TIME_WORDS = re.compile(
    r"\b(yesterday|today|tonight|last|ago|next|week|weekend|month|year|monday|tuesday|wednesday|thursday|friday|saturday|sunday|january|february|march|april|june|july|august|september|october|november|december|since|recently|soon|tomorrow)\b"
)


def _about_role(query: RecallQuery) -> str | None:
    if query.about_user and not query.about_avatar:
        return "user"
    if query.about_avatar and not query.about_user:
        return "assistant"
    return None


def _dated_in(day: date, spans: tuple[DateSpan, ...]) -> bool:
    return any(span.holds(day) for span in spans)


def _as_datetime(value: datetime | str) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _matched_terms(terms: tuple[str, ...], content: str) -> list[str]:
    said = {_stem(word.split("'")[0]) for word in words(content)}
    return [term for term in terms if _stem(term) in said][:6]


@functools.lru_cache(maxsize=8192)
def _stem(word: str) -> str:
    """A crude stem for explaining and for the few facts: the database stems the messages properly."""
    for suffix in ("ings", "ing", "ies", "ied", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


# --- facts: few enough to rank here --------------------------------------------------------------


def _facts_ranked(scope: RecallScope, query: RecallQuery) -> list[RecalledFact]:
    memories = Memory.objects.filter(user_id=scope.user_id)
    if scope.avatar_id is not None:
        memories = memories.filter(avatar_id=scope.avatar_id)
    facts = [(pk, text, [_stem(word) for word in words(text)]) for pk, text in memories.values_list("id", "text")]
    if not facts:
        return []
    wanted = {_stem(term) for term in query.terms}
    frequency = {stem: sum(1 for _, _, stems in facts if stem in stems) for stem in wanted}
    average = sum(len(stems) for _, _, stems in facts) / len(facts) or 1.0
    ranked = []
    for pk, text, stems in facts:
        score = 0.0
        matched = []
        for stem in wanted:
            count = stems.count(stem)
            if not count:
                continue
            idf = math.log(1 + (len(facts) - frequency[stem] + 0.5) / (frequency[stem] + 0.5))
            score += idf * count * (K1 + 1) / (count + K1 * (1 - B + B * len(stems) / average))
            matched.append(stem)
        if score > 0:
            ranked.append(
                RecalledFact(
                    memory_id=pk, text=text, score=round(score, 3), reason="words: " + ", ".join(sorted(matched))
                )
            )
    ranked.sort(key=lambda f: (-f.score, -f.memory_id))
    return ranked


CONTEXT_TURNS = 2  # the user's last messages lend their words to a message with too few of its own


def recall_for_turn(
    *,
    user_id: int,
    avatar_id: int,
    conversation_id: int,
    across_avatars: bool,
    speakers: Speakers,
    text: str,
    window: Sequence[tuple[int, str, str]],
    today: date,
    limit: int = DEFAULT_LIMIT,
) -> Recall:
    """What a turn recalls for the new message `text`. `window`: (id, role, content) of the
    messages already in the prompt, oldest first; they are not recalled again."""
    scope = RecallScope(
        user_id=user_id,
        avatar_id=None if across_avatars else avatar_id,
        conversation_id=conversation_id,
        exclude_ids=tuple(message_id for message_id, _, _ in window),
    )
    context = tuple(content for _, role, content in window if role == "user")[-CONTEXT_TURNS:]
    return recall_search(scope=scope, text=text, speakers=speakers, context=context, today=today, limit=limit)
