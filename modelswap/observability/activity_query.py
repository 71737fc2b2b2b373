"""The activity API's query language and statistics, as pure functions (server spec §17).

:func:`parse_activity_query` turns ``GET /api/metrics/activity``'s query
parameters into an :class:`ActivityQuery` or raises a 400 with the spec's
exact message; :func:`histogram` builds the ``/api/metrics/stats``
histograms. Both are plain data in, plain data out, so they are tested
table-driven without a database or a server; the SQLite store
(:mod:`~modelswap.observability.activity_store`) only executes the result.

Validation follows llama-swap's order and rules (Go's ``strconv.Atoi`` and
``time.Parse(time.RFC3339, …)``): ``start``, ``end``, start after end,
``min_id``, ``max_id``, min above max, ``limit``, ``page``, ``sort``, ``order``;
each singular parameter takes its first value, trimmed; an empty one is absent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from modelswap.errors import ClientError

__all__ = [
    "DEFAULT_LIMIT",
    "SORT_COLUMNS",
    "ActivityQuery",
    "histogram",
    "parse_activity_query",
    "parse_rfc3339",
    "total_pages",
]

DEFAULT_LIMIT = 25
MAX_LIMIT = 999
_INT64_MAX = 2**63 - 1

SORT_COLUMNS: dict[str, str] = {
    "id": "id",
    "time": "ts_created",
    "model": "model_id",
    "req_path": "req_path",
    "resp_status_code": "resp_status_code",
    "resp_content_type": "resp_content_type",
    "cached": "cache_tokens",
    "prompt": "input_tokens",
    "generated": "output_tokens",
    "drafted": "draft_tokens",
    "prompt_speed": "prompt_per_second",
    "gen_speed": "tokens_per_second",
    "duration": "duration_ms",
}
"""API sort key → SQL column. Only these column names ever reach a query."""

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:(Z)|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_GO_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ActivityQuery:
    """One validated activity page request. ``start``/``end`` are unix seconds (inclusive)."""

    models: tuple[str, ...] = ()
    start: int | None = None
    end: int | None = None
    min_id: int | None = None
    max_id: int | None = None
    limit: int = DEFAULT_LIMIT
    page: int = 1
    sort: str = "id"
    order: str = "desc"

    @property
    def offset(self) -> int:
        """Rows to skip, capped so SQLite can bind it (a page that far is simply empty)."""
        return min((self.page - 1) * self.limit, _INT64_MAX)


def parse_rfc3339(text: str) -> datetime | None:
    """Go's ``time.Parse(time.RFC3339, text)``: an aware datetime, or None if invalid."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    if zulu:
        tz = UTC
    else:
        if int(off_h) >= 24 or int(off_m) >= 60:
            return None
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        tz = timezone(-offset if sign == "-" else offset)
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        return datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tz
        )
    except ValueError:
        return None


def _unix(moment: datetime) -> int:
    """Go's ``Time.Unix()``: whole seconds since the epoch, rounded down."""
    return (moment - _EPOCH) // timedelta(seconds=1)


def _go_atoi(text: str) -> int | None:
    if _GO_INT.fullmatch(text) is None:
        return None
    value = int(text)
    return value if -_INT64_MAX - 1 <= value <= _INT64_MAX else None


def _first(params: dict[str, list[str]], name: str) -> str:
    values = params.get(name)
    return values[0].strip() if values else ""


def _time_param(params: dict[str, list[str]], name: str) -> datetime | None:
    raw = _first(params, name)
    if not raw:
        return None
    moment = parse_rfc3339(raw)
    if moment is None:
        raise ClientError(f"invalid '{name}' timestamp, use RFC3339 format")
    return moment


def _id_param(params: dict[str, list[str]], name: str) -> int | None:
    raw = _first(params, name)
    if not raw:
        return None
    value = _go_atoi(raw)
    if value is None or value < 1:
        raise ClientError(f"{name} must be >= 1")
    return value


def parse_activity_query(pairs: Iterable[tuple[str, str]]) -> ActivityQuery:
    """Validate the query string's ``(name, value)`` pairs; ClientError (400) on a bad one."""
    params: dict[str, list[str]] = {}
    for name, value in pairs:
        params.setdefault(name, []).append(value)
    models = tuple(m for m in (raw.strip() for raw in params.get("model", ())) if m)

    start = _time_param(params, "start")
    end = _time_param(params, "end")
    if start is not None and end is not None and start > end:
        raise ClientError("start must be before end")
    min_id = _id_param(params, "min_id")
    max_id = _id_param(params, "max_id")
    if min_id is not None and max_id is not None and min_id > max_id:
        raise ClientError("min_id must be <= max_id")

    limit = DEFAULT_LIMIT
    if raw := _first(params, "limit"):
        parsed = _go_atoi(raw)
        if parsed is None:
            raise ClientError("invalid limit")
        if not 1 <= parsed <= MAX_LIMIT:
            raise ClientError(f"limit must be between 1 and {MAX_LIMIT}")
        limit = parsed
    page = 1
    if raw := _first(params, "page"):
        parsed = _go_atoi(raw)
        if parsed is None or parsed < 1:
            raise ClientError("page must be >= 1")
        page = parsed
    sort = "id"
    if raw := _first(params, "sort"):
        if raw not in SORT_COLUMNS:
            raise ClientError("invalid sort column")
        sort = raw
    order = "desc"
    if raw := _first(params, "order"):
        order = raw.lower()
        if order not in ("asc", "desc"):
            raise ClientError("order must be asc or desc")

    return ActivityQuery(
        models=models,
        start=None if start is None else _unix(start),
        end=None if end is None else _unix(end),
        min_id=min_id,
        max_id=max_id,
        limit=limit,
        page=page,
        sort=sort,
        order=order,
    )


def where_clause(query: ActivityQuery) -> tuple[str, list[Any]]:
    """``" WHERE …"`` (or "") and its parameters: every filter ANDed, all inclusive."""
    conditions: list[str] = []
    args: list[Any] = []
    if query.models:
        conditions.append(f"model_id IN ({', '.join('?' * len(query.models))})")
        args.extend(query.models)
    for column, op, value in (
        ("ts_created", ">=", query.start),
        ("ts_created", "<=", query.end),
        ("id", ">=", query.min_id),
        ("id", "<=", query.max_id),
    ):
        if value is not None:
            conditions.append(f"{column} {op} ?")
            args.append(value)
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), args


def order_clause(query: ActivityQuery) -> str:
    """``ORDER BY <col> <dir>, id <dir>`` (just ``id <dir>`` for id): stable pages."""
    column = SORT_COLUMNS.get(query.sort, "id")
    direction = "ASC" if query.order == "asc" else "DESC"
    if column == "id":
        return f" ORDER BY id {direction}"
    return f" ORDER BY {column} {direction}, id {direction}"


def total_pages(total: int, limit: int) -> int:
    """``ceil(total/limit)``; 0 when there are no rows."""
    return 0 if total <= 0 or limit <= 0 else -(-total // limit)


def _percentile(ordered: list[float], p: float) -> float:
    if len(ordered) == 1:
        return ordered[0]
    rank = p / 100 * (len(ordered) - 1)
    lower = math.floor(rank)
    upper = math.ceil(rank)
    return ordered[lower] + (rank - lower) * (ordered[upper] - ordered[lower])


def histogram(values: Iterable[float]) -> dict[str, Any] | None:
    """The stats histogram of the positive rates given (spec §17); None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    low, high = ordered[0], ordered[-1]
    count = len(ordered)
    p50, p95, p99 = (_percentile(ordered, p) for p in (50, 95, 99))
    if low == high:
        bins, bin_size = [count], 0.0
    else:
        bin_count = min(20, max(5, math.ceil(math.log2(count)) + 1))
        bin_size = (high - low) / bin_count
        bins = [0] * bin_count
        for value in ordered:
            bins[min(math.floor((value - low) / bin_size), bin_count - 1)] += 1
    return {
        "bins": bins,
        "min": low,
        "max": high,
        "binSize": bin_size,
        "p50": p50,
        "p95": p95,
        "p99": p99,
    }
