"""Fuzzing: malformed requests get a clean 4xx (or a documented status), never a 5xx or traceback.

``MODELSWAP_FUZZ_EXAMPLES`` sets the total number of examples over the six
request families (default 1,200 for the normal suite; the full run uses
12,000). hypothesis runs derandomized with no example database, so CI sees the
same requests every time. After every ``HEALTH_EVERY`` requests, and at the
end of each family, ``/health`` must still answer 200, and at the very end
nothing may have been logged at ERROR (a swallowed traceback is a bug too).

``m2`` carries filters, so every family also exercises the re-encoding of
rewritten JSON bodies.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import select
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp.http_exceptions import HttpProcessingError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelswap.server.extract import MAX_BODY_BYTES
from modelswap.server.recording import RECORDING
from modelswap.testing.fake_process import free_port
from tests.reliability import fuzz_strategies as fs
from tests.reliability.harness import (
    REPLY_TIMEOUT,
    Reply,
    ThreadedServer,
    models_yaml,
    threaded_server,
)

TOTAL_EXAMPLES = int(os.environ.get("MODELSWAP_FUZZ_EXAMPLES", "1200"))
FAMILIES = 6
HEALTH_EVERY = 100
ATTACKER_PORT = free_port()
"""Nothing listens here: path tricks aimed at it must not even be tried (see test_security)."""

FUZZ = settings(
    max_examples=max(1, TOTAL_EXAMPLES // FAMILIES),
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)


class ErrorLog(logging.Handler):
    """Records at ERROR or above from anywhere in the process (the app runs here).

    Not aiohttp's own report of a request its HTTP parser refused (a bad
    request line or header, answered with its plain-text 400 before any
    handler runs): that is the documented exception of :func:`fs.check_clean`.
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if record.name == "aiohttp.server" and isinstance(error, HttpProcessingError):
            return
        self.records.append(record)


class Sender:
    """Sends each example, checks it, and checks ``/health`` every so often."""

    def __init__(self, server: ThreadedServer) -> None:
        self.server = server
        self.sent = 0
        self.statuses: Counter[int] = Counter()
        self.families: Counter[str] = Counter()
        self.errors = ErrorLog()

    def __call__(self, request: fs.Request, family: str = "framing") -> Reply:
        method, target, headers, body = request
        reply = self.server.request(method, target, headers, body)
        self.sent += 1
        self.families[family] += 1
        self.statuses[reply.status] += 1
        fs.check_clean(
            reply,
            f"{method} {target!r:.200} {[k for k, _ in headers][:8]} body={body[:80]!r}",
            head=method == "HEAD",
        )
        if self.sent % HEALTH_EVERY == 0:
            self.healthy()
        return reply

    def healthy(self) -> None:
        reply = self.server.request("GET", "/health")
        assert reply.status == 200, reply


@pytest.fixture(scope="module")
def sender(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sender]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    text = "healthCheckTimeout: 15\n" + models_yaml(tmp, list(fs.MODELS))  # m2 comes last:
    text += "    filters:\n      stripParams: temperature\n      setParams: {fuzzed: true}\n"
    text += "groups:\n  all:\n    swap: false\n    exclusive: false\n    members: [m1, m2]\n"
    with threaded_server(text) as server:
        s = Sender(server)
        root = logging.getLogger()
        root.addHandler(s.errors)
        try:
            yield s
        finally:
            root.removeHandler(s.errors)
        s.healthy()
        statuses = dict(sorted(s.statuses.items()))
        families = dict(s.families)
        print(f"\nfuzz: {s.sent} malformed requests sent; statuses {statuses}; {families}")


def _family(
    name: str,
    strategy: st.SearchStrategy[fs.Request],
    check: Callable[[fs.Request, Reply], None] | None = None,
) -> Callable[[Sender], None]:
    @FUZZ
    @given(request=strategy)
    def run(sender: Sender, request: fs.Request) -> None:
        reply = sender(request, name)
        if check is not None:
            check(request, reply)

    return run


def _past_the_parser(request: fs.Request, reply: Reply) -> None:
    """Stricter for bodies past the parser's limits: forwarded exactly, or a 404 saying why.

    m1 has no filters, so a body that reached its echo must be byte for byte
    what we sent (m2's is rewritten by its filters; a filter path into a
    member too deep to edit is a 400).
    """
    _, path, _, body = request
    assert reply.status in (200, 400, 404), (reply, body[:80])
    if not fs.is_json(reply):
        assert reply.status == 200, (reply, body[:80])  # a streamed answer of the fake
        return
    payload = json.loads(reply.body)
    if reply.status == 404:
        message = payload["error"]["message"]
        assert message.startswith(fs.NO_MODEL) or message == fs.NO_ROUTER, (message, body[:80])
    elif reply.status == 200 and path in fs.ECHO_PATHS and payload["model_id"] == "m1":
        assert payload["body"] == body.decode("utf-8", "replace"), body[:80]


test_json_bodies = _family("json", fs.json_requests())
test_odd_bytes_and_content_types = _family("bytes", fs.byte_requests())
test_multipart_garbage = _family("multipart", fs.multipart_requests())
test_paths_and_upstream_tricks = _family("paths", fs.path_requests(ATTACKER_PORT))
test_headers = _family("headers", fs.header_requests())
test_json_past_the_parser_limits = _family(
    "json limits", fs.json_limit_requests(), _past_the_parser
)


def test_still_serving_after_the_fuzz(sender: Sender) -> None:
    sender.healthy()
    reply = sender.server.request(
        "POST", "/v1/chat/completions", [("Content-Type", "application/json")], b'{"model":"m1"}'
    )
    assert reply.status == 200, reply


def test_nothing_was_logged_at_error(sender: Sender) -> None:
    """Runs after the families (file order): no handler or recorder thread failed quietly."""
    recorder = sender.server.app[RECORDING].recorder
    assert recorder is not None
    flushed = asyncio.run_coroutine_threadsafe(recorder.wait_flushed(), sender.server.loop)
    flushed.result(REPLY_TIMEOUT)  # every capture and row of the fuzz has been written
    failures = [f"{r.name}: {r.getMessage()} {r.exc_info!r:.300}" for r in sender.errors.records]
    assert failures == []


@pytest.mark.parametrize(
    ("target", "headers", "body"),
    [
        ("/v1/chat/completions", [("Transfer-Encoding", "chunked")], b"zz\r\nab\r\n0\r\n\r\n"),
        ("/v1/chat/completions", [("Transfer-Encoding", "gzip, chunked")], b"0\r\n\r\n"),
        (
            "/v1/chat/completions",
            [("Transfer-Encoding", "chunked"), ("Content-Length", "5")],
            b"0\r\n\r\n",
        ),
        (
            "/upstream/m1/echo",
            [("Content-Encoding", "gzip"), ("Content-Type", "text/plain")],
            b"not gzip",
        ),
        ("/upstream/m1/echo", [("Content-Encoding", "deflate")], b"\x00\x01"),
        ("/upstream/m1/echo", [("Transfer-Encoding", "chunked")], b"2\r\nab\r\nzz\r\n0\r\n\r\n"),
        (
            "/v1/chat/completions",
            [("Transfer-Encoding", "chunked"), ("Content-Type", "application/json")],
            b"2\r\n{}\r\nzz\r\n0\r\n\r\n",
        ),
        (
            "/v1/chat/completions",
            [("Content-Encoding", "br"), ("Content-Type", "application/json")],
            b"{}",
        ),
    ],
)
def test_broken_framing_and_encodings(
    sender: Sender, target: str, headers: list[tuple[str, str]], body: bytes
) -> None:
    """Framing hypothesis must not generate (it could leave the server waiting), written out."""
    sender(("POST", target, list(headers), body))
    sender.healthy()


def test_declared_body_over_the_cap_is_refused_before_reading(sender: Sender) -> None:
    """A Content-Length past 256 MiB is refused from the header alone (nothing is sent)."""
    headers = [("Content-Type", "application/json"), ("Content-Length", str(MAX_BODY_BYTES + 1))]
    with socket.create_connection(("127.0.0.1", sender.server.port), timeout=30) as sock:
        head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        sock.sendall(head.encode())
        reply = _read_reply(sock)
    assert reply.status == 413, reply
    fs.check_clean(reply, "declared 256 MiB + 1")


def test_streamed_body_over_the_cap_is_cut_off(sender: Sender) -> None:
    """A chunked body with no length is counted while read and refused past 256 MiB.

    The cap cannot be lowered from outside, so the body really is 256 MiB + 1
    MiB, generated lazily one chunk at a time; the server must answer 413
    while we are still sending (we stop as soon as the answer is readable).
    """
    chunk = b"a" * (1 << 20)
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    with socket.create_connection(("127.0.0.1", sender.server.port), timeout=60) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sent = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 5)
            if readable:
                break
            if writable and sent <= MAX_BODY_BYTES + (1 << 20):
                try:
                    sock.sendall(framed)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(chunk)
        reply = _read_reply(sock)
    assert reply.status == 413, reply
    assert sent > MAX_BODY_BYTES // 2  # it really read a lot before refusing
    sender.healthy()


def _read_reply(sock: socket.socket) -> Reply:
    response = http.client.HTTPResponse(sock, method="POST")
    response.begin()
    body = response.read()
    return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
