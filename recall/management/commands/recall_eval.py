"""`manage.py recall_eval FILE.jsonl`: how often recall finds the messages that hold the answer.

Each row, `{"user_name", "assistant_name", "history": [{"id", "role", "content",
"created_at"?}], "questions": [{"question", "evidence": [ids]}]}`, is loaded as one
conversation of a user with that display name and an avatar with that name, inside a
transaction that is rolled back (nothing stays in the database), indexed as a turn would
index it, and each question is asked of `recall.selectors.recall_for_turn` as the user's
new message, with the conversation's recent window left out as in a turn. The last line is
`recall_at_5=0.xxx recall_at_10=0.xxx n=N`: the share of all evidence ids found among the
first 5 and 10 recalled messages; n counts the questions.
"""

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils.dateparse import parse_datetime

from accounts.models import Profile
from avatars.models import Avatar
from conversations.context import ContextBudget
from conversations.models import Conversation, Message, Role, Status
from core.modes import Mode
from recall.selectors import recall_for_turn
from recall.services import recall_index_conversation
from recall.text import Speakers

MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_TEXT_CHARS = 20_000


class _Rollback(Exception):
    """Raised at the end to roll the whole evaluation back."""


@dataclass
class _Tally:
    found_5: int = 0
    found_10: int = 0
    evidence: int = 0
    questions: int = 0

    def add(self, other: "_Tally") -> None:
        self.found_5 += other.found_5
        self.found_10 += other.found_10
        self.evidence += other.evidence
        self.questions += other.questions

    def line(self) -> str:
        return (
            f"recall_at_5={_share(self.found_5, self.evidence)} "
            f"recall_at_10={_share(self.found_10, self.evidence)} n={self.questions}"
        )


class Command(BaseCommand):
    help = "Measure recall on conversations with questions (JSONL); prints recall_at_5, recall_at_10 and n last."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--verbose-misses", action="store_true", help="Print each question whose evidence was missed."
        )
        parser.add_argument("--by-category", action="store_true", help="Also print the figures per question category.")

    def handle(self, *args: Any, **options: Any) -> None:
        rows = _rows_read(options["file"])
        tally = _Tally()
        categories: dict[str, _Tally] = {}
        try:
            with transaction.atomic():
                for number, row in enumerate(rows, start=1):
                    with transaction.atomic():
                        found = self._conversation_eval(
                            row, number=number, misses=options["verbose_misses"], categories=categories
                        )
                    tally.add(found)
                    self.stdout.write(f"conversation {number}: {found.line()}")
                raise _Rollback
        except _Rollback:
            pass
        if options["by_category"]:
            for category in sorted(categories):
                self.stdout.write(f"category {category}: {categories[category].line()}")
        self.stdout.write(tally.line())

    def _conversation_eval(
        self, row: dict[str, Any], *, number: int, misses: bool, categories: dict[str, _Tally]
    ) -> _Tally:
        conversation, ids, speakers, today = _conversation_load(row, number=number)
        recall_index_conversation(conversation_id=conversation.pk)
        shape = ContextBudget.from_django_settings().max_pairs * 2 + 2
        window = list(
            Message.objects.filter(conversation=conversation, superseded=False)
            .order_by("-id")
            .values_list("id", "role", "content")[:shape]
        )[::-1]
        tally = _Tally()
        for question in row["questions"]:
            evidence = [ids[e] for e in question["evidence"] if e in ids]
            if not evidence:
                continue
            recall = recall_for_turn(
                user_id=conversation.user_id,
                avatar_id=conversation.avatar_id,
                conversation_id=conversation.pk,
                across_avatars=False,
                speakers=speakers,
                text=str(question["question"])[:MAX_TEXT_CHARS],
                window=window,
                today=today,
            )
            recalled = [m.message_id for m in recall.messages]
            hit_5 = sum(1 for e in evidence if e in recalled[:5])
            hit_10 = sum(1 for e in evidence if e in recalled[:10])
            found = _Tally(found_5=hit_5, found_10=hit_10, evidence=len(evidence), questions=1)
            tally.add(found)
            categories.setdefault(str(question.get("category", "none"))[:40], _Tally()).add(found)
            if misses and hit_10 < len(evidence):
                self.stdout.write(f"  missed: {question['question']}")
        return tally


def _rows_read(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise CommandError(f"No such file: {path}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise CommandError(f"{path} is larger than {MAX_FILE_BYTES} bytes.")
    rows = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CommandError(f"line {line_number}: not JSON ({exc.msg})") from exc
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("history"), list)
            or not isinstance(row.get("questions"), list)
        ):
            raise CommandError(f"line {line_number}: expected an object with a history and questions")
        for message in row["history"]:
            if not isinstance(message, dict) or message.get("role") not in ("user", "assistant") or "id" not in message:
                raise CommandError(f"line {line_number}: each history item needs an id and a role user or assistant")
        for question in row["questions"]:
            if not isinstance(question, dict) or not isinstance(question.get("evidence"), list):
                raise CommandError(f"line {line_number}: each question needs a question and an evidence list")
        rows.append(row)
    return rows


def _conversation_load(row: dict[str, Any], *, number: int) -> tuple[Conversation, dict[Any, int], Speakers, Any]:
    user_name = str(row.get("user_name") or "User")[:80]
    avatar_name = str(row.get("assistant_name") or "Avatar")[:80]
    suffix = secrets.token_hex(4)
    user = User.objects.create(username=f"recall-eval-{number}-{suffix}")
    Profile.objects.update_or_create(user=user, defaults={"display_name": user_name})
    avatar = Avatar.objects.create(owner=user, name=avatar_name, slug=f"recall-eval-{number}-{suffix}")
    conversation = Conversation.objects.create(user=user, avatar=avatar, title=avatar_name)
    messages = Message.objects.bulk_create(
        Message(
            conversation=conversation,
            role=Role.USER if item["role"] == "user" else Role.ASSISTANT,
            content=str(item.get("content") or "")[:MAX_TEXT_CHARS],
            mode=Mode.SECRETARY,
            status=Status.COMPLETE,
        )
        for item in row["history"]
    )
    dated = []
    latest = datetime.now(UTC)
    for message, item in zip(messages, row["history"], strict=True):
        moment = parse_datetime(str(item.get("created_at") or ""))
        if moment is not None:
            message.created_at = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
            dated.append(message)
            latest = message.created_at
    Message.objects.bulk_update(dated, ["created_at"], batch_size=500)
    ids = {item["id"]: message.pk for message, item in zip(messages, row["history"], strict=True)}
    return conversation, ids, Speakers(user=user_name, avatar=avatar_name), latest.date()


def _share(found: int, total: int) -> str:
    return f"{found / total:.3f}" if total else "0.000"
