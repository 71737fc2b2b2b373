"""The shell: / leads to the UI, every page renders, keyboard navigation works."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.ui.conftest import (
    UiServer,
    WatchedPage,
    model_entry,
    start_modelswap,
    stop_modelswap,
)

PAGES = ["models", "playground", "activity", "timeline", "logs", "overview"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    tmp: Path = tmp_path_factory.mktemp("ui-shell")
    running = start_modelswap(tmp, {"models": {"m1": model_entry(tmp, "m1")}})
    yield running
    stop_modelswap(running.proc)


def test_root_leads_to_the_ui(server: UiServer, page: Page) -> None:
    page.goto(server.url + "/")
    expect(page.locator("nav[aria-label=Main]")).to_be_visible()
    assert "/ui" in page.url
    expect(page.locator("#connection")).to_have_attribute("aria-label", "connected")


@pytest.mark.parametrize("name", PAGES)
def test_every_page_renders(server: UiServer, page: Page, name: str) -> None:
    page.goto(f"{server.url}/ui/#/{name}")
    expect(page.locator(f"section[data-page={name}]")).to_be_visible()
    expect(page.locator(f".nav a[data-page={name}]")).to_have_attribute("aria-current", "page")


def test_keyboard_alone_reaches_every_page(server: UiServer, page: Page) -> None:
    page.goto(f"{server.url}/ui/")
    page.keyboard.press("Tab")  # the skip link comes first
    expect(page.locator(".skip-link")).to_be_focused()
    for name in PAGES:  # then the nav links, in order
        page.keyboard.press("Tab")
        expect(page.locator(f".nav a[data-page={name}]")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator(f"section[data-page={name}]")).to_be_visible()


def test_with_api_keys_the_browser_logs_in_and_everything_works(
    tmp_path_factory: pytest.TempPathFactory, browser: Browser
) -> None:
    """apiKeys set: without credentials the UI is refused; with the key as password it works."""
    tmp: Path = tmp_path_factory.mktemp("ui-keys")
    config = {"apiKeys": ["sk-ui-test"], "models": {"m1": model_entry(tmp, "m1")}}
    running = start_modelswap(tmp, config)
    try:
        anonymous = browser.new_context()
        assert anonymous.request.get(f"{running.url}/ui/").status == 401
        assert anonymous.request.get(f"{running.url}/api/events").status == 401
        anonymous.close()
        context = browser.new_context(http_credentials={"username": "me", "password": "sk-ui-test"})
        watched = WatchedPage(context.new_page())
        watched.page.goto(f"{running.url}/ui/#/models")
        # The event stream (EventSource) authenticated too: the model list arrived.
        expect(watched.page.locator("#connection")).to_have_attribute("aria-label", "connected")
        expect(watched.page.locator("section[data-page=models]")).to_contain_text("m1")
        context.close()
        assert watched.errors == []
    finally:
        stop_modelswap(running.proc)
