"""The activity store (server spec §17): finished requests as SQLite rows, and the queries on them.

Storage is SQLite, in memory by default (the newest ``metricsMaxInMemory``
rows are kept: after each insert batch every row with ``id <= MAX(id) - cap``
is deleted) or a file when ``store.path`` is set (WAL, busy timeout 5 s,
unbounded, survives restarts — rows and ids continue). The ``activity`` table
is exactly llama-swap's, so a file either program created opens in the other.

modelswap adds, all nullable so llama-swap ignores them:

* the **explain columns** (``queue_ms`` … ``gen_ms``): where a request's time
  went (:class:`~modelswap.observability.records.Explain`). A file llama-swap
  created is migrated on open with ``ALTER TABLE … ADD COLUMN``;
* a **loads** table: each model's load durations, so a client can be told how
  long a cold start usually takes (:meth:`ActivityStore.expected_load`);
* a **footprints** table: each model's latest measured memory (resource →
  bytes), so memory-aware eviction knows what a model really uses from the
  first request after a restart (:meth:`ActivityStore.footprints`).

Concurrency: the recorder calls :meth:`record_many` (from its writer thread
with a file store, from the event loop in memory) while the event loop (or
``asyncio.to_thread``) runs the queries. There is exactly one
connection, opened with ``check_same_thread=False`` and guarded by one
``threading.Lock``: an in-memory database exists only inside its connection,
so readers must share the writer's; and a ``sqlite3.Connection`` must not be
used by two threads at the same moment, which the lock guarantees. Every
locked section is one short statement group; parsing (:mod:`usage`) and JSON
building happen outside the lock.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import statistics as stats_module
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from modelswap.observability.activity_query import (
    ActivityQuery,
    histogram,
    order_clause,
    total_pages,
    where_clause,
)
from modelswap.observability.records import Explain, RequestRecord
from modelswap.observability.usage import parse_record

__all__ = ["DEFAULT_MAX_IN_MEMORY", "LOADS_KEPT", "ActivityStore"]

DEFAULT_MAX_IN_MEMORY = 1000
LOADS_KEPT = 50
"""Load durations remembered per model (only the last few feed the estimate)."""
LOADS_FOR_ESTIMATE = 5
BUSY_TIMEOUT_S = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS activity (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  ts_created INTEGER NOT NULL,
  model_id TEXT NOT NULL,
  req_path TEXT NOT NULL DEFAULT '',
  resp_content_type TEXT NOT NULL DEFAULT '',
  resp_status_code INTEGER NOT NULL DEFAULT 0,
  cache_tokens INTEGER NOT NULL DEFAULT 0,
  draft_tokens INTEGER NOT NULL DEFAULT 0,
  draft_acc_tokens INTEGER NOT NULL DEFAULT 0,
  input_tokens INTEGER NOT NULL DEFAULT 0,
  output_tokens INTEGER NOT NULL DEFAULT 0,
  prompt_per_second REAL NOT NULL DEFAULT 0,
  tokens_per_second REAL NOT NULL DEFAULT 0,
  duration_ms INTEGER NOT NULL DEFAULT 0,
  error_msg TEXT NOT NULL DEFAULT '',
  metadata_json TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS idx_activity_created_id ON activity (ts_created DESC, id DESC);
CREATE INDEX IF NOT EXISTS idx_activity_model_created_id
  ON activity (model_id, ts_created DESC, id DESC);
CREATE TABLE IF NOT EXISTS loads (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  ts_created INTEGER NOT NULL,
  model_id TEXT NOT NULL,
  duration_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_loads_model_id ON loads (model_id, id DESC);
CREATE TABLE IF NOT EXISTS footprints (
  model_id TEXT PRIMARY KEY,
  ts_created INTEGER NOT NULL,
  sizes_json TEXT NOT NULL
);
"""

EXPLAIN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("queue_ms", "REAL"),
    ("swap_model", "TEXT"),
    ("evicted", "TEXT"),
    ("evict_reason", "TEXT"),
    ("evict_ms", "REAL"),
    ("load_ms", "REAL"),
    ("ttfb_ms", "REAL"),
    ("gen_ms", "REAL"),
)

_COLUMNS = (
    "ts_created, model_id, req_path, resp_content_type, resp_status_code, "
    "cache_tokens, draft_tokens, draft_acc_tokens, input_tokens, output_tokens, "
    "prompt_per_second, tokens_per_second, duration_ms, error_msg, metadata_json, "
    + ", ".join(name for name, _ in EXPLAIN_COLUMNS)
)
_INSERT = f"INSERT INTO activity ({_COLUMNS}) VALUES ({', '.join('?' * 23)})"
_INSERT_WITH_ID = f"INSERT INTO activity (id, {_COLUMNS}) VALUES ({', '.join('?' * 24)})"
_SELECT = f"SELECT id, {_COLUMNS} FROM activity"
_NO_EXPLAIN: tuple[Any, ...] = (None,) * len(EXPLAIN_COLUMNS)

Row = tuple[Any, ...]


def _row_params(record: RequestRecord) -> Row:
    """The INSERT parameters of one record (parses its body: the costly part)."""
    usage = parse_record(record)
    metadata = json.dumps(dict(record.metadata), sort_keys=True) if record.metadata else ""
    explain = record.explain
    explained = _NO_EXPLAIN
    if explain is not None:
        explained = (
            explain.queue_ms,
            explain.swap_model,
            json.dumps(list(explain.evicted)),
            explain.evict_reason,
            explain.evict_ms,
            explain.load_ms,
            explain.ttfb_ms,
            explain.gen_ms,
        )
    return (
        int(record.ended_wall),
        record.model,
        record.req_path,
        record.resp_content_type,
        record.status,
        usage.cache_tokens,
        usage.draft_tokens,
        usage.draft_acc_tokens,
        usage.input_tokens,
        usage.output_tokens,
        usage.prompt_per_second,
        usage.tokens_per_second,
        usage.duration_ms,
        usage.error_msg,
        metadata,
        *explained,
    )


_AFFINITY = "ittttiiiiiirritt" + "rtttrrrr"
"""Each row column's SQLite affinity (``i`` INTEGER, ``r`` REAL, ``t`` TEXT), id first."""
_REAL = tuple(i for i, kind in enumerate(_AFFINITY) if kind == "r")
_INTEGER = tuple(i for i, kind in enumerate(_AFFINITY) if kind == "i")


def _as_stored(row: Row) -> Row:
    """``row`` as SQLite would give it back: INTEGER affinity turns an integral float
    into an int, REAL turns an int into a float (so ``-1`` reads back as ``-1.0``)."""
    out = list(row)
    for index in _REAL:
        if type(out[index]) is int:
            out[index] = float(out[index])
    for index in _INTEGER:
        value = out[index]
        if type(value) is float and value.is_integer():
            out[index] = int(value)
    return tuple(out)


def format_timestamp(ts: int) -> str:
    """RFC3339 at second precision in the local offset (``Z`` when local is UTC), as Go's."""
    return _format_timestamp(ts, time.timezone, time.altzone)


@functools.lru_cache(maxsize=8)
def _format_timestamp(ts: int, _zone: int, _alt_zone: int) -> str:
    """Cached per second (rows of one second share it); the zone is in the key for ``tzset``."""
    text = datetime.fromtimestamp(ts, UTC).astimezone().isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _no_capture(_row_id: int) -> bool:
    return False


def _nothing_pending() -> None:
    return None


class ActivityStore:
    """SQLite-backed activity rows and load history (module doc)."""

    def __init__(
        self,
        path: str | None,
        max_in_memory: int,
        *,
        has_capture: Callable[[int], bool] | None = None,
    ) -> None:
        self._path = path or None
        in_memory_cap = max_in_memory if max_in_memory > 0 else DEFAULT_MAX_IN_MEMORY
        self._cap = in_memory_cap if self._path is None else 0
        self._has_capture = has_capture or _no_capture
        self._before_read: Callable[[], None] = _nothing_pending
        self._lock = threading.Lock()
        self._last_id = 0
        self._reserved = 0
        """In memory: the last row id handed out (rows may be made later, in id order)."""
        self._conn = sqlite3.connect(
            self._path or ":memory:",
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,  # autocommit: transactions are explicit
            check_same_thread=False,  # one connection, serialised by self._lock
        )
        try:
            self._open()
        except BaseException:
            self._conn.close()
            raise

    def _open(self) -> None:
        conn = self._conn
        if self._path is not None:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            # With WAL, NORMAL only risks the last commits on power loss, never corruption,
            # and spares an fsync per batch.
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        present = {row[1] for row in conn.execute("PRAGMA table_info(activity)")}
        for name, sql_type in EXPLAIN_COLUMNS:
            if name not in present:  # a file llama-swap created: add modelswap's columns
                conn.execute(f"ALTER TABLE activity ADD COLUMN {name} {sql_type}")
        self._last_id = conn.execute("SELECT COALESCE(MAX(id), 0) FROM activity").fetchone()[0]
        self._reserved = self._last_id

    def __repr__(self) -> str:
        where = self._path or ":memory:"
        keep = f"keep={self._cap}" if self._cap else "unbounded"
        return f"<ActivityStore {where!r} {keep} last_id={self._last_id}>"

    @property
    def path(self) -> str | None:
        return self._path

    @property
    def max_rows(self) -> int | None:
        """Rows kept (in memory); None for a file store."""
        return self._cap or None

    def set_capture_lookup(self, has_capture: Callable[[int], bool]) -> None:
        """Where ``has_capture`` of a row comes from (the capture cache, wired later)."""
        self._has_capture = has_capture

    def set_before_read(self, make_pending_rows: Callable[[], None]) -> None:
        """Called before every query of the rows: makes rows still pending (the row backlog)."""
        self._before_read = make_pending_rows

    def close(self) -> None:
        """Close the database (idempotent); later calls raise ``sqlite3.ProgrammingError``."""
        with self._lock:
            self._conn.close()

    # --- writes ------------------------------------------------------------------------

    def record(self, record: RequestRecord) -> int:
        """Store one finished request; its row id."""
        return self.record_many((record,))[0]

    def record_many(self, records: Sequence[RequestRecord]) -> list[int]:
        """Store a batch in one transaction; the row ids, in order.

        Ids are consecutive. In memory they are handed out by
        :meth:`reserve_ids` (rows may also be made later, by
        :meth:`insert_rows`); in a file, the batch is inserted inside one
        ``BEGIN IMMEDIATE`` under the lock, so nothing else inserts in
        between, and ``AUTOINCREMENT`` hands out ``previous + 1`` each time.
        """
        if not records:
            return []
        if self._cap:
            ids = self.reserve_ids(len(records))
            try:
                self.insert_rows(list(zip(ids, records, strict=True)))
            except BaseException:
                with self._lock:  # nothing stored: hand the ids out again (if still the last)
                    if self._reserved == ids[-1]:
                        self._reserved = ids[0] - 1
                raise
            return list(ids)
        rows = [_row_params(record) for record in records]
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_INSERT, rows)
                last: int = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._last_id = last
        return list(range(last - len(rows) + 1, last + 1))

    def reserve_ids(self, count: int) -> range:
        """In memory: the next ``count`` row ids, for rows made later by :meth:`insert_rows`."""
        if not self._cap:
            raise RuntimeError("row ids are reserved only in memory (a file store counts its own)")
        with self._lock:
            first = self._reserved + 1
            self._reserved += count
        return range(first, first + count)

    def insert_rows(
        self,
        rows: Sequence[tuple[int, RequestRecord]],
        prepared: Mapping[int, Row] | None = None,
    ) -> None:
        """In memory: make these rows under their reserved ids (ascending), in one transaction.

        ``prepared`` holds the :meth:`row_params` of rows already made for a
        live push (:meth:`entry_of`), so their bodies are not parsed twice.
        Afterwards every row with ``id <= newest − cap`` is deleted, as after
        any insert: the store keeps the newest ``metricsMaxInMemory`` rows.
        """
        if not rows:
            return
        known = prepared or {}
        params = [(row_id, *(known.get(row_id) or _row_params(record))) for row_id, record in rows]
        last = rows[-1][0]
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_INSERT_WITH_ID, params)
                if last > self._cap:
                    conn.execute("DELETE FROM activity WHERE id <= ?", (last - self._cap,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._last_id = max(self._last_id, last)

    @staticmethod
    def row_params(record: RequestRecord) -> Row:
        """What a row of ``record`` holds (its body parsed), before it has an id."""
        return _row_params(record)

    def entry_of(self, row_id: int, params: Row, has_capture: bool) -> dict[str, Any]:
        """The row JSON of a row not stored yet, exactly as :meth:`entries` will return it.

        For the live ``metrics`` event: with the in-memory store the row itself
        is made later (the row backlog), so it is not inserted and selected
        back just to be shown.
        """
        return self._entry(_as_stored((row_id, *params)), has_capture)

    def record_load(self, model_id: str, seconds: float, wall: float) -> None:
        """Remember that ``model_id`` took ``seconds`` to load (finished at ``wall``)."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT INTO loads (ts_created, model_id, duration_ms) VALUES (?, ?, ?)",
                    (int(wall), model_id, seconds * 1000.0),
                )
                conn.execute(
                    "DELETE FROM loads WHERE model_id = ? AND id <= ("
                    "SELECT id FROM loads WHERE model_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (model_id, model_id, LOADS_KEPT),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def record_footprint(self, model_id: str, sizes: Mapping[str, int], wall: float) -> None:
        """Remember ``model_id``'s latest measured memory (replaces the previous one)."""
        text = json.dumps(dict(sorted(sizes.items())))
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO footprints (model_id, ts_created, sizes_json) "
                "VALUES (?, ?, ?)",
                (model_id, int(wall), text),
            )

    def footprints(self) -> dict[str, dict[str, int]]:
        """Every remembered footprint: model → resource → bytes (bad rows are skipped)."""
        with self._lock:
            rows = self._conn.execute("SELECT model_id, sizes_json FROM footprints").fetchall()
        found: dict[str, dict[str, int]] = {}
        for model_id, text in rows:
            try:
                sizes = json.loads(text)
            except ValueError:
                continue
            if isinstance(sizes, dict):
                found[model_id] = {
                    str(k): int(v)
                    for k, v in sizes.items()
                    if isinstance(v, int) and not isinstance(v, bool)
                }
        return found

    # --- reads ---------------------------------------------------------------------------

    def recent_loads(self, model_id: str, n: int = LOADS_FOR_ESTIMATE) -> list[float]:
        """The last ``n`` load durations of ``model_id`` in seconds, newest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT duration_ms FROM loads WHERE model_id = ? ORDER BY id DESC LIMIT ?",
                (model_id, max(0, n)),
            ).fetchall()
        return [row[0] / 1000.0 for row in rows]

    def load_history(self, n: int = LOADS_FOR_ESTIMATE) -> dict[str, list[float]]:
        """Every model's last ``n`` load durations in seconds, newest first (seeds estimates)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT model_id, duration_ms FROM ("
                " SELECT model_id, duration_ms,"
                " ROW_NUMBER() OVER (PARTITION BY model_id ORDER BY id DESC) AS rn FROM loads"
                ") WHERE rn <= ? ORDER BY model_id, rn",
                (max(0, n),),
            ).fetchall()
        history: dict[str, list[float]] = {}
        for model_id, duration_ms in rows:
            history.setdefault(model_id, []).append(duration_ms / 1000.0)
        return history

    def expected_load(self, model_id: str) -> tuple[float, int] | None:
        """``(median seconds of the last 5 loads, how many loads)``; None if never loaded."""
        loads = self.recent_loads(model_id, LOADS_FOR_ESTIMATE)
        if not loads:
            return None
        return stats_module.median(loads), len(loads)

    def activity(self, query: ActivityQuery) -> dict[str, Any]:
        """One page of rows (spec §17): ``{data, page, limit, total, total_pages}``."""
        self._before_read()
        where, args = where_clause(query)
        sql = f"{_SELECT}{where}{order_clause(query)} LIMIT ? OFFSET ?"
        with self._lock:
            conn = self._conn
            total: int = conn.execute(f"SELECT COUNT(*) FROM activity{where}", args).fetchone()[0]
            rows = conn.execute(sql, (*args, query.limit, query.offset)).fetchall()
        return {
            "data": [self._entry(row) for row in rows],
            "page": query.page,
            "limit": query.limit,
            "total": total,
            "total_pages": total_pages(total, query.limit),
        }

    def entries(self, row_ids: Sequence[int]) -> list[dict[str, Any]]:
        """The rows with these ids (those still stored), ascending: e.g. for ``/api/events``."""
        self._before_read()
        if not row_ids:
            return []
        marks = ", ".join("?" * len(row_ids))
        with self._lock:
            rows = self._conn.execute(
                f"{_SELECT} WHERE id IN ({marks}) ORDER BY id", tuple(row_ids)
            ).fetchall()
        return [self._entry(row) for row in rows]

    def stats(self, model: str | None = None) -> dict[str, Any]:
        """Totals and rate histograms over every row, or one model's (spec §17)."""
        self._before_read()
        where, args = ("", ()) if not model else (" WHERE model_id = ?", (model,))
        rated = f"{where} AND" if where else " WHERE"
        with self._lock:
            conn = self._conn
            requests, inputs, outputs, cached = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),"
                " COALESCE(SUM(CASE WHEN cache_tokens > 0 THEN cache_tokens ELSE 0 END), 0)"
                f" FROM activity{where}",
                args,
            ).fetchone()
            rates = conn.execute(
                "SELECT prompt_per_second, tokens_per_second FROM activity"
                f"{rated} (prompt_per_second > 0 OR tokens_per_second > 0)",
                args,
            ).fetchall()
        return {
            "total_requests": requests,
            "total_input_tokens": inputs,
            "total_output_tokens": outputs,
            "total_cache_tokens": cached,
            "prompt_histogram": histogram(p for p, _ in rates if p > 0),
            "gen_histogram": histogram(g for _, g in rates if g > 0),
        }

    def _entry(self, row: Row, has_capture: bool | None = None) -> dict[str, Any]:
        """One ``ActivityLogEntry`` (spec §17) plus modelswap's ``explain``."""
        (
            row_id, ts, model, req_path, content_type, status,
            cache, draft, draft_acc, inputs, outputs, prompt_rate, gen_rate,
            duration, error_msg, metadata_json,
            queue_ms, swap_model, evicted, evict_reason, evict_ms, load_ms, ttfb_ms, gen_ms,
        ) = row  # fmt: skip
        entry: dict[str, Any] = {
            "id": row_id,
            "timestamp": format_timestamp(ts),
            "model": model,
            "req_path": req_path,
            "resp_content_type": content_type,
            "resp_status_code": status,
            "tokens": {
                "cache_tokens": cache,
                "draft_tokens": draft,
                "draft_acc_tokens": draft_acc,
                "input_tokens": inputs,
                "output_tokens": outputs,
                "prompt_per_second": prompt_rate,
                "tokens_per_second": gen_rate,
            },
            "duration_ms": duration,
            "has_capture": bool(self._has_capture(row_id)) if has_capture is None else has_capture,
        }
        if error_msg:
            entry["error_msg"] = error_msg
        if metadata_json:
            metadata = json.loads(metadata_json)
            if metadata:
                entry["metadata"] = metadata
        if queue_ms is not None:
            entry["explain"] = Explain(
                queue_ms=queue_ms,
                swap_model=swap_model,
                evicted=tuple(json.loads(evicted)) if evicted else (),
                evict_reason=evict_reason,
                evict_ms=evict_ms,
                load_ms=load_ms,
                ttfb_ms=ttfb_ms,
                gen_ms=gen_ms,
            ).as_json()
        return entry
