"""Models page with memory routing on: each model's footprint (modelStatus ``footprint``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.ui.conftest import UiServer, chat, model_entry, start_modelswap, stop_modelswap


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    tmp: Path = tmp_path_factory.mktemp("ui-memory")
    big = model_entry(tmp, "big")
    big["resources"] = {"ram": "3GiB"}  # declared far above what the fake really uses
    small = model_entry(tmp, "small")
    config = {"models": {"big": big, "small": small}, "routing": {"resources": {"ram": "8GiB"}}}
    running = start_modelswap(tmp, config)
    yield running
    stop_modelswap(running.proc)


def test_declared_then_measured_footprint_is_shown(server: UiServer, page: Page) -> None:
    page.goto(f"{server.url}/ui/#/models")
    expect(page.locator("#connection")).to_have_attribute("aria-label", "connected")
    big = page.locator("li.model-row[data-model='big']")
    small = page.locator("li.model-row[data-model='small']")
    expect(big.locator(".model-footprint")).to_have_text("memory: ram 3 GiB")
    expect(small.locator(".model-footprint")).to_be_hidden()  # declares nothing, not measured
    chat(server.url, "small")
    # Once ready, small's process tree is measured (psutil RSS): a real, non-zero size.
    expect(small.locator(".model-footprint")).to_contain_text("memory: ram ", timeout=20_000)
    expect(small.locator(".model-footprint")).to_contain_text("MiB")
