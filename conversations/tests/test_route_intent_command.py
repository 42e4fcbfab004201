"""`manage.py route_intent`: JSON lines on stdin/stdout, per-avatar phrases, and --eval."""

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from avatars.models import AvatarPhrase
from testing.support import AvatarFactory


def run(*args: str, stdin: str = "") -> list[str]:
    out = io.StringIO()
    call_command("route_intent", *args, stdin=io.StringIO(stdin), stdout=out)
    return out.getvalue().splitlines()


def records(*args: str, stdin: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run(*args, stdin=stdin)]


def test_one_json_object_per_message_line() -> None:
    # Given three messages (and a blank line, which is skipped), the conversation in secretary mode
    stdin = "i miss you\n\nstart a timer for the pasta\nok\n"

    # When routed
    result = records(stdin=stdin)

    # Then one record each, with exactly the contract's keys
    assert result == [
        {"text": "i miss you", "mode": "intimate", "score": 100.0, "matched": "i miss you", "switch": True},
        {
            "text": "start a timer for the pasta",
            "mode": "secretary",
            "score": 100.0,
            "matched": "start a timer for the pasta",
            "switch": False,
        },
        {"text": "ok", "mode": None, "score": 0.0, "matched": None, "switch": False},
    ]


def test_mode_option_is_the_current_mode_for_the_switch_flag() -> None:
    result = records("--mode", "intimate", stdin="i miss you\nstart a timer for the pasta\n")

    assert [(r["mode"], r["switch"]) for r in result] == [("intimate", False), ("secretary", True)]


def test_commands_are_reported_with_their_target() -> None:
    result = records(stdin="/intimate\ngo back to automatic\n")

    assert result == [
        {"text": "/intimate", "mode": "intimate", "score": 100.0, "matched": "/intimate", "switch": True},
        {
            "text": "go back to automatic",
            "mode": None,
            "score": 100.0,
            "matched": "go back to automatic",
            "switch": False,
        },
    ]


@pytest.mark.django_db
def test_avatar_option_adds_that_avatars_phrases() -> None:
    # Given an avatar with an extra intimate phrase, and another avatar without it
    avatar = AvatarFactory(slug="luna")
    AvatarPhrase.objects.create(avatar=avatar, mode="intimate", text="tell me about the stars again")
    AvatarFactory(slug="plain")
    stdin = "tell me about the stars again tonight\n"

    # When routed as each avatar
    with_phrase = records("--avatar", "luna", stdin=stdin)
    without = records("--avatar", "plain", stdin=stdin)

    # Then only Luna's bank knows the phrase
    assert (with_phrase[0]["mode"], with_phrase[0]["matched"]) == ("intimate", "tell me about the stars again")
    assert without[0]["mode"] is None


@pytest.mark.django_db
def test_unknown_avatar_is_a_command_error() -> None:
    with pytest.raises(CommandError, match="No avatar with slug 'ghost'"):
        run("--avatar", "ghost")


def test_eval_prints_per_label_figures_then_the_summary_line(tmp_path: Path) -> None:
    # Given a small labelled file; the last neutral-labelled row is a request, so it will be routed
    rows = [
        ("start a timer for the pasta", "secretary"),
        ("what's on my calendar tomorrow", "secretary"),
        ("i miss you", "intimate"),
        ("i had a rough day", "intimate"),
        ("which company owns you", "neutral"),
        ("tell me a joke", "neutral"),
        ("remind me to water the plants", "neutral"),
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in rows))

    # When evaluated
    lines = run("--eval", str(path))

    # Then P/R/F1 per label, and the summary as the very last line
    assert lines == [
        "secretary  precision=0.667 recall=1.000 f1=0.800 support=2",
        "intimate   precision=1.000 recall=1.000 f1=1.000 support=2",
        "neutral    precision=1.000 recall=0.667 f1=0.800 support=3",
        "macro_f1=0.867 false_switch=0.333 n=7",
    ]


def test_eval_missing_file_is_a_command_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"Cannot read .*missing\.jsonl"):
        run("--eval", str(tmp_path / "missing.jsonl"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "hi", "label": "neutral"}\n{not json\n', r"rows.jsonl:2: not valid JSON"),
        ('{"text": "hi", "label": "chatty"}\n', r"rows.jsonl:1: expected"),
        ('{"label": "neutral"}\n', r"rows.jsonl:1: expected"),
        ('["hi", "neutral"]\n', r"rows.jsonl:1: expected"),
        ("\n\n", r"no rows to evaluate"),
    ],
)
def test_eval_bad_rows_are_command_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(content)

    with pytest.raises(CommandError, match=message):
        run("--eval", str(path))
