"""Models page: live state, load with progress, unload, cancel a slow load, peers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Locator, Page, expect

from modelswap.testing.fake_process import pid_alive, wait_event, wait_pid_gone
from tests.ui.conftest import (
    UiServer,
    model_entry,
    screenshot_path,
    start_modelswap,
    stop_modelswap,
)

T = TypeVar("T")
LOAD_DEADLINE_MS = 20_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    tmp: Path = tmp_path_factory.mktemp("ui-models")
    fast = model_entry(tmp, "fast", startup_delay=2)
    fast.update(
        name="Fast model",
        description="loads in about two seconds",
        aliases=["quick"],
        metadata={"family": "fake", "quant": "Q4_K_M"},
    )
    config = {
        "models": {"fast": fast, "slow": model_entry(tmp, "slow", startup_delay=20)},
        "peers": {"remote": {"proxy": "http://127.0.0.1:9", "models": ["big-model"]}},
    }
    running = start_modelswap(tmp, config)
    yield running
    stop_modelswap(running.proc)


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a fake_process waiter beside Playwright's own loop (this thread has one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def open_models(page: Page, server: UiServer) -> None:
    page.goto(f"{server.url}/ui/#/models")
    expect(page.locator("#connection")).to_have_attribute("aria-label", "connected")


def row(page: Page, model: str) -> Locator:
    return page.locator(f"li.model-row[data-model='{model}']")


def test_models_show_names_aliases_metadata_and_peers(server: UiServer, page: Page) -> None:
    open_models(page, server)
    fast = row(page, "fast")
    expect(fast.locator(".model-name")).to_contain_text("Fast model")
    expect(fast.locator(".model-ids")).to_contain_text("aliases: quick")
    expect(fast.locator(".model-description")).to_have_text("loads in about two seconds")
    expect(fast.locator(".model-meta")).to_contain_text("family: fake")
    expect(fast.locator(".model-meta")).to_contain_text("quant: Q4_K_M")
    expect(fast.locator(".state-text")).to_have_text("stopped")
    peer = row(page, "remote/big-model")
    expect(peer).to_contain_text("peer")
    expect(peer.locator("button")).to_be_hidden()
    expect(page.locator(".models-header")).to_contain_text("1 from peers")


def test_load_shows_progress_then_ready_and_unload_stops_it(server: UiServer, page: Page) -> None:
    open_models(page, server)
    fast = row(page, "fast")
    page.get_by_role("button", name="Load fast").click()
    # While it loads (the fake needs ~2 s): a bar, elapsed time and a cancel button.
    expect(fast.get_by_role("progressbar", name="Loading fast")).to_be_visible()
    expect(fast.locator(".load-text")).to_contain_text("first load")
    expect(page.get_by_role("button", name="Cancel loading fast")).to_be_visible()
    expect(fast.locator(".state-text")).to_have_text("ready", timeout=LOAD_DEADLINE_MS)
    expect(fast.get_by_role("progressbar")).to_be_hidden()
    healthy = server.events("fast")
    assert [e["event"] for e in healthy].count("healthy") == 1

    page.get_by_role("button", name="Unload fast").click()
    expect(fast.locator(".state-text")).to_have_text("stopped")
    expect(page.get_by_role("button", name="Load fast")).to_be_enabled()
    assert any(e["event"] == "sigterm" for e in server.events("fast"))

    # The second load has a history: a determinate bar with the expected time.
    page.get_by_role("button", name="Load fast").click()
    expect(fast.locator(".load-text")).to_contain_text("of ~")
    expect(fast.get_by_role("progressbar")).to_have_attribute("aria-valuenow", re.compile(r"^\d+$"))
    expect(fast.locator(".state-text")).to_have_text("ready", timeout=LOAD_DEADLINE_MS)
    page.get_by_role("button", name="Unload all models").click()
    expect(fast.locator(".state-text")).to_have_text("stopped")
    expect(page.get_by_role("button", name="Unload all models")).to_be_disabled()


def test_cancel_a_slow_load_stops_the_process(server: UiServer, page: Page) -> None:
    open_models(page, server)
    slow = row(page, "slow")
    page.get_by_role("button", name="Load slow").click()
    expect(slow.get_by_role("progressbar", name="Loading slow")).to_be_visible()
    expect(slow.locator(".state-text")).to_have_text("starting")
    listening = run_async(wait_event(server.tmp / "slow.events", "listening"))
    pid = int(listening["pid"])
    assert pid_alive(pid)

    page.get_by_role("button", name="Cancel loading slow").click()
    expect(slow.locator(".state-text")).to_have_text("stopped")
    expect(slow.get_by_role("progressbar")).to_be_hidden()
    expect(page.get_by_role("button", name="Load slow")).to_be_enabled()
    run_async(wait_pid_gone(pid, timeout=5))
    kinds = [e["event"] for e in server.events("slow")]
    assert "sigterm" in kinds
    assert "healthy" not in kinds


def test_screenshot(tmp_path: Path, page: Page) -> None:
    """docs/ui/models.png: one model ready, one loading, one stopped, a peer."""
    models = {
        "qwen2.5-coder-7b": model_entry(tmp_path, "qwen2.5-coder-7b"),
        "llama-3.1-8b-instruct": model_entry(tmp_path, "llama-3.1-8b-instruct", startup_delay=30),
        "nomic-embed-text": model_entry(tmp_path, "nomic-embed-text"),
    }
    models["qwen2.5-coder-7b"].update(
        name="Qwen2.5 Coder 7B",
        description="code completion and chat, 32K context",
        aliases=["coder", "gpt-4o-mini"],
        metadata={"quant": "Q5_K_M", "ctx": 32768},
    )
    models["llama-3.1-8b-instruct"].update(
        name="Llama 3.1 8B Instruct", description="general chat", aliases=["chat"]
    )
    models["nomic-embed-text"].update(
        name="Nomic Embed", description="embeddings", metadata={"dims": 768}
    )
    config = {
        "models": models,
        "groups": {"gpu": {"swap": False, "members": sorted(models)}},
        "peers": {"openrouter": {"proxy": "http://127.0.0.1:9", "models": ["claude-sonnet"]}},
    }
    server = start_modelswap(tmp_path, config)
    try:
        open_models(page, server)
        page.get_by_role("button", name="Load qwen2.5-coder-7b").click()
        expect(row(page, "qwen2.5-coder-7b").locator(".state-text")).to_have_text("ready")
        page.get_by_role("button", name="Load llama-3.1-8b-instruct").click()
        llama = row(page, "llama-3.1-8b-instruct")
        expect(llama.locator(".state-text")).to_have_text("starting")
        expect(llama.locator(".load-text")).to_contain_text(re.compile(r"^[1-9]\.\d s"))
        page.screenshot(path=screenshot_path("models"))
        page.get_by_role("button", name="Cancel loading llama-3.1-8b-instruct").click()
        expect(row(page, "llama-3.1-8b-instruct").locator(".state-text")).to_have_text("stopped")
    finally:
        page.goto("about:blank")  # close the event stream before the server goes
        stop_modelswap(server.proc)
