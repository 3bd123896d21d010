"""How a transaction's steps (`plan.Step`) become PostgreSQL statements: one statement a
step, however many rows, each column's values bound as one array and the rows made again
on the server by ``unnest`` (one row is bound as it is). A row a statement (``executemany``, even pipelined) cost
~25 µs of Python a row in psycopg, on the interpreter the event loop shares; bound as
arrays, a lifecycle's rows cost a few (bench/stores.py, docs/persistence.md).

One statement per step also means one row per id in it: where a step holds several rows
for one id (a job updated twice in one group, say), they are merged first into the row
that writing them one after the other would leave."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .plan import Planned, Step
from .records import JOB_COLUMNS, STATE_COLUMNS

Row = tuple[Any, ...]
Bound = tuple[str, Sequence[Any]]
"""A statement and its parameters: one list of values a column, or one row's values."""
Types = Mapping[str, Mapping[str, str]]
"""Each table's columns' types, as ``information_schema.columns.data_type`` names them."""
_Build = Callable[[list[Row]], list[Bound]]
_Merge = Callable[[list[Row]], list[Row]] | None


_SPACE_COLUMNS = ("id", "name", "public_token", "created_at", "settings")
_TOKEN_COLUMNS = ("id", "space_id", "name", "prefix", "key_hash", "scopes", "created_at",
                  "revoked_at", "public", "last_used_at")  # fmt: skip
_CALLBACK_COLUMNS = ("id", "job_id", "space_id", "url", "headers", "body", "attempts",
                     "next_at", "state", "created_at", "last_error")  # fmt: skip
_EVENT_COLUMNS = ("job_id", "seq", "type", "attempt_number", "data", "created_at")
_LOG_COLUMNS = ("job_id", "seq", "level", "message", "ts", "fields")
"""The order of `records`' rows of each table (`space_row`, `token_row`, `callback_row`,
`event_row`, `log_row`)."""


def _texts(values: Iterable[Any]) -> list[Any]:
    # A list binds as an array of one type: values of a subclass (an enum a caller
    # passed as a name, say) are made plain, as SQLite's writer makes them.
    return [v if v is None or type(v) is str else str.__str__(v) for v in values]


def _ints(values: Iterable[Any]) -> list[Any]:
    return [v if v is None or type(v) is int else int.__index__(v) for v in values]


def _floats(values: Iterable[Any]) -> list[Any]:
    return [v if v is None or type(v) is float else float(v) for v in values]  # 0 -> 0.0


_ARRAYS: dict[str, tuple[str, Callable[[Iterable[Any]], list[Any]]]] = {
    "text": ("text[]", _texts),
    "bigint": ("bigint[]", _ints),
    "double precision": ("float8[]", _floats),
    "boolean": ("bigint[]", _ints),  # the rows hold 0 or 1, as SQLite keeps it
}


class _Rows:
    """Rows of ``columns`` of ``table`` as a ``FROM`` item, ``u``, in two forms: ``many``
    makes them from one array a column (`bind`), ``one`` from one row's values as they
    are (a statement of one row, the usual one under light load: an array costs psycopg
    ~4 µs to bind, 28 of them for a job's row, where a plain value costs a tenth of
    that). ``values`` is the select list."""

    def __init__(self, types: Types, table: str, columns: tuple[str, ...]) -> None:
        kinds = [types[table][column] for column in columns]
        arrays = [_ARRAYS[kind][0] for kind in kinds]
        names = ", ".join(columns)
        self.many = f"unnest({', '.join(f'%b::{a}' for a in arrays)}) AS u({names})"
        self.one = f"(VALUES ({', '.join(f'%s::{a[:-2]}' for a in arrays)})) AS u({names})"
        self.values = ", ".join(
            f"u.{c} <> 0" if kind == "boolean" else f"u.{c}"
            for c, kind in zip(columns, kinds, strict=True)
        )
        self.table = table
        self.columns = columns
        self._coerce = [_ARRAYS[kind][1] for kind in kinds]

    def bind(self, rows: list[Row]) -> list[list[Any]]:
        return [
            coerce(column)
            for coerce, column in zip(self._coerce, zip(*rows, strict=True), strict=True)
        ]


def _last_by(key: int, rows: list[Row]) -> list[Row]:
    """The last row of each ``row[key]``: what replacing them one after the other leaves."""
    last = {row[key]: row for row in rows}
    return rows if len(last) == len(rows) else list(last.values())


def _merged_updates(rows: list[Row]) -> list[Row]:
    """A job's state rows as one: the last one's state, every one's new events in order
    (each row sets every state column, and appends its events)."""
    merged: dict[str, Row] = {}
    for row in rows:
        earlier = merged.get(row[-1])
        merged[row[-1]] = row if earlier is None else (*row[:-2], earlier[-2] + row[-2], row[-1])
    return rows if len(merged) == len(rows) else list(merged.values())


def _latest_uses(rows: list[Row]) -> list[Row]:
    latest: dict[str, Row] = {}
    for row in rows:
        earlier = latest.get(row[1])
        if earlier is None or earlier[0] < row[0]:
            latest[row[1]] = row
    return list(latest.values())


class Writes:
    """The statements of each kind of step, for a database of these column ``types``."""

    def __init__(self, types: Types) -> None:
        def rows(table: str, *columns: str) -> _Rows:
            return _Rows(types, table, columns)

        def insert(into: _Rows, source: str) -> str:
            columns = ", ".join(into.columns)
            return f"INSERT INTO {into.table} ({columns}) SELECT {into.values} FROM {source}"

        def upsert(into: _Rows, source: str) -> str:  # SQLite's INSERT OR REPLACE
            replace = ", ".join(f"{c} = EXCLUDED.{c}" for c in into.columns[1:])
            return f"{insert(into, source)} ON CONFLICT (id) DO UPDATE SET {replace}"

        def each(build: Callable[[_Rows, str], str], into: _Rows, merge: _Merge = None) -> _Build:
            one, many = build(into, into.one), build(into, into.many)

            def bound(given: list[Row]) -> list[Bound]:
                if merge is not None:
                    given = merge(given)
                return [(one, given[0]) if len(given) == 1 else (many, into.bind(given))]

            return bound

        def ids(*statements: str) -> _Build:
            return lambda given: [(sql, [_texts(row[0] for row in given)]) for sql in statements]

        state = rows("jobs", *STATE_COLUMNS, "events", "id")
        set_state = ", ".join(f"{c} = u.{c}" for c in STATE_COLUMNS)
        revoked = rows("tokens", "revoked_at", "id")
        used = rows("tokens", "last_used_at", "id")
        self._steps: dict[Step, _Build] = {
            Step.INSERT_JOBS: each(insert, rows("jobs", *JOB_COLUMNS, "events")),
            Step.UPDATE_JOBS: each(
                # a job's new events are appended to those its row holds
                lambda u, source: (
                    f"UPDATE jobs SET {set_state}, events = jobs.events || u.events "
                    f"FROM {source} WHERE jobs.id = u.id"
                ),
                state,
                _merged_updates,
            ),
            Step.INSERT_EVENTS: each(insert, rows("job_events", *_EVENT_COLUMNS)),
            Step.INSERT_LOGS: each(insert, rows("job_logs", *_LOG_COLUMNS)),
            Step.PUT_CALLBACKS: each(upsert, rows("callbacks", *_CALLBACK_COLUMNS), _last_id),
            Step.PUT_SPACES: each(upsert, rows("spaces", *_SPACE_COLUMNS), _last_id),
            Step.DELETE_SPACE: ids(
                "DELETE FROM job_events WHERE job_id IN "
                "(SELECT id FROM jobs WHERE space_id = ANY(%b::text[]))",
                "DELETE FROM job_logs WHERE job_id IN "
                "(SELECT id FROM jobs WHERE space_id = ANY(%b::text[]))",
                "DELETE FROM jobs WHERE space_id = ANY(%b::text[])",
                "DELETE FROM callbacks WHERE space_id = ANY(%b::text[])",
                "DELETE FROM tokens WHERE space_id = ANY(%b::text[])",
                "DELETE FROM spaces WHERE id = ANY(%b::text[])",
            ),
            Step.PUT_TOKENS: each(upsert, rows("tokens", *_TOKEN_COLUMNS), _last_id),
            Step.REVOKE_TOKENS: each(
                lambda u, source: (
                    f"UPDATE tokens SET revoked_at = u.revoked_at FROM {source} "
                    "WHERE tokens.id = u.id"
                ),
                revoked,
                lambda given: _last_by(1, given),
            ),
            Step.NOTE_TOKEN_USES: each(
                lambda u, source: (
                    "UPDATE tokens SET last_used_at = "
                    f"greatest(coalesce(tokens.last_used_at, 0), u.last_used_at) FROM {source} "
                    "WHERE tokens.id = u.id"
                ),
                used,
                _latest_uses,
            ),
            Step.DELETE_JOBS: ids(
                "DELETE FROM job_events WHERE job_id = ANY(%b::text[])",
                "DELETE FROM job_logs WHERE job_id = ANY(%b::text[])",
                "DELETE FROM callbacks WHERE job_id = ANY(%b::text[])",
                "DELETE FROM jobs WHERE id = ANY(%b::text[])",
            ),
            # PostgreSQL's vacuum reuses the space deleted rows leave, on its own.
            Step.RECLAIM_PAGES: lambda given: [],
        }

    def statements(self, steps: list[Planned]) -> list[Bound]:
        """A transaction's statements, in `plan`'s order."""
        return [bound for kind, given in steps for bound in self._steps[kind](given)]


def _last_id(rows: list[Row]) -> list[Row]:
    return _last_by(0, rows)
