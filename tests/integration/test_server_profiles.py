"""Profiles and selectors through the real app (server spec §7, §8; scenarios 38–54)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from modelswap.app import ACCESS_LOG_KEY
from modelswap.server.access_log import AccessRecord
from modelswap.testing.fake_process import FakeUpstreamProcess
from tests.integration.router_harness import DEADLINE
from tests.integration.server_harness import Server, fake, running_server

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
JSON_TYPE = {"Content-Type": "application/json"}
HOLD = {"chunks": 30, "chunk_interval": 0.1}
"""Streams last ~3 s upstream, so a test can hold one open while it asks for more."""

SELECTORS = """
profiles:
  coding:
    description: Coding
    pins: {public: variant, disabled: "", llm-code: sel-pin, expose: a}
  other:
    pins: {x: a}
  paths:
    pins: {public: a, author: b, author/public: c, "off": ""}
  shadow:
    pins: {real: a}
selectors:
  sel-pin:
    strategy: pin
    targets: [variant, a]
    name: Public
    description: Pinned to the variant
    metadata: {purpose: demo}
  pin-ab: {strategy: pin, targets: [a, b]}
  secret-sel: {strategy: pin, targets: [a], unlisted: true}
  warm: {strategy: warm, targets: [a, b, c]}
  balanced: {strategy: spillover, settings: {spillover: 1}, targets: [a, b, c]}
  spill2: {strategy: spillover, settings: {spillover: 2}, targets: [a, b, c]}
  remote-spill: {strategy: spillover, settings: {spillover: 1}, targets: [remote/x, remote/y]}
"""
PEERS = """
peers:
  remote:
    proxy: {url}
    models: [x, y]
"""


@pytest.fixture(scope="module")
def peer_fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeUpstreamProcess]:
    log = tmp_path_factory.mktemp("peer") / "events.jsonl"
    with FakeUpstreamProcess("remote-fake", event_log=log, **HOLD) as process:
        yield process


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(
    tmp_path_factory: pytest.TempPathFactory, peer_fake: FakeUpstreamProcess
) -> AsyncIterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("profiles")
    fakes = [
        fake(tmp, "a", **HOLD),
        fake(tmp, "b", **HOLD),
        fake(tmp, "c", **HOLD),
        fake(
            tmp,
            "real",
            settings={
                "name": "Real model",
                "filters": {"setParamsByID": {"variant": {"thinking": True}}},
            },
        ),
    ]
    tail = SELECTORS + PEERS.replace("{url}", peer_fake.url)
    hidden = fake(tmp, "hidden", settings={"unlisted": True})
    async with running_server(fakes, tail=tail, extra_models=hidden.yaml()) as running:
        yield running


async def chat(server: Server, model: str) -> dict[str, Any]:
    async with (
        server.session() as s,
        s.post("/v1/chat/completions", json={"model": model, **CHAT}) as resp,
    ):
        text = await resp.text()
        assert resp.status == 200, text
        result: dict[str, Any] = json.loads(text)
        return result


async def put_profile(server: Server, body: Any) -> tuple[int, Any]:
    async with server.session() as s, s.put("/api/profiles/active", data=json.dumps(body)) as resp:
        return resp.status, await resp.json()


class Held:
    """Streams held open mid-response, closed together at the end."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.stack = AsyncExitStack()
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Held:
        self.session = await self.stack.enter_async_context(self.server.session())
        return self

    async def open(self, model: str) -> str:
        """Start a stream and return the model that answered its first event."""
        return str((await self.open_event(model))["model_id"])

    async def open_event(self, model: str) -> dict[str, Any]:
        """Start a stream and return its first event (who served it, what it received)."""
        assert self.session is not None
        body = {"model": model, "stream": True, **CHAT}
        resp = await self.stack.enter_async_context(
            self.session.post("/v1/chat/completions", json=body)
        )
        assert resp.status == 200
        first: dict[str, Any] = json.loads(
            (await resp.content.readline()).decode().removeprefix("data: ")
        )
        return first

    async def __aexit__(self, *exc: object) -> None:
        await self.stack.aclose()
        await self.server.idle()


async def test_s24_38_profile_api(server: Server) -> None:
    async with server.session() as s, s.get("/api/profiles") as resp:
        view = await resp.json()
    assert view["active"] is None
    coding = next(p for p in view["profiles"] if p["id"] == "coding")
    assert coding["pins"]["disabled"] == "" and coding["description"] == "Coding"
    assert await put_profile(server, {"name": "coding"}) == (200, {"active": "coding"})
    status, body = await put_profile(server, {"name": "missing"})
    assert status == 404 and body["error"]["message"] == 'profile "missing" not found'
    assert server.state.profiles.active == "coding"
    for bad, message in [
        ([], "invalid profile request"),
        ({}, "profile name is required"),
        ({"name": 3}, "profile name must be a string or null"),
    ]:
        status, body = await put_profile(server, bad)
        assert status == 400 and body["error"]["message"] == message
    assert await put_profile(server, {"name": None}) == (200, {"active": None})


async def test_s24_39_50_pins_rewrite_routing_and_body(server: Server) -> None:
    await put_profile(server, {"name": "coding"})
    try:
        body = await chat(server, "public")
        assert body["model_id"] == "real" and body["received_model"] == "variant"
        assert body["received"]["thinking"] is True
        body = await chat(server, "llm-code")  # pin → selector → variant
        assert body["model_id"] == "real" and body["received_model"] == "variant"
        async with (
            server.session() as s,
            s.post("/v1/chat/completions", json={"model": "disabled", **CHAT}) as resp,
        ):
            assert resp.status == 404
            assert (await resp.json())["error"]["message"] == "no model id could be identified"
    finally:
        await put_profile(server, {"name": None})


async def test_s24_40_profile_on_upstream_leaves_the_body_alone(server: Server) -> None:
    await put_profile(server, {"name": "coding"})
    try:
        raw = b'{"model": "public",  "keep": "my formatting"}'
        async with server.session() as s, s.post("/upstream/public/custom", data=raw) as resp:
            assert resp.status == 200
            echoed = await resp.json()
        assert echoed["model_id"] == "real"  # public → variant, an alias of real
        assert echoed["body"] == raw.decode() and echoed["path"] == "/custom"
    finally:
        await put_profile(server, {"name": None})


async def test_s24_42_profile_pin_on_upstream_chat_path(server: Server) -> None:
    """Routing half of scenario 42 (its activity row is an observability scenario)."""
    await put_profile(server, {"name": "paths"})  # public → a
    try:
        raw = json.dumps({"model": "public", **CHAT}).encode()
        async with (
            server.session() as s,
            s.post("/upstream/public/v1/chat/completions", data=raw, headers=JSON_TYPE) as resp,
        ):
            assert resp.status == 200
            echoed = await resp.json()
        assert echoed["model_id"] == "a"
        assert server.fakes["a"].events("request")[-1]["path"] == "/v1/chat/completions"
        assert echoed["received_model"] == "public"  # /upstream never rewrites the body
    finally:
        await put_profile(server, {"name": None})


async def test_s24_43_listing_with_an_active_profile(server: Server) -> None:
    """The listing half of scenario 43 (``modelStatus`` is an ``/api/events`` payload)."""
    await put_profile(server, {"name": "coding"})
    try:
        async with server.session() as s, s.get("/v1/models") as resp:
            records = {m["id"]: m for m in (await resp.json())["data"]}
    finally:
        await put_profile(server, {"name": None})
    for pin in ("public", "expose"):
        assert records[pin]["meta"]["llamaswap"] == {"type": "profile"}
        assert "name" not in records[pin]
    assert "disabled" not in records and "hidden" not in records
    assert records["real"]["name"] == "Real model"
    assert records["remote/x"]["name"] == "remote: x"
    async with server.session() as s, s.get("/v1/models") as resp:
        assert "public" not in {m["id"] for m in (await resp.json())["data"]}


async def test_s24_49_selector_over_a_variant(server: Server) -> None:
    """Routing half of scenario 49 (its activity metadata is an observability scenario)."""
    body = await chat(server, "sel-pin")  # pin → variant, an alias of real
    assert body["model_id"] == "real" and body["received_model"] == "variant"
    assert body["received"]["thinking"] is True  # setParamsByID[variant]


async def test_s24_54_selectors_in_the_listing(server: Server) -> None:
    async def listed() -> dict[str, Any]:
        async with server.session() as s, s.get("/v1/models") as resp:
            return {m["id"]: m for m in (await resp.json())["data"]}

    await server.unload_all()
    await chat(server, "real")
    records = await listed()
    pinned = records["sel-pin"]
    assert pinned["name"] == "Public" and pinned["description"] == "Pinned to the variant"
    assert pinned["status"] == {"value": "loaded"}  # its first target is up
    assert pinned["meta"]["llamaswap"] == {
        "purpose": "demo",
        "type": "selector",
        "strategy": "pin",
        "targets": ["variant", "a"],
    }
    assert records["balanced"]["meta"]["llamaswap"]["spillover"] == 1
    assert "secret-sel" not in records  # unlisted
    await chat(server, "b")
    assert records["pin-ab"]["status"] == {"value": "unloaded"}  # only b, not a, is ready
    assert (await listed())["pin-ab"]["status"] == {"value": "unloaded"}
    await server.unload_all()


async def test_s24_46_pin_and_warm_selectors(server: Server) -> None:
    body = await chat(server, "sel-pin")
    assert body["model_id"] == "real" and body["received_model"] == "variant"
    await server.unload_all()
    assert (await chat(server, "warm"))["model_id"] == "a"  # nothing warm: first target
    await server.unload_all()
    await chat(server, "b")
    assert (await chat(server, "warm"))["model_id"] == "b"  # the ready one


async def test_s24_47_spillover_fills_then_spills_to_cold(server: Server) -> None:
    await server.unload_all()
    async with Held(server) as held:
        assert [await held.open("spill2") for _ in range(3)] == ["a", "a", "b"]
    assert server.state.selectors.reservations("spill2") == {}


async def test_s24_51_concurrent_spillover_requests_spread(server: Server) -> None:
    for model in ("a", "b", "c"):
        await chat(server, model)
    async with Held(server) as held:
        first, second = await held.open("balanced"), await held.open("balanced")
    assert first != second
    assert server.state.selectors.reservations("balanced") == {}


async def test_s24_53_selector_is_not_an_upstream_model(server: Server) -> None:
    async with server.session() as s, s.get("/upstream/balanced/v1/models") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["message"] == "model not found"


async def test_s24_45_profile_switching_while_listing(server: Server) -> None:
    async def listing() -> int:
        async with server.session() as s, s.get("/v1/models") as resp:
            await resp.read()
            return resp.status

    async def switch(name: str | None) -> int:
        return (await put_profile(server, {"name": name}))[0]

    calls = [switch("coding" if i % 2 else None) for i in range(10)]
    calls += [listing() for _ in range(10)]
    assert set(await asyncio.gather(*calls)) == {200}
    await put_profile(server, {"name": None})


async def test_s24_41_upstream_paths_follow_the_longest_pin(server: Server) -> None:
    await put_profile(server, {"name": "paths"})
    try:
        async with server.session() as s:
            routed = {}
            for path in ("public/v1/x", "author/public/v1/x", "author/v1/x", "c/v1/x"):
                async with s.post(f"/upstream/{path}", data=b"raw") as resp:
                    echoed = await resp.json()
                routed[path] = (echoed["model_id"], echoed["path"], echoed["body"])
            assert routed == {
                "public/v1/x": ("a", "/v1/x", "raw"),  # public → a
                "author/public/v1/x": ("c", "/v1/x", "raw"),  # the longer pin wins
                "author/v1/x": ("b", "/v1/x", "raw"),
                "c/v1/x": ("c", "/v1/x", "raw"),  # not pinned: unchanged
            }
            async with s.get("/upstream/off/v1/x") as resp:  # disabled: path /upstream/
                assert resp.status == 404
                assert (await resp.json())["error"]["message"] == "model not found"
    finally:
        await put_profile(server, {"name": None})


async def test_s24_44_unload_by_id_ignores_profile_pins(server: Server) -> None:
    await chat(server, "real")
    await chat(server, "a")
    await put_profile(server, {"name": "shadow"})  # real → a
    try:
        async with server.session() as s, s.post("/api/models/unload/real") as resp:
            assert resp.status == 200
        running = server.router.running_models()
        assert "real" not in running and running.get("a") == "ready"
    finally:
        await put_profile(server, {"name": None})


async def test_s24_48_spillover_over_peer_targets(server: Server) -> None:
    ended: asyncio.Queue[str] = asyncio.Queue()

    def observer(record: AccessRecord) -> None:  # after the handler's finally: released
        ended.put_nowait(record.path)

    server.app[ACCESS_LOG_KEY].observers.append(observer)
    try:
        async with Held(server) as held:
            first = await held.open_event("remote-spill")
            assert server.state.selectors.reservations("remote-spill") == {"remote/x": 1}
            second = await held.open_event("remote-spill")
            assert server.state.selectors.reservations("remote-spill") == {
                "remote/x": 1,
                "remote/y": 1,
            }
        async with asyncio.timeout(DEADLINE):
            assert [await ended.get(), await ended.get()] == ["/v1/chat/completions"] * 2
    finally:
        server.app[ACCESS_LOG_KEY].observers.remove(observer)
    assert (first["model_id"], first["received_model"]) == ("remote-fake", "x")
    assert second["received_model"] == "y"  # remote/x full (S=1): the next, cold, peer target
    assert server.state.selectors.reservations("remote-spill") == {}
    body = await chat(server, "remote-spill")  # both released: back to the first
    assert body["received_model"] == "x"
    assert server.state.selectors.reservations("remote-spill") == {}
