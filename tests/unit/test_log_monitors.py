"""Proxy log lines, time layouts, logLevel, logToStdout routing and the stdout pump.

No sockets. The only thread is the stdout pump's own; its tests wait on
``threading.Event``s the fake writer sets, never on time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from modelswap.observability.log_fanout import dropped_marker
from modelswap.observability.log_monitors import LogMonitors, StdoutPump
from modelswap.observability.proxy_log import (
    GoTimeFormat,
    ProxyLogHandler,
    StartupLogHandler,
    attach_handler,
    detach_handler,
    log_line,
    parse_log_level,
)

DEADLINE = 5.0
MST = timezone(timedelta(hours=-7), "MST")
# Go's reference time, the one its layouts are written in, plus a fraction.
REFERENCE = datetime(2006, 1, 2, 15, 4, 5, 123456, MST).timestamp()


def make_logger(handler: logging.Handler, name: str = "t") -> logging.Logger:
    """A logger outside the global tree, so tests never touch real loggers."""
    logger = logging.Logger(name, logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    return logger


def lines_for(level: str = "info", time_format: str = "") -> tuple[logging.Logger, list[bytes]]:
    out: list[bytes] = []
    return make_logger(ProxyLogHandler(out.append, level=level, time_format=time_format)), out


# --- line format -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "label"),
    [
        (logging.DEBUG, "DEBUG"),
        (logging.INFO, "INFO"),
        (logging.WARNING, "WARN"),
        (logging.ERROR, "ERROR"),
        (logging.CRITICAL, "ERROR"),
        (25, "INFO"),
        (15, "DEBUG"),
    ],
)
def test_line_is_level_then_message(level: int, label: str) -> None:
    logger, out = lines_for("debug")
    logger.log(level, "Request %s done", "1.2.3.4")
    assert out == [f"[{label}] Request 1.2.3.4 done\n".encode()]


def test_one_sink_call_per_line_utf8() -> None:
    logger, out = lines_for()
    logger.info("héllo — ✓")
    logger.info("second")
    assert out == ["[INFO] héllo — ✓\n".encode(), b"[INFO] second\n"]


def test_traceback_follows_on_the_next_lines() -> None:
    logger, out = lines_for()
    try:
        raise ValueError("boom inside")
    except ValueError:
        logger.exception("request failed")
    text = b"".join(out).decode()
    assert text.startswith("[ERROR] request failed\nTraceback (most recent call last):\n")
    assert text.endswith("ValueError: boom inside\n")
    assert len(out) == 1


@pytest.mark.parametrize(
    ("config", "passed"),
    [
        ("debug", ["DEBUG", "INFO", "WARN", "ERROR", "ERROR"]),
        ("info", ["INFO", "WARN", "ERROR", "ERROR"]),
        ("warn", ["WARN", "ERROR", "ERROR"]),
        ("error", ["ERROR", "ERROR"]),
        ("  DeBuG ", ["DEBUG", "INFO", "WARN", "ERROR", "ERROR"]),
        ("WARN", ["WARN", "ERROR", "ERROR"]),
        ("warning", ["INFO", "WARN", "ERROR", "ERROR"]),  # not a llama-swap level: info
        ("", ["INFO", "WARN", "ERROR", "ERROR"]),
        ("verbose", ["INFO", "WARN", "ERROR", "ERROR"]),
    ],
)
def test_log_level_drops_lines_below_it(config: str, passed: list[str]) -> None:
    logger, out = lines_for(config)
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
        logger.log(level, "x")
    assert [line.decode().split("]")[0][1:] for line in out] == passed


def test_parse_log_level() -> None:
    assert parse_log_level(" Error\n") == logging.ERROR
    assert parse_log_level("nonsense") == logging.INFO


# --- time layouts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ansic", "Mon Jan  2 15:04:05 2006"),
        ("unixdate", "Mon Jan  2 15:04:05 MST 2006"),
        ("rubydate", "Mon Jan 02 15:04:05 -0700 2006"),
        ("rfc822", "02 Jan 06 15:04 MST"),
        ("rfc822z", "02 Jan 06 15:04 -0700"),
        ("rfc850", "Monday, 02-Jan-06 15:04:05 MST"),
        ("rfc1123", "Mon, 02 Jan 2006 15:04:05 MST"),
        ("rfc1123z", "Mon, 02 Jan 2006 15:04:05 -0700"),
        ("rfc3339", "2006-01-02T15:04:05-07:00"),
        ("rfc3339nano", "2006-01-02T15:04:05.123456-07:00"),
        ("kitchen", "3:04PM"),
        ("stamp", "Jan  2 15:04:05"),
        ("stampmilli", "Jan  2 15:04:05.123"),
        ("stampmicro", "Jan  2 15:04:05.123456"),
        ("stampnano", "Jan  2 15:04:05.123456000"),
        ("RFC3339", "2006-01-02T15:04:05-07:00"),
        (" Kitchen ", "3:04PM"),
    ],
)
def test_go_layouts_print_the_reference_time_as_go_does(name: str, expected: str) -> None:
    assert GoTimeFormat(name, MST).prefix(REFERENCE) == expected + " "


@pytest.mark.parametrize("name", ["", "iso8601", "2006-01-02", "datetime"])
def test_empty_or_unknown_layout_means_no_prefix(name: str) -> None:
    assert GoTimeFormat(name).prefix(REFERENCE) == ""
    logger, out = lines_for(time_format=name)
    logger.info("plain")
    assert out == [b"[INFO] plain\n"]


def test_utc_zero_fractions_noon_midnight_and_two_digit_days() -> None:
    utc = UTC
    at = datetime(2024, 3, 12, 0, 7, 9, 0, utc).timestamp()
    assert GoTimeFormat("rfc3339", utc).prefix(at) == "2024-03-12T00:07:09Z "
    assert GoTimeFormat("rfc3339nano", utc).prefix(at) == "2024-03-12T00:07:09Z "
    assert GoTimeFormat("rfc3339nano", utc).prefix(at + 0.5) == "2024-03-12T00:07:09.5Z "
    assert GoTimeFormat("stampmilli", utc).prefix(at) == "Mar 12 00:07:09.000 "
    assert GoTimeFormat("kitchen", utc).prefix(at) == "12:07AM "
    assert GoTimeFormat("kitchen", utc).prefix(at + 12 * 3600) == "12:07PM "
    assert GoTimeFormat("rfc1123z", utc).prefix(at) == "Tue, 12 Mar 2024 00:07:09 +0000 "


def test_cached_second_is_replaced_when_the_second_changes() -> None:
    fmt = GoTimeFormat("stampmilli", MST)
    assert fmt.prefix(REFERENCE) == "Jan  2 15:04:05.123 "
    assert fmt.prefix(REFERENCE + 0.5) == "Jan  2 15:04:05.623 "
    assert fmt.prefix(REFERENCE + 1) == "Jan  2 15:04:06.123 "
    assert fmt.prefix(REFERENCE + 86400) == "Jan  3 15:04:05.123 "


def test_local_time_when_no_zone_is_given() -> None:
    local = datetime.fromtimestamp(REFERENCE).astimezone()
    assert GoTimeFormat("rfc3339").prefix(REFERENCE).startswith(local.strftime("%Y-%m-%dT%H:%M"))


def test_timestamp_then_level_then_message() -> None:
    out: list[bytes] = []
    logger = make_logger(ProxyLogHandler(out.append, time_format="rfc3339", tz=MST))
    record = logger.makeRecord("t", logging.WARNING, __file__, 1, "disk %s", ("low",), None)
    record.created = REFERENCE
    logger.handle(record)
    assert out == [b"2006-01-02T15:04:05-07:00 [WARN] disk low\n"]


# --- log_line: the access line without a LogRecord ---------------------------------------


class Counting(ProxyLogHandler):
    """A proxy handler that counts the records it was handed (a subclass: never direct)."""

    def __init__(self, out: list[bytes], **kw: str) -> None:
        super().__init__(out.append, **kw)
        self.records = 0

    def handle(self, record: logging.LogRecord) -> bool:
        self.records += 1
        return super().handle(record)


@pytest.mark.parametrize("time_format", ["", "rfc3339", "rfc3339nano", "kitchen"])
def test_log_line_writes_what_a_record_would_without_making_one(
    time_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("time.time", lambda: REFERENCE)  # the record's clock and log_line's
    direct: list[bytes] = []
    logger = make_logger(ProxyLogHandler(direct.append, time_format=time_format, tz=MST))
    made = logging.Logger.makeRecord
    records: list[str] = []

    def spy(self: logging.Logger, *args: object, **kw: object) -> logging.LogRecord:
        records.append(self.name)
        return made(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(logging.Logger, "makeRecord", spy)
    log_line(logger, logging.INFO, 'Request 1.2.3.4 "GET / HTTP/1.1" 200 2 "%s" 1ms')
    assert records == []  # straight to the handler
    via_record: list[bytes] = []
    logger = make_logger(ProxyLogHandler(via_record.append, time_format=time_format, tz=MST))
    logger.info("%s", 'Request 1.2.3.4 "GET / HTTP/1.1" 200 2 "%s" 1ms')
    assert records == ["t"] and direct == via_record and len(direct) == 1


def test_log_line_respects_levels_and_propagation() -> None:
    out: list[bytes] = []

    def child_of(parent_level: int) -> logging.Logger:
        parent = logging.Logger("parent", parent_level)
        parent.addHandler(ProxyLogHandler(out.append, level="info"))
        child = logging.Logger("parent.child", logging.NOTSET)
        child.parent = parent
        return child

    log_line(child_of(logging.WARNING), logging.INFO, "below the logger's level")
    log_line(child_of(logging.DEBUG), logging.DEBUG, "below the handler's level")
    log_line(child_of(logging.DEBUG), logging.INFO, "through the parent")
    alone = child_of(logging.DEBUG)
    alone.propagate = False
    log_line(alone, logging.INFO, "not propagated: no handler, below the last resort")
    assert out == [b"[INFO] through the parent\n"]


def test_log_line_falls_back_to_a_record_for_any_other_handler_or_a_filter() -> None:
    out: list[bytes] = []
    counting = Counting(out)
    logger = make_logger(counting)
    log_line(logger, logging.INFO, "a subclass gets its record")
    assert counting.records == 1
    seen: list[str] = []

    class Other(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = make_logger(ProxyLogHandler(out.append))
    logger.addHandler(Other())
    log_line(logger, logging.INFO, "100% literal %s")  # never %-formatted
    assert seen == ["100% literal %s"]
    filtered = make_logger(ProxyLogHandler(out.append))
    filtered.addFilter(lambda record: "secret" not in record.getMessage())
    log_line(filtered, logging.INFO, "a secret")
    assert out == [b"[INFO] a subclass gets its record\n", b"[INFO] 100% literal %s\n"]


# --- attaching -----------------------------------------------------------------------------


def test_attach_lowers_the_logger_level_and_detach_restores_it() -> None:
    logger = logging.Logger("attach-test", logging.WARNING)
    first = ProxyLogHandler(lambda _: None, level="info")
    second = ProxyLogHandler(lambda _: None, level="debug")
    attach_handler(first, logger)
    assert logger.level == logging.INFO
    attach_handler(second, logger)
    assert logger.level == logging.DEBUG
    detach_handler(second, logger)
    assert logger.level == logging.INFO
    detach_handler(first, logger)
    assert logger.level == logging.WARNING
    assert logger.handlers == []


def test_startup_handler_is_silent_while_an_app_handler_is_attached() -> None:
    lines: list[str] = []

    class Stream:
        def write(self, text: str) -> None:
            lines.append(text)

        def flush(self) -> None:
            pass

    app_lines: list[bytes] = []
    logger = logging.Logger("startup-test", logging.INFO)
    logger.addHandler(StartupLogHandler(stream=Stream()))  # type: ignore[arg-type]
    logger.info("before")
    app = ProxyLogHandler(app_lines.append)
    attach_handler(app, logger)
    logger.info("serving")
    detach_handler(app, logger)
    logger.warning("after")
    assert lines == ["[INFO] before\n", "[WARN] after\n"]
    assert app_lines == [b"[INFO] serving\n"]


async def test_a_record_from_another_thread_is_written_on_the_loop() -> None:
    written = asyncio.Event()
    seen: list[tuple[bytes, int]] = []

    def sink(line: bytes) -> None:
        seen.append((line, threading.get_ident()))
        written.set()

    handler = ProxyLogHandler(sink)
    handler.bind_loop(asyncio.get_running_loop())
    logger = make_logger(handler)
    await asyncio.to_thread(logger.info, "from a worker")
    async with asyncio.timeout(DEADLINE):
        await written.wait()
    assert seen == [(b"[INFO] from a worker\n", threading.get_ident())]


# --- logToStdout routing -------------------------------------------------------------------


def feed(monitors: LogMonitors) -> None:
    monitors.proxy.write(b"[INFO] proxy line\n")
    monitors.upstream.write(b"model output\n")


@pytest.mark.parametrize(
    ("mode", "mux"),
    [
        ("proxy", b"[INFO] proxy line\n"),
        ("upstream", b"model output\n"),
        ("both", b"[INFO] proxy line\nmodel output\n"),
        ("none", b""),
    ],
)
def test_log_to_stdout_routes_into_mux(mode: str, mux: bytes) -> None:
    monitors = LogMonitors(mode)
    feed(monitors)
    assert monitors.mux.history() == mux
    # proxy and upstream keep their own history whatever the mode
    assert monitors.proxy.history() == b"[INFO] proxy line\n"
    assert monitors.upstream.history() == b"model output\n"


def test_the_handler_feeds_the_proxy_monitor_and_thus_mux() -> None:
    monitors = LogMonitors("both")
    logger = make_logger(ProxyLogHandler(monitors.proxy.write))
    logger.info("Request 1.2.3.4 ok")
    monitors.upstream.write(b"llama: loaded\n")
    assert monitors.mux.history() == b"[INFO] Request 1.2.3.4 ok\nllama: loaded\n"


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="logToStdout must be one of"):
        LogMonitors("stderr")


def test_each_monitor_keeps_100_kib_of_history() -> None:
    monitors = LogMonitors("both")
    monitors.upstream.write(b"x" * (200 * 1024))
    assert len(monitors.upstream.history()) == len(monitors.mux.history()) == 100 * 1024


class BlockingWriter:
    """A stdout that takes one write, then blocks until released (a stalled pipe)."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, data: bytes) -> None:
        self.data.append(data)
        self.entered.set()
        assert self.release.wait(DEADLINE)


async def test_mux_reaches_stdout_through_the_pump() -> None:
    writer = BlockingWriter()
    writer.release.set()
    monitors = LogMonitors("proxy", stdout=StdoutPump(writer))
    feed(monitors)
    await monitors.aclose()
    assert b"".join(writer.data) == b"[INFO] proxy line\n"


def test_none_mode_never_writes_stdout() -> None:
    writer = BlockingWriter()
    monitors = LogMonitors("none", stdout=StdoutPump(writer))
    feed(monitors)
    assert monitors.stdout is None
    assert writer.data == []


async def test_stalled_stdout_drops_and_counts_never_blocks() -> None:
    writer = BlockingWriter()
    pump = StdoutPump(writer, max_bytes=10)
    pump.write(b"first\n")
    assert writer.entered.wait(DEADLINE)  # the thread is now stuck writing "first\n"
    assert pump.pending_bytes == 6
    pump.write(b"abcd")  # 10 bytes pending: fits
    pump.write(b"e")  # would be 11: dropped
    pump.write(b"fgh")  # dropped
    assert (pump.dropped_bytes, pump.dropped_chunks) == (4, 2)
    writer.release.set()
    assert await pump.aclose()
    pump.write(b"after close")  # ignored
    assert b"".join(writer.data) == b"first\nabcd"

    second = BlockingWriter()
    pump = StdoutPump(second, max_bytes=10)
    pump.write(b"0123456789")
    assert second.entered.wait(DEADLINE)
    pump.write(b"lost")
    second.release.set()
    assert await pump.aclose() is True
    assert second.data == [b"0123456789"]


async def test_drop_marker_precedes_the_next_chunk_that_fits() -> None:
    writer = BlockingWriter()
    pump = StdoutPump(writer, max_bytes=30)
    pump.write(b"x" * 10)
    assert writer.entered.wait(DEADLINE)  # 10 pending while the thread is stuck
    pump.write(b"y" * 25)  # 35 > 30: dropped
    pump.write(b"z")  # fits: the marker goes first
    writer.release.set()
    assert await pump.aclose()
    assert b"".join(writer.data) == b"x" * 10 + dropped_marker(25) + b"z"
    assert (pump.dropped_bytes, pump.dropped_chunks) == (25, 1)


async def test_aclose_gives_up_on_a_stalled_stdout() -> None:
    writer = BlockingWriter()
    pump = StdoutPump(writer)
    pump.write(b"stuck")
    assert writer.entered.wait(DEADLINE)
    assert await pump.aclose(timeout=0.01) is False
    writer.release.set()


# --- stream bookkeeping --------------------------------------------------------------------


def test_close_streams_ends_idle_streams_and_cuts_stalled_ones() -> None:
    monitors = LogMonitors("proxy")
    monitors.proxy.write(b"old\n")
    cut: list[str] = []
    idle = monitors.open_stream(
        monitors.proxy, lambda: cut.append("idle"), with_history=True, queue_entries=10
    )
    stalled = monitors.open_stream(
        monitors.upstream, lambda: cut.append("stalled"), with_history=False, queue_entries=10
    )
    stalled.writing = True
    assert monitors.stream_count == 2
    monitors.close_streams()
    assert cut == ["stalled"]
    assert idle.ended and stalled.ended and monitors.stream_count == 0
    assert idle.subscription.get_nowait() == b"old\n"
    assert monitors.proxy.subscriber_count == monitors.upstream.subscriber_count == 0
    late = monitors.open_stream(
        monitors.proxy, lambda: cut.append("late"), with_history=True, queue_entries=10
    )
    assert late.ended and late.subscription.get_nowait() == b"old\n"
    assert monitors.stream_count == 0


def test_end_stream_unsubscribes() -> None:
    monitors = LogMonitors("proxy")
    stream = monitors.open_stream(monitors.mux, lambda: None, with_history=False, queue_entries=2)
    assert monitors.mux.subscriber_count == 1
    monitors.end_stream(stream)
    assert monitors.mux.subscriber_count == 0 and monitors.stream_count == 0
