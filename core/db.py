"""A seam into Django's SQL compiler: the turn's hot reads compiled once (docs/architecture.md, "Seams").

Measured gain (docs/performance.md): the turn's prepare 2.1 -> 3.9 ms p50 on SQLite and
2.4 -> 4.4 ms on PostgreSQL without it, and the added time to first token 5.5-6.9 ms p50
(over the 5 ms target) instead of 2.6-4.0 ms. It reaches `SQLCompiler`, which is not a
public interface: a Django upgrade that changes `as_sql` or `results_iter` shows up in
core/tests/test_db.py, which compares its rows and SQL with the ORM's.

`CompiledQuery`: querysets compiled to SQL once and run many times. Django compiles a
queryset to SQL every time it is evaluated (joins, lookups, ordering, the select list): for
the few small reads a turn makes before it can call the model, that compilation costs
several times what the database does. `CompiledQuery` builds the queryset once per database
connection alias, with a marker value in place of each argument, keeps the SQL and the
compiler, and afterwards only substitutes the arguments, runs the SQL on a cursor and
converts the rows with Django's own converters (booleans and datetimes on SQLite, JSON).
The SQL is exactly what the ORM would have sent.

Only `values_list` querysets whose arguments are integers: the marker must survive the
ORM's preparation unchanged, so it can be found among the compiled parameters. Anything
rendered into the SQL itself (a slice's LIMIT) is part of the query's `shape`.
"""

from collections.abc import Callable, Hashable
from dataclasses import dataclass
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
