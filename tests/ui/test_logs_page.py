"""Logs page: live lines per source, filter (text and /regex/), pause and catch up."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.ui.conftest import (
    UiServer,
    model_entry,
    screenshot_path,
    start_modelswap,
    stop_modelswap,
)

VIEW = "pre.log"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    tmp: Path = tmp_path_factory.mktemp("ui-logs")
    config = {
        "logTimeFormat": "stampmilli",
        "models": {"m1": model_entry(tmp, "m1"), "m2": model_entry(tmp, "m2")},
    }
    running = start_modelswap(tmp, config)
    yield running
    stop_modelswap(running.proc)


def chat(url: str, model: str, agent: str) -> None:
    """One non-streaming chat, with a User-Agent the access line will show."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    request = urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=body.encode(),
        headers={"Content-Type": "application/json", "User-Agent": agent},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        response.read()


def open_logs(page: Page, server: UiServer, source: str = "") -> None:
    page.goto(f"{server.url}/ui/#/logs{'/' + source if source else ''}")
    expect(page.locator("#connection")).to_have_attribute("aria-label", "connected")


def test_proxy_lines_arrive_and_the_filter_hides_the_rest(server: UiServer, page: Page) -> None:
    open_logs(page, server)
    expect(page.get_by_label("Source")).to_have_value("proxy")
    view = page.locator(VIEW)
    chat(server.url, "m1", "alpha-probe/1.0")
    chat(server.url, "m1", "beta-probe/1.0")
    # The access lines of requests made after the page opened, as they happen.
    expect(view).to_contain_text('"POST /v1/chat/completions HTTP/1.1" 200')
    expect(view).to_contain_text("alpha-probe/1.0")
    expect(view).to_contain_text("beta-probe/1.0")

    box = page.get_by_label("Filter")
    box.fill("ALPHA-probe")  # case-insensitive substring
    expect(view).to_contain_text("alpha-probe/1.0")
    expect(view).not_to_contain_text("beta-probe")
    expect(page.locator(".log-counts")).to_contain_text(re.compile(r"^1 of \d+ lines$"))

    box.fill("/(alpha|BETA)-pro.e/")  # a regex, also case-insensitive
    expect(view).to_contain_text("alpha-probe/1.0")
    expect(view).to_contain_text("beta-probe/1.0")
    expect(page.locator(".log-counts")).to_contain_text(re.compile(r"^2 of \d+ lines$"))

    box.fill("/[unclosed/")  # not a regex: a substring no line contains, and no error
    expect(page.locator(".log-counts")).to_contain_text(re.compile(r"^0 of \d+ lines$"))
    expect(view).to_have_text("")

    box.fill("")
    expect(view).to_contain_text("alpha-probe/1.0")


def test_pause_holds_new_lines_and_resume_catches_up(server: UiServer, page: Page) -> None:
    open_logs(page, server)
    view = page.locator(VIEW)
    chat(server.url, "m1", "before-pause/1.0")
    expect(view).to_contain_text("before-pause/1.0")

    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("button", name="Resume")).to_have_attribute("aria-pressed", "true")
    chat(server.url, "m1", "while-paused/1.0")
    # Received (and counted) but not shown.
    expect(page.locator(".log-new")).to_have_text(re.compile(r"^[1-9]\d* new lines?$"))
    expect(view).not_to_contain_text("while-paused")

    page.get_by_role("button", name="Resume").click()
    expect(view).to_contain_text("while-paused/1.0")
    expect(page.locator(".log-new")).to_be_hidden()


def test_a_model_log_is_followed_live(server: UiServer, page: Page) -> None:
    open_logs(page, server)
    page.get_by_label("Source").select_option("m2")
    view = page.locator(VIEW)
    expect(page.locator(".log-counts")).to_have_text("0 lines")  # m2 never ran yet
    chat(server.url, "m2", "model-log/1.0")  # starts m2: its own output appears
    expect(view).to_contain_text("fake upstream m2 listening on http://127.0.0.1:")
    # The choice is remembered, and the upstream source is the shared log.
    page.reload()
    expect(page.get_by_label("Source")).to_have_value("m2")
    page.get_by_label("Source").select_option("upstream")
    expect(view).to_contain_text("fake upstream m2 listening on")


def test_screenshot(server: UiServer, page: Page) -> None:
    """docs/ui/logs.png: the proxy log after requests and swaps, filtered by a regex."""
    for n, model in enumerate(["m1", "m2", "m1", "m1", "m2", "m2", "m1"]):
        chat(server.url, model, f"openai-python/1.{n}.0")
    open_logs(page, server, "proxy")
    page.get_by_label("Filter").fill("/POST|<m\\d>|swap|unload/")
    expect(page.locator(VIEW)).to_contain_text("openai-python/1.6.0")
    page.screenshot(path=screenshot_path("logs"))
