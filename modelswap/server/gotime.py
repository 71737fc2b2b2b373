"""Go's ``time.Duration.String()`` for log lines and error texts llama-swap users know.

llama-swap prints durations the Go way (``1.5s``, ``250ms``, ``12.3µs``,
``1m30s``); tools that parse its access log or error messages expect that
shape, so we print it the same way.
"""

from __future__ import annotations

_UNITS = ((1_000_000, "ms"), (1_000, "µs"), (1, "ns"))


def _fraction(value: int, digits: int) -> str:
    """``value`` (an integer count of 10**-digits units) as a decimal without trailing zeros."""
    whole, part = divmod(value, 10**digits)
    if not part:
        return str(whole)
    return f"{whole}.{str(part).rjust(digits, '0').rstrip('0')}"


def go_duration(seconds: float) -> str:
    """``1.5`` → ``"1.5s"``, ``0.00025`` → ``"250µs"``, ``90`` → ``"1m30s"``, ``0`` → ``"0s"``."""
    nanos = round(seconds * 1e9)
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)
    if nanos == 0:
        return "0s"
    if nanos < 1_000_000_000:
        for size, unit in _UNITS:
            if nanos >= size:
                digits = len(str(size)) - 1
                return f"{sign}{_fraction(nanos, digits)}{unit}"
    hours, rest = divmod(nanos, 3_600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    text = f"{_fraction(rest, 9)}s"
    if hours:
        text = f"{hours}h{minutes}m{text}"
    elif minutes:
        text = f"{minutes}m{text}"
    return sign + text
