"""What recall adds to a turn: `recall_for_turn` and the prompt section, at 10,000 stored messages.

    DATABASE_URL=postgres://... python -m bench.recall [--messages 10000] [--conversations 20] [--turns 300]

One user talks with one avatar across --conversations conversations holding --messages
messages between them (Zipf-distributed words, 8 to 40 a message, like chat), all indexed
as the turn's background task indexes them; then --turns new messages (questions made of
the same words, with stopwords) are each recalled exactly as a turn does before its prompt
is built (`conversations.turns.prepare.turn_recall`: the search, the rerank, the facts, the
section within RECALL_TOKEN_BUDGET). Everything runs in a transaction rolled back at the
end, on the configured database (migrated first; on PostgreSQL the two tables vacuumed first,
since an earlier run's rolled-back rows would slow this one). Prints p50, p90 and p99 in ms.
Figures: docs/performance.md, "Recall".
"""

import argparse
import os
import platform
import random
import secrets
import statistics
import time
from datetime import UTC, datetime, timedelta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    arguments = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "companion.settings")
    import django

    django.setup()
    from django.db import connection, transaction

    class Rollback(Exception):
        pass

    if connection.vendor == "postgresql":
        # Each run inserts and rolls back its documents: vacuum what an earlier run left, or it slows this one.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE recall_recalldocument")
            cursor.execute("VACUUM ANALYZE conversations_message")
    try:
        with transaction.atomic():
            timings = _run(arguments)
            raise Rollback
    except Rollback:
        pass
    timings.sort()
    p50 = statistics.median(timings)
    p90 = timings[int(len(timings) * 0.9)]
    p99 = timings[min(len(timings) - 1, int(len(timings) * 0.99))]
    print(
        f"database={connection.vendor} messages={arguments.messages} turns={arguments.turns} "
        f"cpus={os.cpu_count()} python={platform.python_version()} at={datetime.now(UTC):%Y-%m-%d %H:%M}Z"
    )
    print(f"recall_p50_ms={p50:.2f} recall_p90_ms={p90:.2f} recall_p99_ms={p99:.2f}")


def _vocabulary(rng: random.Random, size: int = 3000) -> list[str]:
    syllables = ["ka", "lo", "mi", "ra", "te", "su", "no", "vi", "da", "pe", "zo", "ri", "ba", "gu", "fe", "an", "el"]
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def _run(arguments: argparse.Namespace) -> list[float]:
    from django.contrib.auth.models import User
    from django.db import connection

    from accounts.models import Profile
    from avatars.models import Avatar
    from conversations.models import Conversation, Message, Role, Status
    from conversations.turns.prepare import HistoryRow, turn_conversation_get, turn_recall
    from core.modes import Mode
    from recall.services import recall_index_conversation, recall_lexemes_refresh
    from recall.text import Speakers

    rng = random.Random(arguments.seed)
    vocabulary = _vocabulary(rng)
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    fillers = ["i", "the", "a", "and", "you", "was", "my", "to", "it", "so"]

    def sentence(low: int, high: int) -> str:
        picked = rng.choices(vocabulary, weights=weights, k=rng.randint(low, high))
        return " ".join(word if rng.random() > 0.3 else f"{rng.choice(fillers)} {word}" for word in picked)

    suffix = secrets.token_hex(4)
    user = User.objects.create(username=f"bench-recall-{suffix}")
    Profile.objects.update_or_create(user=user, defaults={"display_name": "Sam"})
    avatar = Avatar.objects.create(owner=user, name="Ava", slug=f"bench-recall-{suffix}")
    per_conversation = arguments.messages // arguments.conversations
    start = datetime(2025, 1, 1, tzinfo=UTC)
    conversations = []
    for number in range(arguments.conversations):
        conversation = Conversation.objects.create(user=user, avatar=avatar)
        conversations.append(conversation)
        messages = Message.objects.bulk_create(
            Message(
                conversation=conversation,
                role=Role.USER if index % 2 == 0 else Role.ASSISTANT,
                content=sentence(8, 40),
                mode=Mode.SECRETARY,
                status=Status.COMPLETE,
            )
            for index in range(per_conversation)
        )
        for index, message in enumerate(messages):
            message.created_at = start + timedelta(days=number * 10, minutes=index)
        Message.objects.bulk_update(messages, ["created_at"], batch_size=1000)
        recall_index_conversation(conversation_id=conversation.pk)
    if connection.vendor == "postgresql":
        # Autovacuum would have analysed a real table by now; the planner picks the GIN index on these figures.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE recall_recalldocument")
            cursor.execute("ANALYZE conversations_message")
        # The stems' document counts, as the background keeps them (at most LEXEMES_SECONDS old).
        recall_lexemes_refresh(user_id=user.pk, avatar_id=avatar.pk, force=True)
    conversation = conversations[-1]
    plan_conversation = turn_conversation_get(user_id=user.pk, conversation_id=conversation.pk)
    history = [
        HistoryRow(role=role, content=content, status=status, id=pk)
        for pk, role, content, status in Message.objects.filter(conversation=conversation)
        .order_by("-id")
        .values_list("id", "role", "content", "status")[:22][::-1]
    ]
    speakers = Speakers(user="Sam", avatar="Ava")
    now = datetime.now(UTC)
    for _ in range(20):  # warm the connection and the caches
        turn_recall(
            conversation=plan_conversation, speakers=speakers, text=sentence(4, 10), history=history, facts=(), now=now
        )
    timings = []
    for _ in range(arguments.turns):
        text = "what did i tell you about " + sentence(3, 8) + "?"
        started = time.perf_counter()
        turn_recall(conversation=plan_conversation, speakers=speakers, text=text, history=history, facts=(), now=now)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


if __name__ == "__main__":
    main()
