"""Overview page: running models with pid, CPU and memory; host figures; monitor off."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from modelswap.testing.fake_process import read_events
from tests.ui.conftest import (
    UiServer,
    WatchedPage,
    chat,
    model_entry,
    screenshot_path,
    start_modelswap,
    stop_modelswap,
)

MEMORY = re.compile(r"^\d+(\.\d)? (KB|MB|GB)$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    tmp: Path = tmp_path_factory.mktemp("ui-overview")
    models = {name: model_entry(tmp, name) for name in ("qwen2.5-7b", "nomic-embed")}
    config = {"models": models, "groups": {"gpu": {"swap": False, "members": sorted(models)}}}
    running = start_modelswap(tmp, config)
    yield running
    stop_modelswap(running.proc)


def listening_pid(server: UiServer, model: str) -> int:
    events = read_events(server.tmp / f"{model}.events")
    return int([e for e in events if e["event"] == "listening"][-1]["pid"])


def test_a_running_model_shows_pid_cpu_and_memory(server: UiServer, page: Page) -> None:
    chat(server.url, "qwen2.5-7b")  # returns once the model served: it runs now
    page.goto(f"{server.url}/ui/#/overview")
    table = page.get_by_role("table", name="Running models")
    row = table.locator("tr[data-model='qwen2.5-7b']")
    expect(row.locator(".pid")).to_have_text(str(listening_pid(server, "qwen2.5-7b")))
    expect(row.locator(".state-text")).to_have_text("ready")
    expect(row.locator(".rss")).to_have_text(MEMORY)
    expect(row).to_contain_text("%")
    # The host, from the performance monitor's latest sample.
    cpu = page.get_by_role("region", name="CPU")
    expect(cpu.get_by_role("heading")).to_contain_text(re.compile(r"\d+ cores"))
    expect(cpu.get_by_role("meter", name="core 0")).to_be_visible()
    expect(page.get_by_role("meter", name="Memory")).to_have_attribute(
        "aria-valuenow", re.compile(r"^\d+$")
    )

    # A model started while the page is open appears at the next poll.
    chat(server.url, "nomic-embed")
    new_row = table.locator("tr[data-model='nomic-embed']")
    expect(new_row.locator(".pid")).to_have_text(str(listening_pid(server, "nomic-embed")))


def test_screenshot(server: UiServer, page: Page) -> None:
    """docs/ui/overview.png: two running models and the host."""
    chat(server.url, "qwen2.5-7b")
    chat(server.url, "nomic-embed")
    page.goto(f"{server.url}/ui/#/overview")
    expect(page.locator("tr[data-model='nomic-embed'] .rss")).to_have_text(MEMORY)
    expect(page.locator("tr[data-model='qwen2.5-7b'] .rss")).to_have_text(MEMORY)
    expect(page.get_by_role("meter", name="Memory")).to_be_visible()
    page.screenshot(path=screenshot_path("overview"))


def test_disabled_monitor_and_nothing_running(tmp_path: Path, watched: WatchedPage) -> None:
    page = watched.page
    config = {"performance": {"disabled": True}, "models": {"m1": model_entry(tmp_path, "m1")}}
    server = start_modelswap(tmp_path, config)
    try:
        page.goto(f"{server.url}/ui/#/overview")
        expect(page.get_by_text("No model is running.")).to_be_visible()
        expect(page.get_by_text("The performance monitor is disabled")).to_be_visible()
    finally:
        page.goto("about:blank")  # close the event stream before the server goes
        stop_modelswap(server.proc)
    # The page handles the 503; only Chromium's own resource line remains, and it is expected.
    resource_503 = "the server responded with a status of 503"
    watched.errors[:] = [e for e in watched.errors if resource_503 not in e]
