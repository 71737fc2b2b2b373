"""Which headers cross the proxy, in each direction (server spec §4.3): pure rules.

Standard reverse-proxy hygiene plus one deliberate difference from llama-swap:

* hop-by-hop headers (RFC 9110 §7.6.1, plus any named in ``Connection``) are
  dropped both ways; the websocket tunnel negotiates its own handshake;
* ``Expect`` is dropped: our server already answered the client's
  ``100-continue``, and forwarding it would make the client library wait for
  a second ``100`` the upstream may never send;
* **credentials never leave**: the client's ``Authorization``,
  ``x-api-key`` and ``Proxy-Authorization`` are removed before any local
  upstream or peer sees them (llama-swap forwards them unchanged to local
  upstreams). A peer with an ``apiKey`` gets ``Authorization: Bearer <key>``
  and ``x-api-key: <key>`` instead;
* local upstreams keep the client's ``Host`` and get ``X-Forwarded-For``
  appended; peers get their own host (set by the HTTP client from the URL)
  and no ``X-Forwarded-*`` at all;
* ``Content-Length`` is kept only when the client's body is streamed through
  unchanged; a buffered or rewritten body gets a fresh one from the client
  library.
"""

from __future__ import annotations

from collections.abc import Iterable, Set

from multidict import CIMultiDict, MultiMapping

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
CREDENTIALS = frozenset({"authorization", "x-api-key", "proxy-authorization"})
X_FORWARDED = frozenset({"x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"})
WEBSOCKET_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
SSE_CONTENT_TYPE = "text/event-stream"
_REQUEST_DROPPED = HOP_BY_HOP | CREDENTIALS | {"expect"}
_REQUEST_DROPPED_BUFFERED = _REQUEST_DROPPED | {"content-length"}


def connection_tokens(headers: MultiMapping[str]) -> set[str]:
    """Lower-cased tokens of every ``Connection`` header."""
    values = headers.getall("Connection", ())
    if not values:
        return set()
    return {token.strip().lower() for value in values for token in value.split(",")} - {""}


def is_websocket_upgrade(headers: MultiMapping[str]) -> bool:
    """``Connection`` lists ``upgrade`` and ``Upgrade`` is ``websocket`` (any case)."""
    return (
        "upgrade" in connection_tokens(headers)
        and headers.get("Upgrade", "").strip().lower() == "websocket"
    )


def _without(headers: Iterable[tuple[str, str]], dropped: Set[str]) -> CIMultiDict[str]:
    return CIMultiDict((name, value) for name, value in headers if name.lower() not in dropped)


def upstream_request_headers(
    headers: MultiMapping[str],
    *,
    client_ip: str,
    peer: bool,
    api_key: str = "",
    streamed_body: bool = True,
    websocket: bool = False,
) -> CIMultiDict[str]:
    """The headers to send upstream for a client request with ``headers``."""
    dropped: Set[str] = _REQUEST_DROPPED if streamed_body else _REQUEST_DROPPED_BUFFERED
    tokens = connection_tokens(headers)
    if tokens:
        dropped = dropped | tokens
    if websocket:
        dropped |= WEBSOCKET_HANDSHAKE
    if peer:
        dropped |= X_FORWARDED | {"host"}
    items = headers.items()
    out = _without(items, dropped)
    if peer:
        if api_key:
            out["Authorization"] = f"Bearer {api_key}"
            out["x-api-key"] = api_key
    elif client_ip:
        prior = ", ".join(out.getall("X-Forwarded-For", []))
        out["X-Forwarded-For"] = f"{prior}, {client_ip}" if prior else client_ip
    return out


def client_response_headers(headers: MultiMapping[str]) -> CIMultiDict[str]:
    """The upstream response headers to pass to the client (+ ``X-Accel-Buffering`` on SSE)."""
    tokens = connection_tokens(headers)
    out = _without(headers.items(), HOP_BY_HOP | tokens if tokens else HOP_BY_HOP)
    if SSE_CONTENT_TYPE in out.get("Content-Type", ""):
        out["X-Accel-Buffering"] = "no"
    return out
