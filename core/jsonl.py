"""Reading a JSON Lines file for a management command (the `--eval FILE.jsonl` of `route_intent`
and `crisis_check`): each row with its line number, or a `CommandError` that names the line."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError


def jsonl_rows_read(path: Path) -> Iterator[tuple[int, Any]]:
    """Each non-blank line's JSON value with its line number; unreadable files and bad JSON
    are a `CommandError` (the command prints it and exits non-zero)."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as error:
        raise CommandError(f"Cannot read {path}: {error.strerror or error}.") from error
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                raise CommandError(f"{path}:{number}: not valid JSON ({error.msg}).") from error
