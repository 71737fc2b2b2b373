"""The ``ollama.listen`` listener's lifetime, in process (build_app over a real fake)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import aiohttp
import ollama
import pytest

from modelswap.testing.fake_process import free_port
from tests.integration.server_harness import fake, running_server


def bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_the_listener_opens_with_the_app_and_closes_before_it(tmp_path: Path) -> None:
    port = free_port()
    head = f"ollama:\n  listen: 127.0.0.1:{port}\n"
    async with running_server([fake(tmp_path, "m")], head) as server:
        assert not bindable(port)
        body = {"model": "m", "stream": False}
        async with (
            aiohttp.ClientSession(f"http://127.0.0.1:{port}") as s,
            s.post("/api/chat", json=body) as resp,
        ):
            assert resp.status == 200
            assert (await resp.json())["done_reason"] == "load"
        assert server.router.running_models() == {"m": "ready"}
    assert bindable(port)  # closed with the app


async def test_a_port_in_use_is_logged_and_the_main_listener_serves_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        head = f"ollama:\n  listen: 127.0.0.1:{port}\n"
        with caplog.at_level(logging.ERROR, logger="modelswap.ollama"):
            async with (
                running_server([fake(tmp_path, "m")], head) as server,
                server.session() as s,
                s.get("/ollama/api/tags") as resp,
            ):
                assert resp.status == 200
                assert [m["name"] for m in (await resp.json())["models"]] == ["m:latest"]
    assert any(
        f"cannot listen for the Ollama API on 127.0.0.1:{port}" in m for m in caplog.messages
    )


async def test_without_the_key_there_is_no_listener_and_no_plain_paths(tmp_path: Path) -> None:
    async with running_server([fake(tmp_path, "m")]) as server, server.session() as s:
        async with s.get("/api/tags") as resp:
            assert resp.status == 404
        async with s.get("/ollama/api/tags") as resp:
            assert resp.status == 200


async def test_api_keys_apply_and_a_refusal_is_ollama_shaped(tmp_path: Path) -> None:
    port = free_port()
    head = f"apiKeys: [secret]\nollama:\n  listen: 127.0.0.1:{port}\n"
    async with running_server([fake(tmp_path, "m")], head) as server:
        for url in (f"{server.url}/ollama", f"http://127.0.0.1:{port}"):
            async with aiohttp.ClientSession() as s, s.get(f"{url}/api/tags") as resp:
                assert resp.status == 401
                assert await resp.json() == {"error": "unauthorized: invalid or missing API key"}
            client = ollama.AsyncClient(host=url, headers={"Authorization": "Bearer secret"})
            assert [m.model for m in (await client.list()).models] == ["m:latest"]
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as s, s.get("/") as resp:
            assert await resp.text() == "Ollama is running"  # public, as "/" is on the main one
        async with server.session() as s, s.get("/v1/models") as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["message"]  # the OpenAI envelope elsewhere
