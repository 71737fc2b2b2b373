"""``GET /v1/models`` through the real app (server spec §12; §24 scenarios 20–24).

The records' rendering is unit-tested in ``tests/unit/test_listing.py``; here
the same scenarios go through ``build_app`` with a model the router really
started, so the ``loaded`` status comes from live process state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.integration.server_harness import Server, fake, running_server

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

HEAD = "includeAliasesInList: true\n"
TAIL = """
peers:
  cuda:
    proxy: http://127.0.0.1:9
    models: [shared]
  strix:
    proxy: http://127.0.0.1:9
    models: [shared]
"""
FULL = {"in": ["text", "image"], "out": ["text", "audio"], "tools": True, "context": 100000}
RENDERED_KEYS = {"architecture": "x", "capabilities": "y", "context_length": 5, "custom": "kept"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("listing")
    fakes = [
        fake(tmp, "shared"),
        fake(tmp, "real", settings={"aliases": ["nick"]}),
        fake(tmp, "other"),
        fake(tmp, "full", settings={"capabilities": FULL, "metadata": RENDERED_KEYS}),
        fake(tmp, "in-only", settings={"capabilities": {"in": ["text", "image"]}}),
        fake(tmp, "speaker", settings={"capabilities": {"out": ["audio"]}}),
        fake(tmp, "tools-only", settings={"capabilities": {"tools": True}}),
        fake(tmp, "ranker", settings={"capabilities": {"reranker": True}}),
        fake(tmp, "ctx", settings={"capabilities": {"context": 4096}}),
        fake(tmp, "stt", settings={"capabilities": {"in": ["audio"], "out": ["text"]}}),
        fake(tmp, "painter", settings={"capabilities": {"in": ["text"], "out": ["image"]}}),
        fake(tmp, "editor", settings={"capabilities": {"in": ["image"], "out": ["image"]}}),
        fake(tmp, "plain", settings={"metadata": RENDERED_KEYS}),
    ]
    async with running_server(fakes, HEAD, TAIL) as running:
        yield running


async def listing(server: Server) -> dict[str, dict[str, Any]]:
    async with server.session() as s, s.get("/v1/models") as resp:
        assert resp.status == 200
        return {record["id"]: record for record in (await resp.json())["data"]}


async def test_s24_20_same_model_on_local_and_two_peers(server: Server) -> None:
    ids = [i for i in await listing(server) if i.endswith("shared")]
    assert ids == ["cuda/shared", "shared", "strix/shared"]  # bare peer names never listed


async def test_s24_21_22_aliases_listed_and_loaded_with_their_model(server: Server) -> None:
    records = await listing(server)
    assert records["nick"]["meta"]["llamaswap"] == {"type": "alias", "modelID": "real"}
    assert records["real"]["meta"]["llamaswap"] == {"type": "model", "aliases": ["nick"]}
    assert {records[i]["status"]["value"] for i in ("real", "nick")} == {"unloaded"}
    body = {"model": "nick", "messages": [{"role": "user", "content": "hi"}]}
    async with server.session() as s, s.post("/v1/chat/completions", json=body) as resp:
        assert resp.status == 200
    status = {i: r["status"]["value"] for i, r in (await listing(server)).items()}
    assert status["real"] == status["nick"] == "loaded"
    assert status["other"] == status["cuda/shared"] == "unloaded"
    await server.unload_all()


async def test_s24_23_capabilities_rendering(server: Server) -> None:
    records = await listing(server)
    full = records["full"]
    assert full["architecture"] == {
        "input_modalities": ["text", "image"],
        "output_modalities": ["text", "audio"],
        "modality": "text+image->text+audio",
    }
    assert full["capabilities"] == {
        "vision": True,
        "audio_speech": True,
        "function_calling": True,
    }
    assert full["supported_parameters"] == ["tools", "tool_choice"]
    assert full["context_length"] == 100000
    assert records["in-only"]["architecture"] == {"input_modalities": ["text", "image"]}
    assert "capabilities" not in records["speaker"]
    assert records["speaker"]["architecture"] == {"output_modalities": ["audio"]}
    assert "architecture" not in records["tools-only"]
    assert records["tools-only"]["capabilities"] == {"function_calling": True}
    assert records["ranker"]["capabilities"] == {"reranker": True}
    assert records["ctx"]["context_length"] == 4096
    assert records["stt"]["capabilities"] == {"audio_transcriptions": True}
    assert records["painter"]["capabilities"] == {"image_generation": True}
    assert records["editor"]["capabilities"] == {"vision": True, "image_to_image": True}
    optional = {"architecture", "capabilities", "supported_parameters", "context_length"}
    assert not optional & set(records["other"])


async def test_s24_24_rendered_keys_leave_metadata_only_with_capabilities(server: Server) -> None:
    records = await listing(server)
    assert records["full"]["meta"]["llamaswap"] == {"custom": "kept", "type": "model"}
    assert records["plain"]["meta"]["llamaswap"] == {**RENDERED_KEYS, "type": "model"}
