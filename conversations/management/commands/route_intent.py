"""`python manage.py route_intent`: route messages from stdin, or evaluate the router on a file.

route_intent [--avatar SLUG] [--mode CURRENT]   one message per stdin line -> one JSON line
route_intent --eval FILE.jsonl [--avatar SLUG]  per-label P/R/F1, then macro_f1/false_switch
"""

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from avatars.models import Avatar
from conversations.intents import (
    LABELS,
    MODES,
    PhraseBank,
    RouterSettings,
    intent_evaluate,
    phrase_bank_for_avatar,
    route_message,
)
from core.jsonl import jsonl_rows_read
from core.modes import Mode


class Command(BaseCommand):
    help = (
        "Route messages to a mode: one message per line on stdin, one JSON object per line on stdout. "
        "With --eval FILE.jsonl, print precision, recall and F1 per label and, last, macro_f1 and false_switch."
    )
    # Tests pass their own stream; from the shell it is sys.stdin.
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--avatar", metavar="SLUG", help="Also use this avatar's extra phrases.")
        parser.add_argument(
            "--mode",
            choices=list(MODES),
            default=Mode.SECRETARY.value,
            help="The conversation's current mode, for the switch flag (default: secretary).",
        )
        parser.add_argument(
            "--eval",
            dest="eval_file",
            metavar="FILE.jsonl",
            help='Evaluate on rows {"text": ..., "label": "secretary"|"intimate"|"neutral"}.',
        )

    def handle(self, *args: Any, **options: Any) -> None:
        bank = _bank_load(options["avatar"])
        settings = RouterSettings.from_django_settings()
        if options["eval_file"]:
            self._evaluate(Path(options["eval_file"]), bank=bank, settings=settings)
        else:
            self._route(options.get("stdin") or sys.stdin, bank=bank, settings=settings, current=options["mode"])

    def _route(self, stream: TextIO, *, bank: PhraseBank, settings: RouterSettings, current: str) -> None:
        # Each line is judged against the same --mode: the output does not depend on line order.
        for line in stream:
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            decision = route_message(text, current_mode=current, locked=False, bank=bank, settings=settings)
            record = {
                "text": text,
                "mode": decision.pointed,
                "score": round(decision.score, 1),
                "matched": decision.matched,
                "switch": decision.switch,
            }
            self.stdout.write(json.dumps(record, ensure_ascii=False))
            self.stdout.flush()

    def _evaluate(self, path: Path, *, bank: PhraseBank, settings: RouterSettings) -> None:
        rows = list(_eval_rows(path))
        if not rows:
            raise CommandError(f"{path}: no rows to evaluate.")
        result = intent_evaluate(rows, bank=bank, settings=settings)
        for metric in result.labels:
            self.stdout.write(
                f"{metric.label:<10} precision={metric.precision:.3f} recall={metric.recall:.3f} "
                f"f1={metric.f1:.3f} support={metric.support}"
            )
        self.stdout.write(f"macro_f1={result.macro_f1:.3f} false_switch={result.false_switch:.3f} n={result.n}")


def _bank_load(slug: str | None) -> PhraseBank:
    if slug is None:
        return phrase_bank_for_avatar(())
    try:
        avatar = Avatar.objects.filter(slug=slug).first()
        extra = () if avatar is None else tuple(avatar.phrases.order_by("id").values_list("mode", "text"))
    except DatabaseError as error:
        raise CommandError(f"Cannot read avatars from the database ({error}); has it been migrated?") from error
    if avatar is None:
        raise CommandError(f"No avatar with slug {slug!r}.")
    return phrase_bank_for_avatar(extra)


def _eval_rows(path: Path) -> Iterator[tuple[str, str]]:
    for number, row in jsonl_rows_read(path):
        text = row.get("text") if isinstance(row, dict) else None
        label = row.get("label") if isinstance(row, dict) else None
        if not isinstance(text, str) or label not in LABELS:
            raise CommandError(
                f'{path}:{number}: expected {{"text": "...", "label": "secretary"|"intimate"|"neutral"}}.'
            )
        yield text, label
