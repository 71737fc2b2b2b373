"""Helpers to run :mod:`modelswap.testing.fake_upstream` as a real child process.

Used by integration tests, the demo and the benchmarks. The rule they serve:
wait on facts (the "listening" line, a 200 from /health, a line in the event
log), never on time. Every wait below is a condition check with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import psutil

MODULE = "modelswap.testing.fake_upstream"
POLL_INTERVAL = 0.01  # how often a condition is re-checked; never a "settle" delay


_HANDED_OUT: set[int] = set()
"""Ports :func:`free_port` returned in this process: never returned twice."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago and was not handed out before in this process.

    The OS picks it (tiny race accepted). Without the memory, a port handed to
    a fake that has not bound it yet could be picked again for the next
    server, and the two would collide (seen in CI: a test server and a fake
    upstream both on one port).
    """
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no port left that was not handed out before")


def fake_upstream_argv(port: int | str, model_id: str, **options: Any) -> list[str]:
    """``[python, -m, fake_upstream, --port, ..., --model-id, ...]`` plus options.

    Option names are the CLI flags in Python spelling (``startup_delay=1`` →
    ``--startup-delay 1``); ``True`` adds a bare flag, ``False``/``None`` omit it.
    ``port`` may be a string such as ``"${PORT}"`` for config ``cmd`` templates.
    """
    argv = [sys.executable, "-m", MODULE, "--port", str(port), "--model-id", model_id]
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def fake_upstream_cmd(port: int | str, model_id: str, **options: Any) -> str:
    """The same as one shell-quoted string, ready for a config's ``cmd:``."""
    return shlex.join(fake_upstream_argv(port, model_id, **options))


def fake_upstream_env() -> dict[str, str]:
    """Our environment plus PYTHONPATH naming this checkout, so ``-m`` finds
    the package from any working directory even when it is not installed."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """All complete event-log lines so far (a half-written last line is skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def _matches(ev: dict[str, Any], event: str, fields: dict[str, Any]) -> bool:
    return ev.get("event") == event and all(ev.get(k) == v for k, v in fields.items())


async def wait_event(
    path: str | Path, event: str, *, count: int = 1, timeout: float = 10.0, **fields: Any
) -> dict[str, Any]:
    """Wait until the log holds ``count`` events named ``event`` with ``fields``.

    Returns the ``count``-th match. Raises TimeoutError at the deadline.
    """
    async with asyncio.timeout(timeout):
        while True:
            found = [ev for ev in read_events(path) if _matches(ev, event, fields)]
            if len(found) >= count:
                return found[count - 1]
            await asyncio.sleep(POLL_INTERVAL)


async def wait_healthy(base_url: str, *, timeout: float = 10.0) -> None:
    """Wait until ``GET /health`` answers 200 (connection errors count as "not yet")."""
    async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{base_url}/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(POLL_INTERVAL)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs; a zombie (dead, not yet reaped) counts as gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def wait_pid_gone(pid: int, *, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while pid_alive(pid):
            await asyncio.sleep(POLL_INTERVAL)


class FakeUpstreamProcess:
    """One fake upstream child, leader of its own process group.

    ``start()`` returns once the child printed its "listening on" line;
    ``close()`` SIGKILLs the whole group (grandchild included) and reaps the
    child. Use it as a context manager or from a fixture finalizer.
    """

    def __init__(
        self,
        model_id: str,
        *,
        port: int | None = None,
        event_log: str | Path | None = None,
        **options: Any,
    ) -> None:
        self.model_id = model_id
        self.port = port if port is not None else free_port()
        self.event_log = Path(event_log) if event_log is not None else None
        self.argv = fake_upstream_argv(self.port, model_id, event_log=event_log, **options)
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdout_lines: list[str] = []
        self.grandchild_pid: int | None = None

    def __repr__(self) -> str:
        state = "new" if self.proc is None else f"pid={self.proc.pid} rc={self.proc.poll()}"
        return f"<FakeUpstreamProcess {self.model_id!r} port={self.port} {state}>"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self, *, timeout: float = 10.0) -> FakeUpstreamProcess:
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
            env=fake_upstream_env(),
        )
        try:
            self._wait_listening(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _wait_listening(self, timeout: float) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        buf = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self!r}: no 'listening' line within {timeout}s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            data = os.read(fd, 4096)
            if not data:
                rc = self.proc.wait()
                raise RuntimeError(f"{self!r}: exited with {rc} before listening")
            buf += data
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = raw.decode(errors="replace")
                self.stdout_lines.append(line)
                if line.startswith("grandchild pid "):
                    self.grandchild_pid = int(line.split()[-1])
                if " listening on " in line:
                    return

    def send_signal(self, sig: int, *, group: bool = False) -> None:
        """Signal the child (or its whole group); "already gone" is not an error."""
        try:
            if group:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    async def wait_exit(self, *, timeout: float = 10.0) -> int:
        """The child's exit code (negative = killed by that signal)."""
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            while (rc := self.proc.poll()) is None:
                await asyncio.sleep(POLL_INTERVAL)
        return rc

    def close(self) -> None:
        if self.proc is None:
            return
        self.send_signal(signal.SIGKILL, group=True)
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> FakeUpstreamProcess:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
