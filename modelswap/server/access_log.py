"""The access log (server spec §1.1), and the seam request observers hook into.

One INFO line per request, after the response, in llama-swap's format::

    Request 192.168.1.1 "POST /v1/chat/completions HTTP/1.1" 201 5 "curl/8.5" 1.25ms

Requests under ``/wol-health``, ``/api/performance`` and ``/metrics`` are not
logged (they are polled). Every request — logged or not — is also handed, as
an :class:`AccessRecord`, to each callable in :attr:`AccessLog.observers`;
request events and per-request timings plug in there later without touching
this middleware.

Decisions where the spec is silent: a request whose handler was cancelled
before any response (the client left) is recorded with status **499**
(nginx's "client closed request"); one that raised is recorded with the
exception's HTTP status, else 500. Streamed bodies report the bytes written
through :func:`add_body_bytes`; fixed bodies their ``Content-Length``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from modelswap.observability.proxy_log import log_line
from modelswap.server.gotime import go_duration

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger("modelswap.server.access")

SKIPPED_PREFIXES = ("/wol-health", "/api/performance", "/metrics")
CLIENT_CLOSED = 499

BODY_BYTES: web.ResponseKey[int] = web.ResponseKey("body_bytes", int)
"""Body bytes written so far to a streamed response (see :func:`add_body_bytes`)."""


_STREAMED: web.RequestKey[web.StreamResponse] = web.RequestKey("streamed", web.StreamResponse)


def remember_response(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """Let the access log see a streamed response even if its handler is then cancelled."""
    request[_STREAMED] = response


def add_body_bytes(response: web.StreamResponse, count: int) -> None:
    """Count ``count`` body bytes written to ``response`` (streaming writers call this)."""
    response[BODY_BYTES] = response.get(BODY_BYTES, 0) + count


def client_ip(headers: Mapping[str, str], remote: str | None) -> str:
    """First ``X-Forwarded-For`` entry, else ``X-Real-IP``, else the socket peer."""
    forwarded = headers.get("X-Forwarded-For", "")
    if forwarded.strip():
        return forwarded.split(",")[0].strip()
    real_ip = headers.get("X-Real-IP", "").strip()
    if real_ip:
        return real_ip
    return remote or ""


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """One finished request, as observers and the log line see it."""

    client_ip: str
    method: str
    path: str
    proto: str
    status: int
    body_bytes: int
    user_agent: str
    duration: float
    """Seconds from the middleware's start to the end of the response."""
    started_at: float
    """Wall-clock start (``time.time()``)."""
    request: web.BaseRequest


RequestObserver = Callable[[AccessRecord], None]


def format_access_line(record: AccessRecord) -> str:
    return (
        f'Request {record.client_ip} "{record.method} {record.path} {record.proto}" '
        f'{record.status} {record.body_bytes} "{record.user_agent}" {go_duration(record.duration)}'
    )


def is_logged(path: str) -> bool:
    return not path.startswith(SKIPPED_PREFIXES)


def _body_bytes(response: web.StreamResponse | None) -> int:
    if response is None:
        return 0
    if BODY_BYTES in response:
        return response[BODY_BYTES]
    if isinstance(response, web.Response) and response.body is not None:
        return response.content_length or 0
    return 0


class AccessLog:
    """The middleware plus its observer list (append to :attr:`observers` to subscribe)."""

    def __init__(
        self,
        logger: logging.Logger = log,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.logger = logger
        self.observers: list[RequestObserver] = []
        self._clock = clock
        self._wall_clock = wall_clock

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path  # captured before any handler rewrites it
        started, started_at = self._clock(), self._wall_clock()
        response: web.StreamResponse | None = None
        status = 200
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        except Exception:
            status = 500
            raise
        finally:
            if response is None:  # cancelled or raised: report what the client already got
                streamed = request.get(_STREAMED)
                if streamed is not None and streamed.prepared:
                    response, status = streamed, streamed.status
            self._record(request, path, status, response, started, started_at)

    def _record(
        self,
        request: web.BaseRequest,
        path: str,
        status: int,
        response: web.StreamResponse | None,
        started: float,
        started_at: float,
    ) -> None:
        logged = is_logged(path) and self.logger.isEnabledFor(logging.INFO)
        if not logged and not self.observers:
            return  # nobody would see the record: skip building it
        record = AccessRecord(
            client_ip=client_ip(request.headers, request.remote),
            method=request.method,
            path=path,
            proto=f"HTTP/{request.version.major}.{request.version.minor}",
            status=status,
            body_bytes=_body_bytes(response),
            user_agent=request.headers.get("User-Agent", ""),
            duration=self._clock() - started,
            started_at=started_at,
            request=request,
        )
        if logged:  # no LogRecord when only the proxy log would read it
            log_line(self.logger, logging.INFO, format_access_line(record))
        for observer in self.observers:
            try:
                observer(record)
            except Exception:
                self.logger.exception("request observer %r failed", observer)
