"""`python manage.py crisis_check`: run the crisis detector on messages, or evaluate it on a file.

crisis_check                       one message per stdin line -> one JSON line {text, crisis, score, matched}
crisis_check --eval FILE.jsonl     precision and recall, then `recall=0.xxx false_positive=0.xxx n=N`
"""

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.jsonl import jsonl_rows_read
from safety.detector import crisis_assess, crisis_evaluate

LABELS = ("crisis", "no_crisis")


class Command(BaseCommand):
    help = (
        "Assess messages for suicidal ideation or self-harm: one message per line on stdin, one JSON object per "
        "line on stdout. With --eval FILE.jsonl, print precision and recall and, last, recall and false_positive."
    )
    stealth_options = ("stdin",)  # tests pass their own stream; from the shell it is sys.stdin

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--eval",
            dest="eval_file",
            metavar="FILE.jsonl",
            help='Evaluate on rows {"messages": [user messages, oldest first], "label": "crisis"|"no_crisis"}.',
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["eval_file"]:
            self._evaluate(Path(options["eval_file"]))
        else:
            self._assess(options.get("stdin") or sys.stdin)

    def _assess(self, stream: TextIO) -> None:
        for line in stream:
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            assessment = crisis_assess([text])
            record = {"text": text, **assessment.as_dict()}
            self.stdout.write(json.dumps(record, ensure_ascii=False))
            self.stdout.flush()

    def _evaluate(self, path: Path) -> None:
        rows = list(_eval_rows(path))
        if not rows:
            raise CommandError(f"{path}: no rows to evaluate.")
        result = crisis_evaluate(rows)
        self.stdout.write(
            f"precision={result.precision:.3f} recall={result.recall:.3f} "
            f"(crisis={result.true_positive + result.false_negative} no_crisis="
            f"{result.false_positive + result.true_negative} flagged={result.true_positive + result.false_positive})"
        )
        self.stdout.write(f"recall={result.recall:.3f} false_positive={result.false_positive_rate:.3f} n={result.n}")


def _eval_rows(path: Path) -> Iterator[tuple[list[str], bool]]:
    for number, row in jsonl_rows_read(path):
        messages = row.get("messages") if isinstance(row, dict) else None
        label = row.get("label") if isinstance(row, dict) else None
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, str) for m in messages)
            or label not in LABELS
        ):
            raise CommandError(f'{path}:{number}: expected {{"messages": ["..."], "label": "crisis"|"no_crisis"}}.')
        yield messages, label == "crisis"
