"""`crisis_check` and `safety_report`, and the counts a turn leaves (numbers only)."""

import io
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.core.management.base import CommandError

from llm.fake import FakeProvider
from safety.models import SafetyDailyCount
from safety.services import safety_counts_add
from testing.support import ConversationFactory, turn_complete


def run(*args: str, stdin: str | None = None) -> str:
    out = io.StringIO()
    options: dict[str, Any] = {"stdout": out}
    if stdin is not None:
        options["stdin"] = io.StringIO(stdin)
    call_command(*args, **options)
    return out.getvalue()


def test_crisis_check_writes_one_json_object_per_line() -> None:
    output = run("crisis_check", stdin="i want to kill myself\n\nthis deadline is killing me\n")

    lines = [json.loads(line) for line in output.splitlines()]
    assert [(row["text"], row["crisis"]) for row in lines] == [
        ("i want to kill myself", True),
        ("this deadline is killing me", False),
    ]
    assert (lines[0]["score"], lines[0]["matched"][0]) == (1.0, "kill myself")
    assert (lines[1]["score"], lines[1]["matched"]) == (0.0, [])


def test_crisis_check_eval_ends_with_recall_and_false_positive(tmp_path: Path) -> None:
    rows = [
        {
            "messages": ["i'm so tired of everything", "honestly i hate myself", "i just feel hopeless"],
            "label": "crisis",
        },
        {"messages": ["i want to end my life"], "label": "crisis"},
        {"messages": ["this exam is killing me lol"], "label": "no_crisis"},
        {"messages": ["i feel low today"], "label": "no_crisis"},
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")

    output = run("crisis_check", "--eval", str(path))

    first, last = output.splitlines()
    assert first.startswith("precision=1.000 recall=1.000")
    assert last == "recall=1.000 false_positive=0.000 n=4"


def test_crisis_check_eval_refuses_a_malformed_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": "not a list", "label": "crisis"}\n', encoding="utf-8")

    with pytest.raises(CommandError, match=r"bad\.jsonl:1"):
        run("crisis_check", "--eval", str(path))


@pytest.mark.django_db
def test_safety_report_prints_the_days_in_range_and_a_total() -> None:
    safety_counts_add(day=date(2026, 1, 1), crisis_detections=1, referrals_shown=1)
    safety_counts_add(day=date(2026, 1, 1), notices_shown=3)
    safety_counts_add(day=date(2026, 2, 10), crisis_detections=2, referrals_shown=2, notices_shown=1)
    safety_counts_add(day=date(2027, 1, 1), crisis_detections=9)  # outside the range

    output = run("safety_report", "--from", "2026-01-01", "--to", "2026-12-31")

    assert output == (
        "day,crisis_detections,referrals_shown,notices_shown\n2026-01-01,1,1,3\n2026-02-10,2,2,1\ntotal,3,3,4\n"
    )
    assert SafetyDailyCount.objects.count() == 3  # one row per day, never a second


@pytest.mark.django_db
def test_safety_report_refuses_a_bad_range() -> None:
    with pytest.raises(CommandError, match="after"):
        run("safety_report", "--from", "2026-02-01", "--to", "2026-01-01")
    with pytest.raises(CommandError, match="not a date"):
        run("safety_report", "--from", "yesterday")


@pytest.mark.django_db(transaction=True)
def test_a_crisis_turn_is_counted_and_no_text_reaches_the_report() -> None:
    # Given a new conversation, at a fixed time
    conversation = ConversationFactory()
    moment = datetime(2026, 5, 4, 22, 30, tzinfo=UTC)

    # When the user writes a crisis message, then a calm one
    with mock.patch("django.utils.timezone.now", return_value=moment):
        for content in ("i want to kill myself tonight", "ok, thank you"):
            async_to_sync(turn_complete)(
                user_id=conversation.user_id,
                conversation_id=conversation.pk,
                message={"content": content},
                provider=FakeProvider(),
            )

    # Then the day counts one detection, one referral and one notice (the first turn's)
    output = run("safety_report", "--from", "2026-05-04", "--to", "2026-05-04")
    assert output.splitlines()[1] == "2026-05-04,1,1,1"
    assert "kill" not in output
    assert "thank" not in output
