"""The operator's safety report as CSV: one row per day, numbers only (no message text, no user)."""

import csv
from collections.abc import Iterable
from typing import TextIO

from safety.selectors import DailyCounts

CSV_COLUMNS = ("day", "crisis_detections", "referrals_shown", "notices_shown")


def safety_report_write(rows: Iterable[DailyCounts], stream: TextIO) -> None:
    """Write the CSV: a header, one row per day, then a `total` row."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    totals = [0, 0, 0]
    for row in rows:
        figures = (row.crisis_detections, row.referrals_shown, row.notices_shown)
        writer.writerow((row.day.isoformat(), *figures))
        totals = [a + b for a, b in zip(totals, figures, strict=True)]
    writer.writerow(("total", *totals))
