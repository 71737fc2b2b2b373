"""Activity in a real browser: one page of 1,000 stored requests in < 300 ms,
server-side paging, sorting and model filter, live refresh, in-flight cancel,
captures, and failed requests with their error message.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.ui.conftest import (
    TIMEOUT_MS,
    UiServer,
    WatchedPage,
    model_entry,
    screenshot_path,
    start_modelswap,
    stop_modelswap,
)

STORED = 1000
BUDGET_MS = 300
ROWS = ".activity-table tbody tr[data-id]"

# Resolves once the first activity row is in the DOM; set before any page script runs.
MARK_FIRST_ROW = """
window.__firstRowAt = null;
new MutationObserver((_, observer) => {
  if (document.querySelector('.activity-table tbody tr[data-id]')) {
    window.__firstRowAt = performance.now();
    observer.disconnect();
  }
}).observe(document, { childList: true, subtree: true });
"""


def post(url: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        data: bytes = response.read()
    return data


def chat(url: str, model: str, text: str = "hello there") -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return post(url, "/v1/chat/completions", body)


def get_json(url: str, path: str) -> Any:
    with urllib.request.urlopen(url + path, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    """1,000 quick requests to "fast" (the in-memory store's whole capacity), then 3 to "other"."""
    tmp: Path = tmp_path_factory.mktemp("ui-activity")
    models = {
        "fast": model_entry(tmp, "fast"),
        "other": model_entry(tmp, "other"),
        "trickle": model_entry(tmp, "trickle", chunks=100, chunk_interval=0.2),
        "broken": model_entry(tmp, "broken", exit_at_start=3),
    }
    running = start_modelswap(tmp, {"models": models})
    with ThreadPoolExecutor(max_workers=8) as pool:  # under the per-model limit of 10
        list(pool.map(lambda i: chat(running.url, "fast", f"request number {i}"), range(STORED)))
    for i in range(3):
        chat(running.url, "other", f"other request {i}")
    yield running
    stop_modelswap(running.proc)


def open_activity(page: Page, server: UiServer) -> None:
    page.goto(f"{server.url}/ui/#/activity")
    expect(page.locator(ROWS).first).to_be_visible()


def ids(page: Page) -> list[int]:
    return [int(i) for i in page.locator(ROWS).evaluate_all("rows => rows.map(r => r.dataset.id)")]


def first_row_ms(browser: Browser, url: str) -> float:
    """Navigation start → first table row, for a full load of the Activity page.

    Measured on the second load in a fresh browser context: the first one pays
    for Chromium's own cold start (renderer process, system fonts), which is not
    the UI's. The measured load is still a whole new document: every file is
    requested again (revalidated: 304), /api/events reconnects and the rows and
    totals are fetched anew.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.add_init_script(MARK_FIRST_ROW)
        for attempt in ("first", "measured"):
            page.goto(f"{url}/ui/?load={attempt}#/activity")
            page.wait_for_function("window.__firstRowAt !== null")
        assert len(ids(page)) == 25  # one page, not the store
        expect(page.get_by_test_id("pager-position")).to_have_text(
            f"Page 1 of {STORED // 25} · {STORED} requests"
        )
        assert errors == []
        rendered: float = page.evaluate("window.__firstRowAt")
        return rendered
    finally:
        context.close()


def test_loads_in_under_300_ms_with_1000_rows(server: UiServer, browser: Browser) -> None:
    stored = get_json(server.url, "/api/metrics/activity?limit=1")
    assert stored["total"] == STORED  # the store is full
    # Best of five: the budget is for our code, not for whatever else the
    # (2-core) machine runs at that moment — under load, one static file can
    # wait 250 ms for the server process to be scheduled.
    times = [first_row_ms(browser, server.url) for _ in range(5)]
    assert min(times) < BUDGET_MS, f"first row after {[round(t) for t in times]} ms"


def test_totals_and_columns(server: UiServer, page: Page) -> None:
    open_activity(page, server)
    stats = get_json(server.url, "/api/metrics/stats")
    expect(page.locator("[data-stat=requests] .stat-value")).to_have_text(
        f"{stats['total_requests']:,}"
    )
    expect(page.locator("[data-stat=output] .stat-value")).to_have_text(
        f"{stats['total_output_tokens']:,}"
    )
    newest = get_json(server.url, "/api/metrics/activity?limit=1")["data"][0]
    row = page.locator(f"{ROWS}[data-id='{newest['id']}']")
    expect(row.locator(".c-model")).to_have_text(newest["model"])
    expect(row.locator(".c-path")).to_have_text("/v1/chat/completions")
    expect(row.locator(".c-status")).to_have_text("200")
    expect(row.locator(".c-prompt")).to_have_text(str(newest["tokens"]["input_tokens"]))
    expect(row.locator(".c-generated")).to_have_text("5")
    rate = newest["tokens"]["tokens_per_second"]
    expect(row.locator(".c-decode")).to_have_text(f"{rate:.2f} t/s")
    expect(row.locator(".c-time")).to_have_text(re.compile(r"^(now|\d+s ago|\d+m ago)$"))
    expect(row.locator(".c-explain")).to_contain_text("ttfb")


def test_paging_and_page_size(server: UiServer, page: Page) -> None:
    open_activity(page, server)
    top = ids(page)
    assert top == sorted(top, reverse=True) and len(top) == 25
    pager = page.get_by_role("navigation", name="Pages")
    expect(pager.get_by_role("button", name="Prev")).to_be_disabled()
    pager.get_by_role("button", name="Next").click()
    expect(page.get_by_test_id("pager-position")).to_contain_text("Page 2 of 40")
    assert ids(page) == list(range(top[-1] - 1, top[-1] - 26, -1))
    pager.get_by_role("button", name="Last").click()
    expect(page.get_by_test_id("pager-position")).to_contain_text("Page 40 of 40")
    expect(pager.get_by_role("button", name="Next")).to_be_disabled()
    assert ids(page)[-1] == top[0] - STORED + 1  # the oldest row still stored
    pager.get_by_role("button", name="First").click()
    expect(page.get_by_test_id("pager-position")).to_contain_text("Page 1 of 40")
    page.get_by_label("Rows").select_option("100")
    expect(page.get_by_test_id("pager-position")).to_contain_text("Page 1 of 10")
    expect(page.locator(ROWS)).to_have_count(100)
    page.reload()  # the page size is remembered
    expect(page.get_by_label("Rows")).to_have_value("100")
    expect(page.locator(ROWS)).to_have_count(100)


def test_sorting_by_columns(server: UiServer, page: Page) -> None:
    open_activity(page, server)
    id_header = page.locator("th.c-id")
    expect(id_header).to_have_attribute("aria-sort", "descending")
    id_header.get_by_role("button").click()  # same column: the order flips
    expect(id_header).to_have_attribute("aria-sort", "ascending")
    expect(page.locator(ROWS).first.locator(".c-id")).to_contain_text(str(min(ids(page))))
    first_ids = ids(page)
    assert first_ids == sorted(first_ids)
    model_header = page.locator("th.c-model")
    model_header.get_by_role("button").click()  # a new column: descending first
    expect(model_header).to_have_attribute("aria-sort", "descending")
    expect(id_header).to_have_attribute("aria-sort", "none")
    expect(page.locator(ROWS).first.locator(".c-model")).to_have_text("other")
    model_header.get_by_role("button").click()
    expect(page.locator(ROWS).first.locator(".c-model")).to_have_text("fast")
    page.locator("th.c-id").get_by_role("button").click()  # back to newest first
    expect(id_header).to_have_attribute("aria-sort", "descending")


def test_model_filter(server: UiServer, page: Page) -> None:
    open_activity(page, server)
    page.get_by_label("Model").select_option("other")
    expect(page.locator(ROWS)).to_have_count(3)
    expect(page.locator(f"{ROWS} .c-model")).to_have_text(["other"] * 3)
    expect(page.get_by_test_id("pager-position")).to_have_text("Page 1 of 1 · 3 requests")
    expect(page.locator("[data-stat=requests] .stat-value")).to_have_text("3")
    page.get_by_label("Model").select_option("")
    expect(page.locator(ROWS)).to_have_count(25)


def test_capture_dialog_pretty_json_and_escape(server: UiServer, page: Page) -> None:
    open_activity(page, server)
    row = page.locator(ROWS).first
    button = row.get_by_role("button", name=re.compile("Capture of request"))
    button.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading", level=2)).to_contain_text(
        row.get_attribute("data-id") or ""
    )
    request_body = dialog.locator(".capture-request pre")
    expect(request_body).to_contain_text('"role": "user"')  # indented JSON, not one line
    expect(request_body).to_contain_text("\n")
    response_body = dialog.locator(".capture-response pre")
    expect(response_body).to_contain_text('"object": "chat.completion"')
    expect(dialog.locator("table.headers").first).to_contain_text("Content-Type")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(button).to_be_focused()  # focus goes back to the opener


def test_new_requests_appear_while_watching_page_one(server: UiServer, page: Page) -> None:
    open_activity(page, server)
    newest = ids(page)[0]
    chat(server.url, "other", "live one")
    expect(page.locator(ROWS).first).to_have_attribute("data-id", str(newest + 1))
    burst = 10  # in quick succession: one refresh per second at most, the last one not lost
    for i in range(burst):
        chat(server.url, "other", f"burst {i}")
    expect(page.locator(ROWS).first).to_have_attribute("data-id", str(newest + 1 + burst))
    starts: list[float] = page.evaluate(
        """performance.getEntriesByType('resource')
            .filter(e => e.name.includes('/api/metrics/activity?'))
            .map(e => e.startTime)"""
    )
    gaps = [b - a for a, b in itertools.pairwise(starts[1:])]  # after the first load
    assert len(starts) >= 3 and all(gap >= 950 for gap in gaps), starts


def test_no_refresh_away_from_page_one(server: UiServer, page: Page) -> None:
    open_activity(page, server)
    page.get_by_role("navigation", name="Pages").get_by_role("button", name="Next").click()
    expect(page.get_by_test_id("pager-position")).to_contain_text("Page 2")
    shown = ids(page)
    before = page.locator("[data-stat=requests] .stat-value").inner_text()
    chat(server.url, "other", "while on page two")
    # The totals still follow (the store is full, so the count stays; wait for the fetch)…
    page.wait_for_function(
        """() => performance.getEntriesByType('resource')
            .filter(e => e.name.includes('/api/metrics/stats')).length >= 2"""
    )
    expect(page.locator("[data-stat=requests] .stat-value")).to_have_text(before)
    # …but the rows under the reader's eyes do not move.
    assert ids(page) == shown


def test_failed_request_shows_its_error(server: UiServer, watched: WatchedPage) -> None:
    page = watched.page
    with pytest.raises(urllib.error.HTTPError) as failure:
        chat(server.url, "broken")
    failure.value.close()
    open_activity(page, server)
    row = page.locator(ROWS, has=page.locator(".c-model", has_text="broken")).first
    expect(row).to_have_class(re.compile("failed"))
    expect(row.locator(".c-status .status-bad")).to_have_text(str(failure.value.code))
    expect(row.locator(".c-status .error")).not_to_be_empty()


def test_inflight_request_is_listed_and_cancelled(server: UiServer, page: Page) -> None:
    open_activity(page, server)
    expect(page.get_by_test_id("inflight-count")).to_have_text("0")
    outcome: dict[str, Any] = {}

    def stream() -> None:
        body = {"model": "trickle", "stream": True, "messages": [{"role": "user", "content": "x"}]}
        try:
            post(server.url, "/v1/chat/completions", body, {"X-Session-ID": "ui-test-session"})
            outcome["result"] = "completed"
        except Exception as error:  # the cancel cuts the stream
            outcome["result"] = type(error).__name__

    client = threading.Thread(target=stream)
    client.start()
    try:
        panel = page.locator("section.inflight")
        entry = panel.locator("tbody tr")
        expect(entry).to_have_count(1)
        expect(entry).to_contain_text("trickle")
        expect(entry).to_contain_text("POST /v1/chat/completions")
        expect(entry).to_contain_text("ui-test-session")
        expect(page.get_by_test_id("inflight-count")).to_have_text("1")
        entry.get_by_role("button", name=re.compile("Cancel request")).click()
        expect(entry).to_have_count(0)
        expect(panel).to_contain_text("No requests in flight.")
    finally:
        client.join(TIMEOUT_MS / 1000)
    assert outcome.get("result") != "completed"  # 100 chunks × 0.2 s would take 20 s


def test_row_detail_and_keyboard(server: UiServer, page: Page) -> None:
    open_activity(page, server)
    served = page.locator(ROWS, has=page.locator(".c-explain", has_text="ttfb")).first
    toggle = served.get_by_role("button", name=re.compile("Details of request"))
    toggle.focus()
    page.keyboard.press("Enter")
    expect(toggle).to_have_attribute("aria-expanded", "true")
    detail = page.locator("tr.detail")
    expect(detail).to_contain_text("Queue wait")
    expect(detail).to_contain_text("Time to first byte")
    page.keyboard.press("Enter")
    expect(detail).to_have_count(0)


def test_screenshot_with_realistic_data(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A small day's work: streaming chats, a swap that evicts, embeddings, a failure."""
    tmp: Path = tmp_path_factory.mktemp("ui-activity-shot")
    models = {
        "qwen2.5-7b": model_entry(tmp, "qwen2.5-7b", startup_delay=0.6, chunks=24),
        "llama3.1-8b": model_entry(tmp, "llama3.1-8b", startup_delay=0.9, chunks=40),
        "nomic-embed": model_entry(tmp, "nomic-embed", startup_delay=0.3),
        "mistral-small": model_entry(tmp, "mistral-small", exit_at_start=1),
    }
    shot = start_modelswap(tmp, {"models": models})
    try:
        url = shot.url
        stream = {"stream": True, "stream_options": {"include_usage": True}}
        prompt = "Summarise the plot of Hamlet in three sentences please"
        for model in ("qwen2.5-7b", "qwen2.5-7b", "llama3.1-8b"):
            body = {"model": model, "messages": [{"role": "user", "content": prompt}], **stream}
            post(url, "/v1/chat/completions", body)
        post(url, "/v1/embeddings", {"model": "nomic-embed", "input": ["one doc", "another"]})
        chat(url, "qwen2.5-7b", "What is the capital of Australia and why was it chosen")
        with pytest.raises(urllib.error.HTTPError) as failure:
            chat(url, "mistral-small")
        failure.value.close()
        chat(url, "qwen2.5-7b", "Write a haiku about GPUs")
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        open_activity(page, shot)
        expect(page.locator(ROWS)).to_have_count(7)
        expect(page.locator(".c-explain", has_text="evicted")).not_to_have_count(0)
        evicting = page.locator(ROWS, has=page.locator(".c-explain", has_text="evicted")).first
        evicting.get_by_role("button", name=re.compile("Details")).click()
        page.screenshot(path=screenshot_path("activity"))
        context.close()
        assert errors == []
    finally:
        stop_modelswap(shot.proc)
