"""`python manage.py safety_report --from 2026-01-01 --to 2026-12-31`: the daily safety counts as CSV.

One row per day that has counts (crisis detections, referrals shown, AI notices shown),
then a total: what SB 243's annual report asks of an operator. Numbers only.
"""

import io
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from safety.report import safety_report_write
from safety.selectors import safety_counts_list


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as error:
        raise CommandError(f"{value!r} is not a date (YYYY-MM-DD).") from error


class Command(BaseCommand):
    help = "Print the daily safety counts from --from to --to (inclusive, UTC days) as CSV."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="start", metavar="YYYY-MM-DD", help="First day (default: 1 January).")
        parser.add_argument("--to", dest="end", metavar="YYYY-MM-DD", help="Last day (default: today).")

    def handle(self, *args: Any, **options: Any) -> None:
        today = timezone.now().date()
        start = _day(options["start"]) if options["start"] else today.replace(month=1, day=1)
        end = _day(options["end"]) if options["end"] else today
        if start > end:
            raise CommandError("--from is after --to.")
        stream = io.StringIO()
        safety_report_write(safety_counts_list(start=start, end=end), stream)
        self.stdout.write(stream.getvalue(), ending="")
