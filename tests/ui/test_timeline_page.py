"""Timeline page: lanes, state bars, request marks and the swaps that evicted models."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.ui.conftest import (
    TIMEOUT_MS,
    UiServer,
    chat,
    model_entry,
    screenshot_path,
    start_modelswap,
    stop_modelswap,
)

SVG = "svg.timeline"
BUDGET_MS = 300
MARKS = 1000

# Set before any page script runs: when the 1,000th request mark is in the DOM.
MARK_DRAWN = """
window.__drawnAt = null;
new MutationObserver((_, observer) => {
  if (document.querySelectorAll('svg.timeline .req').length >= MARKS) {
    window.__drawnAt = performance.now();
    observer.disconnect();
  }
}).observe(document, { childList: true, subtree: true });
""".replace("MARKS", str(MARKS))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    """Two models in the default group: one at a time, each load evicts the other."""
    tmp: Path = tmp_path_factory.mktemp("ui-timeline")
    config = {
        "models": {
            "alpha": model_entry(tmp, "alpha", startup_delay=0.3),
            "beta": model_entry(tmp, "beta", startup_delay=0.3),
        }
    }
    running = start_modelswap(tmp, config)
    yield running
    stop_modelswap(running.proc)


def test_swaps_between_two_models_appear_live(server: UiServer, page: Page) -> None:
    page.goto(f"{server.url}/ui/#/timeline")
    expect(page.get_by_role("button", name="Show 15 min")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_text("No activity in the last 15 minutes.")).to_be_visible()
    page.get_by_role("button", name="Show the last hour").click()
    expect(page.get_by_text("No activity in the last hour.")).to_be_visible()
    expect(page.get_by_role("button", name="Show 1 h")).to_be_focused()

    for model in ("alpha", "beta", "alpha"):  # each one evicts the other
        chat(server.url, model)
    svg = page.locator(SVG)
    expect(svg.locator(".lane[data-model='alpha']")).to_be_visible()
    expect(svg.locator(".lane[data-model='beta']")).to_be_visible()
    # beta's load evicted alpha, then alpha's load evicted beta: connectors, reason "group".
    beta_swap = svg.locator(".swap[data-model='beta'][data-evict='alpha']")
    expect(beta_swap).to_have_attribute("data-reason", "group")
    expect(beta_swap).to_have_attribute(
        "aria-label", re.compile(r"^swap \d+: loaded beta, evicted alpha \(group\), \d+\.\d s$")
    )
    expect(beta_swap.locator(".swap-label")).to_have_text("group")
    expect(svg.locator(".swap[data-model='alpha'][data-evict='beta']")).to_have_count(1)
    # Each request is a mark on its model's lane; each model had a ready stretch.
    expect(svg.locator(".req")).to_have_count(3)
    expect(svg.locator(".req title").first).to_contain_text("request")
    expect(svg.locator(".bar-ready")).to_have_count(3)
    expect(page.locator(".swap-list li")).to_have_count(3)


def test_keyboard_zoom_and_focusable_swaps(server: UiServer, page: Page) -> None:
    chat(server.url, "beta")  # at least one swap exists whatever ran before
    page.goto(f"{server.url}/ui/#/timeline")
    swaps = page.locator(f"{SVG} .swap")
    expect(swaps.first).to_be_visible()
    page.get_by_role("button", name="Show 5 min").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Show 5 min")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_role("button", name="Show 15 min")).to_have_attribute(
        "aria-pressed", "false"
    )
    # Tab order: the zoom buttons, then each swap in the drawing.
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    focused = page.locator(":focus")
    expect(focused).to_have_class(re.compile(r"\bswap\b"))
    expect(focused).to_have_attribute("aria-label", re.compile(r"^swap \d+: loaded "))
    label = focused.get_attribute("aria-label")
    expect(page.locator(".swap-detail")).to_have_text(label or "")  # shown, not only spoken
    # The zoom choice survives a reload.
    page.reload()
    expect(page.get_by_role("button", name="Show 5 min")).to_have_attribute("aria-pressed", "true")


def drawn_ms(browser: Browser, url: str) -> float:
    """Navigation start → every request mark drawn, for a full load of the Timeline.

    Measured on the second load in a fresh browser context, as the Activity
    page's budget is: the first load pays for Chromium's own cold start
    (renderer process, fonts), which is not the UI's. The measured load is still
    a whole new document: every file is requested again, /api/events
    reconnects, /api/timeline is fetched and all 1,000 marks are drawn.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.add_init_script(MARK_DRAWN)
        for attempt in ("first", "measured"):
            page.goto(f"{url}/ui/?load={attempt}#/timeline")
            page.wait_for_function("window.__drawnAt !== null")
        drawn: float = page.evaluate("window.__drawnAt")
        page.goto("about:blank")
        assert errors == []
        return drawn
    finally:
        context.close()


def test_draws_1000_requests_in_under_300_ms(tmp_path: Path, browser: Browser) -> None:
    models = {"a": model_entry(tmp_path, "a"), "b": model_entry(tmp_path, "b")}
    config = {"models": models, "groups": {"both": {"swap": False, "members": ["a", "b"]}}}
    server = start_modelswap(tmp_path, config)
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: chat(server.url, "ab"[i % 2]), range(MARKS)))
        # Best of five: the budget is for our code, not for whatever else the
        # (2-core) machine runs at that moment. Each load includes the HTML, every
        # module, /api/events, /api/timeline and drawing all 1,000 marks.
        times = [drawn_ms(browser, server.url) for _ in range(5)]
        assert min(times) < BUDGET_MS, f"drawn after {[round(t) for t in times]} ms"
    finally:
        stop_modelswap(server.proc)


def status_of_chat(url: str, model: str) -> int:
    """A chat's HTTP status, errors included."""
    try:
        chat(url, model)
    except urllib.error.HTTPError as error:
        return error.code
    return 200


def test_screenshot(tmp_path: Path, page: Page) -> None:
    """docs/ui/timeline.png: clients thrashing one GPU group (one model at a time)."""
    models = {
        "qwen2.5-coder-7b": model_entry(
            tmp_path, "qwen2.5-coder-7b", startup_delay=0.5, slow_body=0.4
        ),
        "llama-3.1-8b": model_entry(tmp_path, "llama-3.1-8b", startup_delay=1, slow_body=0.8),
        "nomic-embed": model_entry(tmp_path, "nomic-embed", startup_delay=0, slow_body=0.1),
        "mistral-broken": model_entry(tmp_path, "mistral-broken", exit_at_start=1),
    }
    server = start_modelswap(tmp_path, {"models": models})
    rounds = [
        ["qwen2.5-coder-7b", "llama-3.1-8b", "nomic-embed"],
        ["qwen2.5-coder-7b", "mistral-broken", "llama-3.1-8b", "nomic-embed"],
    ]
    try:
        page.goto(f"{server.url}/ui/#/timeline")
        page.get_by_role("button", name="Show 1 min").click()
        with ThreadPoolExecutor(4) as pool:  # clients at once, each wanting its own model
            statuses = [list(pool.map(lambda m: status_of_chat(server.url, m), r)) for r in rounds]
        assert statuses == [[200, 200, 200], [200, 500, 200, 200]], statuses
        expect(page.locator(f"{SVG} .req")).to_have_count(7)
        expect(page.locator(f"{SVG} .req.req-error")).to_have_count(1)
        expect(page.locator(f"{SVG} .swap.swap-failed")).to_have_count(1)
        page.screenshot(path=screenshot_path("timeline"))
    finally:
        page.goto("about:blank")  # close the event stream before the server goes
        stop_modelswap(server.proc)
