"""Database helpers for a turn's hot path: compiled reads, and SQLite's log kept across units of work.

`CompiledQuery`: querysets compiled to SQL once and run many times. Django compiles a
queryset to SQL every time it is evaluated (joins, lookups, ordering, the select list): for
the few small reads a turn makes before it can call the model, that compilation costs
several times what the database does. `CompiledQuery` builds the queryset once per database
connection alias, with a marker value in place of each argument, keeps the SQL and the
compiler, and afterwards only substitutes the arguments, runs the SQL on a cursor and
converts the rows with Django's own converters (booleans and datetimes on SQLite, JSON).
The SQL is exactly what the ORM would have sent.

`sqlite_wal_keeper_open`: see its docstring.

Only `values_list` querysets whose arguments are integers: the marker must survive the
ORM's preparation unchanged, so it can be found among the compiled parameters. Anything
rendered into the SQL itself (a slice's LIMIT) is part of the query's `shape`.
"""

import sqlite3
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import QuerySet
from django.db.models.sql.compiler import SQLCompiler

_MARKER_BASE = 7_919_000_000_000  # far above any id this project will hand out


@dataclass(frozen=True, slots=True)
class _Compiled:
    compiler: SQLCompiler
    sql: str
    # Per parameter: the name of the argument it takes, or None to send `constants[i]` as compiled.
    slots: tuple[str | None, ...]
    constants: tuple[Any, ...]


class CompiledQuery:
    """`build(**arguments)` returns a `values_list` queryset; `rows(**arguments)` runs it, compiled once."""

    def __init__(self, build: Callable[..., QuerySet[Any, Any]], *, arguments: tuple[str, ...]) -> None:
        self._build = build
        self._arguments = arguments
        self._compiled: dict[tuple[str, Hashable], _Compiled] = {}

    def rows(self, *, shape: Hashable = None, using: str = DEFAULT_DB_ALIAS, **arguments: int) -> list[tuple[Any, ...]]:
        """The rows, converted as the ORM converts them; `shape` is passed to `build` and keys the compiled form."""
        if set(arguments) != set(self._arguments):
            raise TypeError(f"expected the arguments {sorted(self._arguments)}, got {sorted(arguments)}")
        compiled = self._compiled.get((using, shape))
        if compiled is None:
            compiled = self._compiled[(using, shape)] = self._compile(shape, using)
        params = [
            arguments[slot] if slot is not None else constant
            for slot, constant in zip(compiled.slots, compiled.constants, strict=True)
        ]
        with connections[using].cursor() as cursor:
            cursor.execute(compiled.sql, params)
            fetched = cursor.fetchall()
        return [tuple(row) for row in compiled.compiler.results_iter(results=[fetched])]

    def _compile(self, shape: Hashable, using: str) -> _Compiled:
        markers = {name: _MARKER_BASE + index for index, name in enumerate(self._arguments)}
        build_arguments: dict[str, Any] = dict(markers)
        if shape is not None:
            build_arguments["shape"] = shape
        queryset = self._build(**build_arguments).using(using)
        compiler = queryset.query.get_compiler(using=using)
        sql, params = compiler.as_sql()
        by_marker = {marker: name for name, marker in markers.items()}
        slots = tuple(by_marker.get(param) if isinstance(param, int) else None for param in params)
        missing = set(self._arguments) - {slot for slot in slots if slot is not None}
        if missing or len([slot for slot in slots if slot is not None]) != len(self._arguments):
            raise ValueError(f"each argument must appear once among the query's parameters: {sorted(missing)}")
        return _Compiled(compiler=compiler, sql=sql, slots=slots, constants=tuple(params))


def sqlite_wal_keeper_open(database: Mapping[str, Any]) -> sqlite3.Connection | None:
    """Hold one idle connection to a SQLite database file open, for the life of the process.

    Under ASGI every unit of work opens a connection and closes it at the end
    (`CONN_MAX_AGE=0`, as Django advises). In WAL mode the *last* connection to close
    checkpoints the log into the database and deletes it: about 3 ms of I/O on this machine,
    against 0.3 ms for the same open, write and close while another connection stays open,
    and paid before the turn's prepare, store and finish return. While this connection is
    open, no unit of work is the last one; SQLite still checkpoints as the log grows
    (`wal_autocheckpoint`). It never holds a transaction, so it blocks no writer.

    None for another engine, an in-memory database, or a file that does not exist yet (it is
    never created here).
    """
    if database.get("ENGINE") != "django.db.backends.sqlite3":
        return None
    name = str(database.get("NAME") or "")
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    try:
        keeper = sqlite3.connect(f"{Path(name).resolve().as_uri()}?mode=rw", uri=True, check_same_thread=False)
        # A connection opens the file only when first used: one read, which ends at once.
        keeper.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error:
        return None
    return keeper
