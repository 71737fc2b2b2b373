"""The activity API's query parsing and histograms, without a database (spec §17, scenario 76)."""

from __future__ import annotations

import pytest

from modelswap.errors import ClientError
from modelswap.observability.activity_query import (
    ActivityQuery,
    histogram,
    order_clause,
    parse_activity_query,
    parse_rfc3339,
    total_pages,
    where_clause,
)


def q(text: str) -> ActivityQuery:
    pairs = [tuple(part.split("=", 1)) for part in text.split("&") if part]
    return parse_activity_query(pairs)  # type: ignore[arg-type]


def test_defaults() -> None:
    assert q("") == ActivityQuery(limit=25, page=1, sort="id", order="desc")


def test_everything_parsed() -> None:
    parsed = q(
        "model= m1 &model=&model=m3&start=1970-01-01T00:16:41Z&end=1970-01-01T01:16:42+01:00"
        "&min_id=+2&max_id=3&limit=10&page=2&sort=gen_speed&order=ASC"
    )
    assert parsed == ActivityQuery(
        models=("m1", "m3"),
        start=1001,
        end=1002,
        min_id=2,
        max_id=3,
        limit=10,
        page=2,
        sort="gen_speed",
        order="asc",
    )
    assert parsed.offset == 10


def test_singular_parameters_take_their_first_value_trimmed() -> None:
    assert q("limit= 7 &limit=9000&order=desc&order=nope") == ActivityQuery(limit=7)
    assert q("limit=&page=&sort=&order=&start=&min_id=  ") == ActivityQuery()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("min_id=abc", "min_id must be >= 1"),
        ("max_id=0", "max_id must be >= 1"),
        ("min_id=-1", "min_id must be >= 1"),
        ("min_id=1.5", "min_id must be >= 1"),
        ("min_id=99999999999999999999", "min_id must be >= 1"),
        ("min_id=9&max_id=2", "min_id must be <= max_id"),
        ("start=nonsense", "invalid 'start' timestamp, use RFC3339 format"),
        ("end=2026-01-01", "invalid 'end' timestamp, use RFC3339 format"),
        ("end=2026-01-01T10:00:00", "invalid 'end' timestamp, use RFC3339 format"),
        ("start=2026-02-30T10:00:00Z", "invalid 'start' timestamp, use RFC3339 format"),
        ("start=2026-01-01t10:00:00z", "invalid 'start' timestamp, use RFC3339 format"),
        ("start=2026-01-02T00:00:00Z&end=2026-01-01T00:00:00Z", "start must be before end"),
        # Sub-second precision counts, as in Go's Time.After.
        ("start=2026-01-01T00:00:00.5Z&end=2026-01-01T00:00:00Z", "start must be before end"),
        ("limit=abc", "invalid limit"),
        ("limit=0", "limit must be between 1 and 999"),
        ("limit=1000", "limit must be between 1 and 999"),
        ("limit=-3", "limit must be between 1 and 999"),
        ("page=0", "page must be >= 1"),
        ("page=x", "page must be >= 1"),
        ("sort=tokens", "invalid sort column"),
        ("sort=ts_created", "invalid sort column"),
        ("order=up", "order must be asc or desc"),
        # The first problem in llama-swap's order wins.
        ("order=up&limit=0&min_id=0&start=bad", "invalid 'start' timestamp, use RFC3339 format"),
        ("order=up&limit=0&max_id=x", "max_id must be >= 1"),
        ("order=up&page=0&limit=0", "limit must be between 1 and 999"),
    ],
)
def test_bad_parameters_are_400_with_the_spec_message(query: str, message: str) -> None:
    with pytest.raises(ClientError) as caught:
        q(query)
    assert caught.value.status == 400
    assert caught.value.message == message


def test_equal_bounds_are_fine() -> None:
    assert q("min_id=3&max_id=3").min_id == 3
    moment = "2026-01-01T00:00:00Z"
    assert q(f"start={moment}&end={moment}").start == q(f"end={moment}").end


@pytest.mark.parametrize(
    ("text", "unix"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T01:00:00+01:00", 0),
        ("1969-12-31T23:00:00-01:00", 0),
        ("1970-01-01T00:00:01.999999999Z", 1),
        ("1969-12-31T23:59:59.5Z", -1),
    ],
)
def test_rfc3339_to_unix_seconds_rounds_down(text: str, unix: int) -> None:
    assert parse_rfc3339(text) is not None
    assert q(f"start={text}").start == unix


def test_where_and_order_clauses() -> None:
    where, args = where_clause(q("model=a&model=b&start=1970-01-01T00:00:05Z&min_id=2&max_id=4"))
    assert where == " WHERE model_id IN (?, ?) AND ts_created >= ? AND id >= ? AND id <= ?"
    assert args == ["a", "b", 5, 2, 4]
    assert where_clause(q("")) == ("", [])
    assert order_clause(q("")) == " ORDER BY id DESC"
    assert order_clause(q("sort=id&order=asc")) == " ORDER BY id ASC"
    assert order_clause(q("sort=prompt")) == " ORDER BY input_tokens DESC, id DESC"


def test_huge_page_offsets_stay_bindable() -> None:
    assert q("page=9223372036854775807&limit=999").offset == 2**63 - 1


@pytest.mark.parametrize(
    ("total", "limit", "pages"), [(0, 25, 0), (1, 25, 1), (25, 25, 1), (26, 25, 2), (3, 1, 3)]
)
def test_total_pages(total: int, limit: int, pages: int) -> None:
    assert total_pages(total, limit) == pages


def test_histogram_of_nothing_is_none() -> None:
    assert histogram([]) is None


def test_histogram_of_equal_values_is_one_bin() -> None:
    assert histogram([7.0, 7.0, 7.0]) == {
        "bins": [3],
        "min": 7.0,
        "max": 7.0,
        "binSize": 0.0,
        "p50": 7.0,
        "p95": 7.0,
        "p99": 7.0,
    }


def test_histogram_of_two_values_uses_at_least_five_bins() -> None:
    h = histogram([30.0, 10.0])
    assert h is not None
    assert h["bins"] == [1, 0, 0, 0, 1]
    assert (h["min"], h["max"], h["binSize"]) == (10.0, 30.0, 4.0)
    assert h["p50"] == pytest.approx(20.0)
    assert h["p95"] == pytest.approx(29.0)
    assert h["p99"] == pytest.approx(29.8)


def test_histogram_bin_count_follows_sturges_and_caps_at_twenty() -> None:
    h = histogram([float(v) for v in range(1, 101)])  # ceil(log2 100) + 1 = 8 bins
    assert h is not None and h["binSize"] == 99 / 8
    assert h["bins"] == [13, 12, 13, 12, 12, 13, 12, 13]  # the max lands in the last bin
    big = histogram([float(v) for v in range(2**20)])
    assert big is not None and len(big["bins"]) == 20
