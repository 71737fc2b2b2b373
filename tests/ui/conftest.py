"""Browser tests: Playwright driving Debian's Chromium against a real modelswap.

modelswap runs as a real subprocess (``python -m modelswap --config …``) over
fake upstreams; Chromium is ``/usr/bin/chromium`` (``MODELSWAP_CHROMIUM``
overrides), launched headless with the flags this sandbox needs. A missing
Chromium fails the tests — ``.ci/run`` installs it — it never skips them.

Every page a test opens is watched: a console error or an uncaught exception
fails the test at teardown (``page.errors``).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from modelswap.testing.fake_process import fake_upstream_cmd, fake_upstream_env, free_port

CHROMIUM = os.environ.get("MODELSWAP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000
DOCS_UI = Path(__file__).resolve().parents[2] / "docs" / "ui"


def screenshot_path(name: str, tmp: Path | None = None) -> str:
    """Where a page's screenshot goes: docs/ui/<name>.png when refreshing the docs
    (``MODELSWAP_UPDATE_SCREENSHOTS=1``), else a scratch file — a test run must not
    rewrite committed files.
    """
    if os.environ.get("MODELSWAP_UPDATE_SCREENSHOTS") == "1":
        return str(DOCS_UI / f"{name}.png")
    folder = tmp or Path(os.environ.get("TMPDIR", "/tmp"))
    return str(folder / f"modelswap-ui-{name}.png")


@dataclass
class UiServer:
    """A running ``python -m modelswap`` and where its fakes log their events."""

    url: str
    proc: subprocess.Popen[bytes]
    tmp: Path
    output: list[str] = field(default_factory=list)

    def events(self, model: str) -> list[dict[str, Any]]:
        path = self.tmp / f"{model}.events"
        if not path.exists():
            return []
        lines = path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]


def post_json(
    url: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> bytes:
    """POST a JSON body to the server under test; the answer must be a 200."""
    request = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        data: bytes = response.read()
    return data


def chat(url: str, model: str, text: str = "hi") -> bytes:
    """One non-streaming chat completion through modelswap."""
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return post_json(url, "/v1/chat/completions", body)


def model_entry(tmp: Path, model: str, **options: Any) -> dict[str, Any]:
    port = free_port()
    cmd = fake_upstream_cmd(port, model, event_log=tmp / f"{model}.events", **options)
    return {"cmd": cmd, "proxy": f"http://127.0.0.1:{port}", "unloadTimeout": 2}


def start_modelswap(tmp: Path, config: dict[str, Any], timeout: float = 20.0) -> UiServer:
    """Start modelswap on a free port; return once it printed its URL."""
    path = tmp / "config.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelswap", "--config", str(path), "--listen", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=fake_upstream_env(),
        start_new_session=True,
    )
    assert proc.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + timeout
    buffer = b""
    url = ""
    while not url:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(left, 0))
        if not ready:
            stop_modelswap(proc)
            raise TimeoutError(f"modelswap did not start: {output}")
        data = os.read(proc.stdout.fileno(), 65536)
        if not data:
            raise RuntimeError(f"modelswap exited: {output}")
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            text = line.decode(errors="replace")
            output.append(text)
            if "modelswap listening on " in text:
                url = text.rsplit(" ", 1)[-1]
    stdout = proc.stdout

    def drain() -> None:  # keep reading, or a full pipe would stall its logging
        for line in iter(stdout.readline, b""):
            output.append(line.decode(errors="replace").rstrip("\n"))

    threading.Thread(target=drain, daemon=True).start()
    return UiServer(url, proc, tmp, output)


def stop_modelswap(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful: stops its upstreams), then SIGKILL the group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# Package scope, not session: the sync API runs its own event loop in this
# thread while it is open, and the async tests that run after tests/ui must
# not find a loop already running.
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install chromium"
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


class WatchedPage:
    """A page plus every console error and uncaught exception it produced."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")


@pytest.fixture
def watched(browser: Browser) -> Iterator[WatchedPage]:
    """A fresh browser context and page; fails the test on any console error."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    page = WatchedPage(context.new_page())
    yield page
    context.close()
    assert page.errors == [], page.errors


@pytest.fixture
def page(watched: WatchedPage) -> Page:
    return watched.page
