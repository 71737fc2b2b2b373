"""modelswap's own log records as llama-swap's proxy log lines (server spec §19).

One line per record, byte for byte what llama-swap's ``LogMonitor`` writes::

    [<timestamp> ][LEVEL] message\\n

``<timestamp>`` follows ``logTimeFormat``, a Go layout *name* (``rfc3339``,
``kitchen``…, case-insensitive); empty or unknown means no prefix. LEVEL is
DEBUG/INFO/WARN/ERROR (Python's WARNING is WARN, CRITICAL is ERROR). Records
below ``logLevel`` never reach the handler (its level filters them in
``Logger.callHandlers``, before any formatting). A traceback, when the record
carries one, follows on the next lines.

Why a :class:`logging.Handler` and not a logger of our own: every module
already logs through stdlib ``logging``; the handler is the one seam that turns
those records into the proxy monitor's bytes. It is attached to the
``modelswap`` logger while an app runs (:func:`attach_handler`) and removed on
cleanup; several apps in one process each get every line.

The access log writes one line per request, so :meth:`ProxyLogHandler.emit`
is kept cheap: no handler lock (records are written on the event-loop thread;
others are handed to it), the timestamp's seconds part is formatted once per
second, and one ``sink`` call per line.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, tzinfo
from typing import TextIO

LineSink = Callable[[bytes], None]

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


def parse_log_level(name: str) -> int:
    """``logLevel`` → a logging level: trimmed, case-insensitive; anything else is info."""
    return LEVELS.get(name.strip().lower(), logging.INFO)


def level_label(levelno: int) -> str:
    """llama-swap's level word for a Python level (WARNING → WARN, CRITICAL → ERROR)."""
    if levelno >= logging.ERROR:
        return "ERROR"
    if levelno >= logging.WARNING:
        return "WARN"
    if levelno >= logging.INFO:
        return "INFO"
    return "DEBUG"


_LABELS = {level: f"[{level_label(level)}] " for level in (10, 20, 30, 40, 50)}

# --- Go time layouts -------------------------------------------------------------------

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")  # fmt: skip
_FRACTION = "{frac}"

GO_LAYOUTS: dict[str, str] = {
    "ansic": "{a} {b} {_d} {H}:{M}:{S} {Y}",
    "unixdate": "{a} {b} {_d} {H}:{M}:{S} {Z} {Y}",
    "rubydate": "{a} {b} {d} {H}:{M}:{S} {z} {Y}",
    "rfc822": "{d} {b} {y} {H}:{M} {Z}",
    "rfc822z": "{d} {b} {y} {H}:{M} {z}",
    "rfc850": "{A}, {d}-{b}-{y} {H}:{M}:{S} {Z}",
    "rfc1123": "{a}, {d} {b} {Y} {H}:{M}:{S} {Z}",
    "rfc1123z": "{a}, {d} {b} {Y} {H}:{M}:{S} {z}",
    "rfc3339": "{Y}-{m}-{d}T{H}:{M}:{S}{zc}",
    "rfc3339nano": "{Y}-{m}-{d}T{H}:{M}:{S}{frac}{zc}",
    "kitchen": "{h}:{M}{p}",
    "stamp": "{b} {_d} {H}:{M}:{S}",
    "stampmilli": "{b} {_d} {H}:{M}:{S}{frac}",
    "stampmicro": "{b} {_d} {H}:{M}:{S}{frac}",
    "stampnano": "{b} {_d} {H}:{M}:{S}{frac}",
}
"""Go's named layouts as templates over :func:`_fields`; ``{frac}`` is the sub-second part."""

_FRACTIONS: dict[str, tuple[int, bool]] = {
    "rfc3339nano": (9, True),  # Go ".999999999": trailing zeros (and a bare dot) trimmed
    "stampmilli": (3, False),  # ".000": fixed width
    "stampmicro": (6, False),
    "stampnano": (9, False),
}


def _offset(delta: timedelta | None, colon: bool) -> str:
    seconds = int(delta.total_seconds()) if delta is not None else 0
    sign = "-" if seconds < 0 else "+"
    hours, minutes = divmod(abs(seconds) // 60, 60)
    return f"{sign}{hours:02d}{':' if colon else ''}{minutes:02d}"


def _fields(moment: datetime) -> dict[str, str]:
    """Every element the layouts use, in English whatever the locale (as Go prints them)."""
    weekday, month = _WEEKDAYS[moment.weekday()], _MONTHS[moment.month - 1]
    delta = moment.utcoffset()
    numeric = _offset(delta, colon=False)
    return {
        "a": weekday[:3],
        "A": weekday,
        "b": month[:3],
        "d": f"{moment.day:02d}",
        "_d": f"{moment.day:2d}",
        "m": f"{moment.month:02d}",
        "y": f"{moment.year % 100:02d}",
        "Y": f"{moment.year:04d}",
        "H": f"{moment.hour:02d}",
        "M": f"{moment.minute:02d}",
        "S": f"{moment.second:02d}",
        "h": str(moment.hour % 12 or 12),
        "p": "AM" if moment.hour < 12 else "PM",
        "Z": moment.tzname() or numeric,  # Go falls back to -0700 without a zone name
        "z": numeric,
        "zc": "Z" if not delta else _offset(delta, colon=True),
    }


class GoTimeFormat:
    """``logTimeFormat`` → the ``"<timestamp> "`` prefix of a line, or ``""``.

    The text up to the second is formatted once per second and reused; only
    the fraction (for the layouts that have one) is formatted per line.
    ``tz`` None means local time, as Go's ``time.Now()``.
    """

    def __init__(self, name: str, tz: tzinfo | None = None) -> None:
        self.name = name.strip().lower()
        template = GO_LAYOUTS.get(self.name)
        self.enabled = template is not None
        head, _, tail = (template or "").partition(_FRACTION)
        self._head_template, self._tail_template = head, tail + " "
        self._digits, self._trim = _FRACTIONS.get(self.name, (0, False))
        self._tz = tz
        self._second: int | None = None
        self._head = self._tail = ""

    def __repr__(self) -> str:
        return f"<GoTimeFormat {self.name!r}{'' if self.enabled else ' (none)'}>"

    def prefix(self, created: float) -> str:
        """The timestamp and its trailing space for a record made at ``created`` (epoch s)."""
        if not self.enabled:
            return ""
        second = int(created // 1)
        if second != self._second:
            moment = datetime.fromtimestamp(second, self._tz)
            if self._tz is None:
                moment = moment.astimezone()
            fields = _fields(moment)
            self._head = self._head_template.format_map(fields)
            self._tail = self._tail_template.format_map(fields)
            self._second = second
        if not self._digits:
            return self._head + self._tail
        micros = min(round((created - second) * 1_000_000), 999_999)  # as fromtimestamp rounds
        digits = (f"{micros:06d}000")[: self._digits]
        if self._trim:
            digits = digits.rstrip("0")
        return f"{self._head}.{digits}{self._tail}" if digits else self._head + self._tail


# --- the handler -----------------------------------------------------------------------


class ProxyLogHandler(logging.Handler):
    """Formats records as proxy log lines and hands each line, as bytes, to ``sink``.

    ``sink`` (the proxy monitor's ``write``) is not thread-safe, so a record
    logged on another thread than the app's event loop is handed to the loop
    with ``call_soon_threadsafe`` (and dropped if there is no loop any more).
    """

    def __init__(
        self,
        sink: LineSink,
        *,
        level: str = "info",
        time_format: str = "",
        tz: tzinfo | None = None,
    ) -> None:
        super().__init__(parse_log_level(level))
        self._sink = sink
        self.time_format = GoTimeFormat(time_format, tz)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None

    def __repr__(self) -> str:
        return f"<ProxyLogHandler level={level_label(self.level)} time={self.time_format.name!r}>"

    def bind_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Records from other threads than ``loop``'s are posted to it (None: write in place)."""
        self._loop = loop
        self._thread = threading.get_ident() if loop is not None else None

    def format_line(self, record: logging.LogRecord) -> bytes:
        """``[<timestamp> ][LEVEL] message\\n`` (plus the traceback's lines) as UTF-8."""
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            message = f"{message}\n{record.exc_text}"
        if record.stack_info:
            message = f"{message}\n{record.stack_info}"
        return self._line(record.levelno, message, record.created)

    def _line(self, levelno: int, message: str, created: float) -> bytes:
        label = _LABELS.get(levelno) or f"[{level_label(levelno)}] "
        if self.time_format.enabled:
            return f"{self.time_format.prefix(created)}{label}{message}\n".encode()
        return f"{label}{message}\n".encode()

    def emit_message(self, levelno: int, message: str, created: float) -> None:
        """:meth:`emit` for a plain message, without a ``LogRecord`` (see :func:`log_line`)."""
        try:
            self._deliver(self._line(levelno, message, created))
        except Exception:
            logging.getLogger("modelswap").exception("proxy log handler %r failed", self)

    def handle(self, record: logging.LogRecord) -> bool:
        """Like ``Handler.handle`` without the lock: ``emit`` is loop-confined."""
        if self.filters and not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._deliver(self.format_line(record))
        except Exception:
            self.handleError(record)

    def _deliver(self, line: bytes) -> None:
        if self._thread is None or threading.get_ident() == self._thread:
            self._sink(line)
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._sink, line)


class StartupLogHandler(ProxyLogHandler):
    """The CLI's handler before (and after) an app serves: same lines, to stderr.

    It stays silent while any app's :class:`ProxyLogHandler` is attached, so
    a line reaches the terminal once: through the app's monitors (stdout, per
    ``logToStdout``) while it serves, through this handler otherwise.
    """

    def __init__(
        self, *, level: str = "info", time_format: str = "", stream: TextIO | None = None
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        super().__init__(self._write, level=level, time_format=time_format)

    def _write(self, line: bytes) -> None:
        self._stream.write(line.decode())
        self._stream.flush()

    def handle(self, record: logging.LogRecord) -> bool:
        if _attached:
            return False
        return super().handle(record)


# --- one line without a LogRecord --------------------------------------------------------


def log_line(logger: logging.Logger, levelno: int, message: str) -> None:
    """``logger.log(levelno, "%s", message)``, cheaper when only proxy handlers would see it.

    The access log writes one line per request, and stdlib ``logging`` spends
    most of a line's cost on the record itself (``findCaller`` walks the
    stack; ``LogRecord`` reads the clock, the thread, the process…), all of
    which the proxy handler ignores. So when every handler the record would
    reach is a :class:`ProxyLogHandler` without filters (or a silent
    :class:`StartupLogHandler`), the line goes straight to them, byte for
    byte what the record would have produced; with any other handler (a
    test's ``caplog``, a user's handler, a logger filter) the record is made
    as usual, so nothing can tell the difference.
    """
    if not logger.isEnabledFor(levelno):
        return
    direct = _proxy_handlers_only(logger, levelno)
    if direct is None:
        logger.log(levelno, "%s", message)
        return
    created = time.time()
    for handler in direct:
        handler.emit_message(levelno, message, created)


def _proxy_handlers_only(logger: logging.Logger, levelno: int) -> list[ProxyLogHandler] | None:
    """The handlers a record would reach, if all are plain proxy handlers; else None."""
    found: list[ProxyLogHandler] = []
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if levelno < handler.level:
                continue
            kind = type(handler)
            if kind is ProxyLogHandler and not handler.filters:
                found.append(handler)  # type: ignore[arg-type]  # checked just above
            elif kind is StartupLogHandler and _attached and not handler.filters:
                continue  # silent while an app's handler is attached
            else:
                return None
        current = current.parent if current.propagate else None
    last_resort = logging.lastResort
    if not found and last_resort is not None and levelno >= last_resort.level:
        return None  # logging would print it through its last resort
    return found


# --- attaching to the logger -----------------------------------------------------------

_attached: list[ProxyLogHandler] = []
_saved_level: int = logging.NOTSET


def attach_handler(handler: ProxyLogHandler, logger: logging.Logger | None = None) -> None:
    """Add ``handler`` to the ``modelswap`` logger and let its level's records through.

    The logger's level is lowered to the lowest attached handler's (never
    raised above what it was), and restored once the last one is detached.
    """
    global _saved_level
    logger = logger or logging.getLogger("modelswap")
    if not _attached:
        _saved_level = logger.level
    _attached.append(handler)
    logger.addHandler(handler)
    _apply_level(logger)


def detach_handler(handler: ProxyLogHandler, logger: logging.Logger | None = None) -> None:
    """Undo :func:`attach_handler` (a handler not attached is ignored)."""
    logger = logger or logging.getLogger("modelswap")
    if handler in _attached:
        _attached.remove(handler)
    logger.removeHandler(handler)
    if _attached:
        _apply_level(logger)
    else:
        logger.setLevel(_saved_level)


def _apply_level(logger: logging.Logger) -> None:
    wanted = min(h.level for h in _attached)
    if _saved_level != logging.NOTSET:
        wanted = min(wanted, _saved_level)
    logger.setLevel(wanted)
