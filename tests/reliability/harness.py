"""A real modelswap app on loopback, driven by plain sockets from synchronous code.

hypothesis drives synchronous test functions, and the fuzzer must be able to
send bytes no HTTP client library would (invalid UTF-8 in the request line,
odd header values, broken chunked framing), so requests here are written by
hand on a socket and read back with :class:`http.client.HTTPResponse`. The
app runs on its own event loop in a background thread, with fake upstreams
the router starts itself, exactly as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from modelswap.app import build_app
from modelswap.config import load_config_text
from modelswap.testing.fake_process import fake_upstream_cmd, fake_upstream_env, free_port

REPLY_TIMEOUT = 30.0
"""A request unanswered for this long is a hang, which is a failure."""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def models_yaml(tmp: Path, names: list[str], **fake: object) -> str:
    """``models:`` entries for fake upstreams named ``names`` (each with an event log)."""
    lines = ["models:"]
    for name in names:
        port = free_port()
        cmd = fake_upstream_cmd(port, name, event_log=tmp / f"{name}.events", **fake)
        lines += [
            f"  {name}:",
            f"    cmd: {json.dumps(cmd)}",
            f"    proxy: http://127.0.0.1:{port}",
        ]
    return "\n".join(lines) + "\n"


class ThreadedServer:
    """``build_app(config)`` served on 127.0.0.1 from a background thread's own event loop."""

    def __init__(self, config_text: str) -> None:
        config = load_config_text(config_text, "reliability.yaml", environ={}).config
        self.app = build_app(config, base_env=fake_upstream_env())
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _start(self) -> int:
        self._runner = web.AppRunner(
            self.app,
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=2.0,
            auto_decompress=False,  # as modelswap.app.run_server serves it
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return int(self._runner.addresses[0][1])

    def start(self) -> None:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)

    def stop(self) -> None:
        """Clean up the app (the router stops every upstream), then end the loop thread."""
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def request(
        self,
        method: str | bytes,
        target: str | bytes,
        headers: list[tuple[str | bytes, str | bytes]] | None = None,
        body: bytes = b"",
    ) -> Reply:
        return raw_request(self.port, method, target, headers or [], body)


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


def raw_request(
    port: int,
    method: str | bytes,
    target: str | bytes,
    headers: list[tuple[str | bytes, str | bytes]],
    body: bytes,
) -> Reply:
    """Write one HTTP/1.1 request byte for byte (Content-Length added unless given)."""
    names = {_b(k).lower() for k, _ in headers}
    lines = [_b(method) + b" " + _b(target) + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [_b(k) + b": " + _b(v) for k, v in headers]
    if b"content-length" not in names and b"transfer-encoding" not in names:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    data = b"\r\n".join(lines) + b"\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT) as sock:
        # Answered and closed before reading it all (e.g. a 413)? Read the answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        response = http.client.HTTPResponse(sock, method=_b(method).decode("latin-1"))
        response.begin()
        payload = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, payload)


@contextmanager
def threaded_server(config_text: str) -> Iterator[ThreadedServer]:
    server = ThreadedServer(config_text)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Subprocess:
    """``python -m modelswap`` as users run it, with everything it prints kept."""

    url: str
    proc: subprocess.Popen[bytes]
    output: list[bytes]

    def terminate(self, timeout: float = 45.0) -> int:
        """SIGTERM and wait; the exit code (SIGKILL and fail past ``timeout``)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    @property
    def text(self) -> bytes:
        return b"".join(self.output)


@contextmanager
def modelswap_process(config: Path) -> Iterator[Subprocess]:
    """Run modelswap on a free loopback port; stdout and stderr are drained into memory."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelswap", "--config", str(config), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=fake_upstream_env(),
        cwd=str(config.parent),
    )
    output: list[bytes] = []
    ready = threading.Event()

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if b"listening on " in line:
                ready.set()
        ready.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        if not ready.wait(REPLY_TIMEOUT) or proc.poll() is not None:
            raise RuntimeError(f"modelswap did not start: {b''.join(output)!r}")
        line = next(x for x in output if b"listening on " in x)
        yield Subprocess(line.decode().rsplit("listening on ", 1)[1].strip(), proc, output)
    finally:
        if proc.poll() is None:  # a failed test: still stop it gracefully, so upstreams stop
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(45)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(10)
