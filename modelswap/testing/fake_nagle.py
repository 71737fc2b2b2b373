"""The fake upstream's ``--nagle`` mode: a stdlib ``http.server`` that stalls like real ones.

Python's ``http.server``, Werkzeug's development server and many small
inference servers leave Nagle's algorithm on and write a response in two
sends: the headers, then the body. On a kept-alive connection the second send
waits until the client ACKs the first, and Linux delays that ACK by ~40 ms
once the connection looks interactive (request, answer, request, …). So every
answer arrives ~40 ms late unless the client ACKs at once (``TCP_QUICKACK``).
This mode is such a server, so tests and benchmarks can show that modelswap
does not pay that stall (issue 13 item 3).

Deliberately the real thing rather than a simulation: a
``ThreadingHTTPServer`` with ``protocol_version = "HTTP/1.1"`` (keep-alive),
``disable_nagle_algorithm`` left False, headers flushed in one ``sendall``
and the body in another; a streamed answer sends each SSE frame as its own
chunk. It implements ``/health`` (with ``--startup-delay`` and
``--never-healthy``), ``/v1/models`` and ``/v1/chat/completions`` (plain and
streamed), and the event-log lines tests wait on: ``listening``, ``healthy``
(the moment ``/health`` first answers 200), ``request``, ``request_done``,
``sigterm``.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from modelswap.testing import fake_shapes as shapes
from modelswap.testing.fake_options import Options

SHUTDOWN_POLL = 0.05
"""How often ``serve_forever`` looks for a shutdown request (bounds a stop's latency)."""


class _ThreadSafeLog:
    """The event log (JSON lines, flushed each) shared by the handler threads."""

    def __init__(self, path: str | None) -> None:
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        if self._file is None:
            return
        line = json.dumps({"event": event, "t": time.time(), **fields}) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class NagleServer(ThreadingHTTPServer):
    """The listening server plus the fake's state (options, log, readiness)."""

    daemon_threads = True

    def __init__(self, opts: Options, log: _ThreadSafeLog) -> None:
        super().__init__((opts.host, opts.port), _Handler)
        self.opts = opts
        self.log = log
        self.listening_at = time.monotonic()
        self._healthy = False
        self._health_lock = threading.Lock()
        self._ids = itertools.count(1)

    def health_ok(self) -> bool:
        """Past the startup delay; the first True logs ``healthy`` (exactly once)."""
        if self.opts.never_healthy:
            return False
        if time.monotonic() - self.listening_at < self.opts.startup_delay:
            return False
        with self._health_lock:  # two probes at once must not both log the first 200
            first, self._healthy = not self._healthy, True
        if first:
            self.log.emit("healthy")
        return True

    def new_id(self) -> str:
        return f"chatcmpl-{os.getpid()}-{next(self._ids)}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, the case where the stall shows
    server: NagleServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silent, like the aiohttp fake (no per-request logging)."""

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        """Headers in one send, the body in a second: the pattern Nagle stalls."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Fake-Model-Id", self.server.opts.model_id)
        self.end_headers()  # flushes the buffered headers: send #1
        self.wfile.write(body)  # send #2, held until send #1 is ACKed

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode())

    def do_GET(self) -> None:
        model_id = self.server.opts.model_id
        if self.path == "/health":
            if self.server.health_ok():
                self._json(200, {"status": "ok", "model_id": model_id})
            else:
                error = {"code": 503, "message": "Loading model", "type": "unavailable_error"}
                self._json(503, {"error": error, "model_id": model_id})
        elif self.path in ("/v1/models", "/models"):
            self._json(
                200, {**shapes.models_list(model_id, int(time.time())), "model_id": model_id}
            )
        else:
            self._json(404, {"error": {"message": f"not found: {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"not found: {self.path}"}})
            return
        try:
            body = json.loads(raw)
        except ValueError as exc:
            self._json(400, {"error": {"message": f"invalid JSON body: {exc}"}})
            return
        if not isinstance(body, dict):
            self._json(400, {"error": {"message": "JSON body must be an object"}})
            return
        log, model = self.server.log, body.get("model")
        stream = body.get("stream") is True
        log.emit("request", path=self.path, model=model, stream=stream)
        if stream:
            self._chat_stream(body)
        else:
            self._chat(body)
        log.emit("request_done", path=self.path, model=model, status=200)

    def _stamp(self, payload: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        payload["model_id"] = self.server.opts.model_id
        payload["received_model"] = body.get("model")
        payload["received"] = body
        payload["received_headers"] = {k.lower(): v for k, v in self.headers.items()}
        return payload

    def _chat(self, body: dict[str, Any]) -> None:
        opts = self.server.opts
        pieces = shapes.split_text(opts.text, opts.chunks)
        answer = shapes.chat_completion(
            self.server.new_id(),
            opts.model_id,
            int(time.time()),
            opts.text,
            shapes.count_words(body.get("messages")),
            len(pieces),
        )
        self._json(200, self._stamp(answer, body))

    def _chat_stream(self, body: dict[str, Any]) -> None:
        """SSE in chunked encoding, one send per frame: each waits for the last's ACK."""
        opts = self.server.opts
        pieces = shapes.split_text(opts.text, opts.chunks)
        frames = shapes.chat_stream(
            self.server.new_id(),
            opts.model_id,
            int(time.time()),
            pieces,
            shapes.count_words(body.get("messages")),
            include_usage=False,
        )
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Fake-Model-Id", opts.model_id)
        self.end_headers()
        data = [
            f"data: {json.dumps(self._stamp(frame, body) if i == 0 else frame)}\n\n".encode()
            for i, (_, frame) in enumerate(frames)
        ]
        for piece in [*data, b"data: [DONE]\n\n"]:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")


def serve_nagle(opts: Options) -> int:
    """Listen until SIGTERM/SIGINT; return the process exit code."""
    log = _ThreadSafeLog(opts.event_log)
    try:
        server = NagleServer(opts, log)
    except OSError as exc:
        print(f"fake upstream {opts.model_id}: cannot listen: {exc}", file=sys.stderr, flush=True)
        log.close()
        return 1
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if signum == signal.SIGTERM:
            log.emit("sigterm", ignored=False)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL}, daemon=True
    )
    worker.start()
    log.emit("listening", host=opts.host, port=opts.port, pid=os.getpid())
    print(f"fake upstream {opts.model_id} listening on http://{opts.host}:{opts.port}", flush=True)
    try:
        stop.wait()  # a signal handler runs in this (main) thread and sets it
    finally:
        # No server.shutdown(): it waits for the serve loop's next poll. Exiting
        # ends the daemon threads at once, so an evicted fake goes as fast as
        # the aiohttp one (swap benchmarks time that exit).
        server.server_close()
        log.close()
    return 0
