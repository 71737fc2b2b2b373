"""Playground in a real browser: streamed chat, the loading-state reasoning
block, that chat's row in Activity (tokens, load time, eviction, capture),
and the embeddings, rerank, images and audio tabs against the fake upstream.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.ui.conftest import (
    UiServer,
    WatchedPage,
    model_entry,
    screenshot_path,
    start_modelswap,
    stop_modelswap,
)

STREAMED = (
    "Streaming works: one two three four five six seven eight nine ten "
    "eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty."
)
CHUNKS = 20
FIRST_PIECE = STREAMED[: len(STREAMED) // CHUNKS]  # the fake splits text evenly by characters
LOAD_DELAY = 1.5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    tmp: Path = tmp_path_factory.mktemp("ui-playground")
    models = {
        "streamer": model_entry(
            tmp, "streamer", chunks=CHUNKS, chunk_interval=0.05, response_text=STREAMED
        ),
        "sleepy": model_entry(tmp, "sleepy", startup_delay=LOAD_DELAY),
        "warm": model_entry(tmp, "warm"),
        "coder": model_entry(
            tmp,
            "coder",
            chunks=12,
            chunk_interval=0.02,
            response_text=(
                "Here is a loop that counts to three:\n```python\nfor i in range(3):\n"
                "    print(i)\n```\nIt prints `0`, `1` and `2`."
            ),
        ),
    }
    models["broken"] = model_entry(tmp, "broken", exit_at_start=3)
    models["warm"]["aliases"] = ["warm-alias"]
    models["hidden"] = {**model_entry(tmp, "hidden"), "unlisted": True}
    running = start_modelswap(tmp, {"sendLoadingState": True, "models": models})
    yield running
    stop_modelswap(running.proc)


def post_json(server: UiServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        server.url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def open_playground(page: Page, server: UiServer, tab: str = "chat") -> None:
    page.goto(f"{server.url}/ui/#/playground/{tab}")
    expect(page.locator(f"[role=tab][data-tab={tab}]")).to_have_attribute("aria-selected", "true")


def pick(page: Page, key: str, model: str) -> None:
    select = page.get_by_test_id(f"model-{key}")
    expect(select.locator(f"option[value='{model}']")).to_have_count(1)
    select.select_option(model)


def last_reply(page: Page) -> Any:
    return page.locator(".msg-assistant").last


def ms(text: str) -> float:
    """ "850 ms" / "1.52 s" → milliseconds."""
    value, unit = text.split()
    return float(value) * (1000 if unit == "s" else 1)


def test_model_picker_lists_models_aliases_not_unlisted(server: UiServer, page: Page) -> None:
    open_playground(page, server)
    select = page.get_by_test_id("model-chat")
    expect(select.locator("option[value=warm]")).to_have_count(1)
    expect(select.locator("option[value=warm-alias]")).to_contain_text("↳ warm-alias")
    expect(select.locator("option[value=streamer]")).to_have_count(1)
    expect(select.locator("option[value=hidden]")).to_have_count(0)


def test_chat_streams_text_as_it_arrives(server: UiServer, page: Page) -> None:
    open_playground(page, server)
    pick(page, "chat", "streamer")
    box = page.get_by_label("Message")
    box.fill("first line")
    box.press("Shift+Enter")  # a newline, not a send
    box.type("second line")
    expect(page.locator(".msg-user")).to_have_count(0)
    box.press("Enter")
    expect(page.locator(".msg-user .msg-content")).to_have_text("first line\nsecond line")
    content = last_reply(page).locator(".msg-content")
    # Part of the reply is on screen while the rest is still streaming…
    page.wait_for_function(
        """([first, whole]) => {
            const el = [...document.querySelectorAll('.msg-assistant .msg-content')].pop();
            const text = el ? el.textContent : '';
            return text.includes(first) && !text.includes(whole);
        }""",
        arg=[FIRST_PIECE, STREAMED],
    )
    expect(page.get_by_role("button", name="Stop")).to_be_enabled()
    # …then all of it, and the stream's usage line.
    expect(content).to_have_text(STREAMED)
    expect(last_reply(page).locator(".msg-meta")).to_contain_text(f"{CHUNKS} generated")
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    expect(box).to_have_value("")
    # The request carried this page's session id.
    chats = [e for e in server.events("streamer") if e.get("path") == "/v1/chat/completions"]
    assert chats, server.events("streamer")
    session = page.locator(".session").inner_text().rsplit(" ", 1)[-1]
    assert re.fullmatch(r"ms-pg-[a-z0-9]{5}", session)


def test_stop_ends_the_stream_and_new_chat_clears(server: UiServer, page: Page) -> None:
    open_playground(page, server)
    pick(page, "chat", "streamer")
    page.get_by_label("Message").fill("tell me something long")
    page.get_by_role("button", name="Send").click()
    expect(last_reply(page).locator(".msg-content")).to_contain_text(FIRST_PIECE)
    page.get_by_role("button", name="Stop").click()
    expect(last_reply(page).locator(".msg-meta")).to_contain_text("stopped")
    assert last_reply(page).locator(".msg-content").inner_text() != STREAMED
    page.get_by_role("button", name="New chat").click()
    expect(page.locator(".msg")).to_have_count(0)
    expect(page.get_by_label("Message")).to_be_focused()


def test_code_blocks_render_as_pre_not_markup(server: UiServer, page: Page) -> None:
    open_playground(page, server)
    pick(page, "chat", "coder")
    page.get_by_label("Message").fill("show me a loop")
    page.get_by_label("Message").press("Enter")
    reply = last_reply(page)
    expect(reply.locator("pre.code-block code")).to_have_text("for i in range(3):\n    print(i)")
    expect(reply.locator(".md-text code")).to_have_text(["0", "1", "2"])
    expect(reply.locator(".msg-meta")).not_to_be_empty()


def test_loading_state_then_activity_row_with_tokens_load_and_capture(
    server: UiServer, page: Page
) -> None:
    # "warm" is the model in memory, so the chat below must swap it out for "sleepy".
    post_json(server, "/v1/embeddings", {"model": "warm", "input": "warm up"})
    open_playground(page, server)
    pick(page, "chat", "sleepy")
    prompt = "tell me a story about swaps"  # 6 words: the fake counts words as tokens
    page.get_by_label("Message").fill(prompt)
    page.get_by_label("Message").press("Enter")
    reply = last_reply(page)
    reasoning = reply.locator("details.reasoning")
    # While the model loads, the loading-state text streams into the open Reasoning block.
    expect(reasoning).to_have_attribute("open", "")
    expect(reasoning.locator(".reasoning-text")).to_contain_text("loading model: sleepy")
    expect(reply.locator(".msg-content")).to_have_text("Hello from sleepy")
    expect(reasoning.locator(".reasoning-text")).to_contain_text("Done!")
    expect(reasoning).not_to_have_attribute("open", "")  # folded away once the answer came
    expect(reasoning.locator("summary")).to_contain_text("Reasoning")
    session = page.locator(".session").inner_text().rsplit(" ", 1)[-1]

    # The same request in Activity: tokens, and the swap it waited for.
    page.get_by_role("link", name="Activity").click()
    sleepy = page.locator(".c-model", has_text="sleepy")
    row = page.locator(".activity-table tr[data-id]", has=sleepy)
    expect(row).to_have_count(1)
    expect(row.locator(".c-path")).to_have_text("/v1/chat/completions")
    expect(row.locator(".c-status")).to_have_text("200")
    expect(row.locator(".c-prompt")).to_have_text("6")
    expect(row.locator(".c-generated")).to_have_text("5")  # the fake's default 5 chunks
    explain = row.locator(".c-explain")
    expect(explain).to_contain_text("waited for sleepy")
    expect(explain).to_contain_text("evicted warm")
    load = re.search(r"load ([\d.]+ m?s)", explain.inner_text())
    assert load is not None, explain.inner_text()
    assert ms(load.group(1)) >= LOAD_DELAY * 1000 * 0.9  # the fake was unhealthy that long

    # Row detail: the whole breakdown.
    row.get_by_role("button", name=re.compile("Details of request")).click()
    detail = page.locator("tr.detail")
    expect(detail).to_contain_text("Load time")
    expect(detail.locator("dt", has_text="Evicted").locator("+ dd")).to_have_text("warm")
    load_detail = detail.locator("dt", has_text="Load time").locator("+ dd").inner_text()
    assert ms(load_detail) > 0

    # Its capture: the request body as sent, pretty-printed; Esc closes.
    row.get_by_role("button", name=re.compile("Capture of request")).click()
    dialog = page.locator("dialog.capture-dialog")
    expect(dialog).to_be_visible()
    body = dialog.locator(".capture-request pre")
    expect(body).to_contain_text(prompt)
    expect(body).to_contain_text('"model": "sleepy"')
    headers = dialog.locator("table.headers").first
    expect(headers.locator("tr", has_text="X-Session-Id")).to_contain_text(session)
    expect(dialog.locator(".capture-response .reassembled")).to_contain_text("Hello from sleepy")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_tabs_work_with_arrow_keys(server: UiServer, page: Page) -> None:
    open_playground(page, server)
    chat = page.locator("[role=tab][data-tab=chat]")
    chat.focus()
    page.keyboard.press("ArrowRight")
    embeddings = page.locator("[role=tab][data-tab=embeddings]")
    expect(embeddings).to_be_focused()
    expect(embeddings).to_have_attribute("aria-selected", "true")
    expect(page.locator("[role=tabpanel][data-panel=embeddings]")).to_be_visible()
    expect(page.locator("[role=tabpanel][data-panel=chat]")).to_be_hidden()
    page.keyboard.press("End")
    expect(page.locator("[role=tab][data-tab=audio]")).to_be_focused()
    page.keyboard.press("ArrowRight")  # wraps around
    expect(chat).to_have_attribute("aria-selected", "true")


def test_embeddings_tab(server: UiServer, page: Page) -> None:
    open_playground(page, server, "embeddings")
    pick(page, "embeddings", "warm")
    page.get_by_label("Input text").fill("a short sentence to embed")
    page.get_by_role("button", name="Embed").click()
    result = page.get_by_test_id("embeddings-result")
    expect(result.locator(".dims")).to_have_text("8 dimensions")  # the fake's default size
    expect(result).to_contain_text("5 prompt tokens")
    vector = re.compile(r"^\[-?\d\.\d{4}(, -?\d\.\d{4}){7}\]$")
    expect(result.locator(".vector")).to_have_text(vector)


def test_rerank_tab(server: UiServer, page: Page) -> None:
    open_playground(page, server, "rerank")
    pick(page, "rerank", "warm")
    page.get_by_label("Query").fill("red fox jumps")
    page.get_by_label("Documents (one per line)").fill(
        "a blue whale\nthe red fox jumps high\na red car"
    )
    page.get_by_role("button", name="Rerank").click()
    rows = page.get_by_test_id("rerank-result").locator("tbody tr")
    expect(rows).to_have_count(3)
    # Sorted by score: 3/3, 1/3, 0/3 of the query's words.
    expect(rows.locator("td.score")).to_have_text(["1.0000", "0.3333", "0.0000"])
    expect(rows.nth(0)).to_contain_text("the red fox jumps high")
    expect(rows.nth(2)).to_contain_text("a blue whale")


def test_images_tab(server: UiServer, page: Page) -> None:
    open_playground(page, server, "images")
    pick(page, "images", "warm")
    page.get_by_label("Prompt").fill("a lighthouse")
    page.get_by_label("Size").select_option("256x256")
    page.get_by_role("button", name="Generate").click()
    image = page.get_by_test_id("images-result").locator("img")
    expect(image).to_have_attribute("src", re.compile(r"^data:image/png;base64,iVBOR"))
    page.wait_for_function(
        "() => document.querySelector('.generated img')?.naturalWidth > 0"
    )  # it decoded as a real PNG


def test_audio_tab_speech_and_transcription(server: UiServer, page: Page) -> None:
    open_playground(page, server, "audio")
    pick(page, "speech", "warm")
    page.get_by_label("Text").fill("say this")
    page.get_by_role("button", name="Speak").click()
    speech = page.get_by_test_id("speech-result")
    expect(speech.locator("audio")).to_have_attribute("src", re.compile(r"^blob:"))
    expect(speech).to_contain_text("audio/mpeg")

    pick(page, "transcription", "warm")
    page.get_by_role("button", name="Transcribe").click()
    expect(page.locator(".audio-tools .error").last).to_have_text("Choose an audio file first.")
    page.get_by_label("Audio file").set_input_files(
        {"name": "clip.wav", "mimeType": "audio/wav", "buffer": b"RIFF\x00\x00\x00\x00WAVE"}
    )
    page.get_by_role("button", name="Transcribe").click()
    expect(page.get_by_test_id("transcription-result")).to_have_text("Hello from warm")


def test_http_error_is_shown_inline(server: UiServer, watched: WatchedPage) -> None:
    page = watched.page
    open_playground(page, server)
    select = page.get_by_test_id("model-chat")
    expect(select.locator("option[value=warm]")).to_have_count(1)
    # A model the server does not know: the JSON error envelope's message is shown.
    select.evaluate("s => { s.append(new Option('nope', 'nope')); s.value = 'nope'; }")
    page.get_by_label("Message").fill("hello?")
    page.get_by_label("Message").press("Enter")
    error = last_reply(page).locator(".error")
    expect(error).to_be_visible()
    expect(error).to_have_text("no router for requested model")
    # Chromium logs every failed response; this one was asked for, anything else still fails.
    expected = [e for e in watched.errors if "Failed to load resource" in e]
    assert len(expected) == 1, watched.errors
    watched.errors.remove(expected[0])


def test_error_event_in_the_stream_is_shown_inline(server: UiServer, page: Page) -> None:
    # The model dies at start after the loading-state stream began (HTTP 200):
    # the failure arrives as an SSE `data: {"error": …}` event.
    open_playground(page, server)
    pick(page, "chat", "broken")
    page.get_by_label("Message").fill("hello?")
    page.get_by_label("Message").press("Enter")
    reply = last_reply(page)
    expect(reply.locator(".reasoning-text")).to_contain_text("loading model: broken")
    expect(reply.locator(".error")).to_be_visible()
    expect(reply.locator(".error")).not_to_be_empty()
    expect(reply.locator(".msg-content")).to_have_text("")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()


def test_screenshot(server: UiServer, page: Page) -> None:
    open_playground(page, server)
    pick(page, "chat", "coder")
    page.get_by_label("Message").fill("How do I count to three in Python?")
    page.get_by_label("Message").press("Enter")
    expect(last_reply(page).locator(".msg-meta")).not_to_be_empty()
    page.screenshot(path=screenshot_path("playground"))
