"""Which proxy URLs count as unparsable.

llama-swap rejects a model or peer ``proxy`` only when URL parsing fails hard
(§4, §10.1); almost anything else is accepted and fails later at request time.
Python's ``urllib.parse`` hardly ever fails, so the hard failures a user can
actually hit are recognised here explicitly, with wording close to what
llama-swap users see (``missing protocol scheme``, ``invalid port``…).
"""

from __future__ import annotations

import re

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})(.{0,2})", re.DOTALL)


def url_parse_error(url: str) -> str | None:
    """Why ``url`` cannot be parsed at all, or None when it can."""
    problem = _problem(url)
    return None if problem is None else f'parse "{url}": {problem}'


def _problem(url: str) -> str | None:
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return "net/url: invalid control character in URL"
    bad_escape = _BAD_ESCAPE.search(url)
    if bad_escape is not None:
        return f'invalid URL escape "%{bad_escape.group(1)}"'
    head, sep, rest = url.partition(":")
    if sep and not head:
        return "missing protocol scheme"
    if not sep or _SCHEME.fullmatch(head) is None:
        # No scheme: a relative reference whose first segment may not hold a colon.
        first_segment = url.split("?", 1)[0].split("#", 1)[0].split("/", 1)[0]
        if ":" in first_segment:
            return "first path segment in URL cannot contain colon"
        return None
    if not rest.startswith("//"):
        return None
    authority = re.split(r"[/?#]", rest[2:], maxsplit=1)[0]
    host = authority.rpartition("@")[2]
    for ch in ' <>"{}|\\^`':
        if ch in host:
            return f'invalid character "{ch}" in host name'
    if host.startswith("["):
        close = host.find("]")
        if close < 0:
            return "missing ']' in host"
        port_part = host[close + 1 :]
        if port_part and not port_part.startswith(":"):
            return f'invalid port "{port_part}" after host'
    else:
        _, colon, port = host.rpartition(":")
        port_part = f":{port}" if colon else ""
    if port_part and not port_part[1:].isdigit() and port_part != ":":
        return f'invalid port "{port_part}" after host'
    return None
