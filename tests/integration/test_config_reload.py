"""Config reload by difference, end to end: the real app, real fake-upstream children.

Each test writes a config file, serves ``build_app`` with that file as its
source, edits the file and reloads (``POST /api/config/reload`` or the
watcher), then checks what the children really did: their pids, their event
logs, the bytes clients received. Waits are on facts (the router's change
notifications, the ``configReload`` event, a pid disappearing), never on time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from modelswap.app import ROUTER_KEY, build_app
from modelswap.observability.events_hub import EVENTS_HUB, EventSubscription
from modelswap.server.context import SERVER_STATE
from modelswap.server.reload import ConfigSource
from modelswap.testing.fake_process import (
    FakeUpstreamProcess,
    fake_upstream_cmd,
    fake_upstream_env,
    pid_alive,
    wait_pid_gone,
)
from tests.integration.proxy_harness import serving
from tests.integration.router_harness import DEADLINE, Fake
from tests.integration.server_harness import (
    Server,
    config_text,
    fake,
    fakes_gone,
    running_server,
    sse_events,
)

pytestmark = pytest.mark.asyncio

SLOW = {"chunks": 30, "chunk_interval": 0.1}
"""A stream that takes about 3 s: long enough to reload while it runs."""


@asynccontextmanager
async def reloadable(
    tmp: Path,
    fakes: list[Fake],
    *,
    together: bool = True,
    watch: bool = False,
    tail: str = "",
) -> AsyncIterator[tuple[Server, Path]]:
    """Serve a config *file* for ``fakes`` (reloads read it again); every child gone after."""
    path = tmp / "config.yaml"
    path.write_text(config_text(fakes, tail=tail, together=together))
    source = ConfigSource(str(path), environ={})
    app = build_app(source.load().config, base_env=fake_upstream_env(), source=source, watch=watch)
    server = Server("", app, {f.model_id: f for f in fakes})
    async with serving(app) as url:
        server.url = url
        yield server, path
    await fakes_gone(fakes)


def edited(f: Fake, **options: Any) -> Fake:
    """The same model, port and event log with a different ``cmd`` (other fake options)."""
    return dataclasses.replace(f, options={**f.options, **options})


async def reload(server: Server) -> tuple[int, dict[str, Any]]:
    async with server.session() as session, session.post("/api/config/reload") as resp:
        return resp.status, await resp.json()


def chat(model: str, *, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


def content(events: list[Any]) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in events
        if isinstance(e, dict) and e.get("choices")
    )


async def read_rest(resp: aiohttp.ClientResponse, first: list[Any]) -> list[Any]:
    return first + await sse_events(resp)


async def first_event(resp: aiohttp.ClientResponse) -> list[Any]:
    """Read up to the first ``data:`` line of a stream (the stream is then in flight)."""
    async for line in resp.content:
        text = line.decode().strip()
        if text.startswith("data: "):
            return [json.loads(text[len("data: ") :])]
    raise AssertionError("the stream ended before its first event")


async def next_reload_event(
    subscription: EventSubscription, before: list[tuple[str, Any]] | None = None
) -> dict[str, Any]:
    """The next ``configReload`` data; other messages on the way are added to ``before``."""
    async for message in subscription:
        envelope = json.loads(message.split(b"data:", 1)[1])
        if envelope["type"] == "configReload":
            return json.loads(envelope["data"])  # type: ignore[no-any-return]
        if before is not None:
            before.append((envelope["type"], json.loads(envelope["data"])))
    raise AssertionError("the events hub closed before a configReload event")


def pid(server: Server, model: str) -> int | None:
    return server.router.processes[model].pid


async def test_stream_on_an_unchanged_model_survives_a_reload(tmp_path: Path) -> None:
    a, b = fake(tmp_path, "a", **SLOW), fake(tmp_path, "b")
    async with reloadable(tmp_path, [a, b]) as (server, path), server.session() as session:
        async with session.post("/v1/chat/completions", json=chat("a", stream=True)) as resp:
            baseline = await sse_events(resp)
        a_pid, a_process = pid(server, "a"), server.router.processes["a"]
        async with session.post("/v1/chat/completions", json=chat("a", stream=True)) as resp:
            events = await first_event(resp)
            c = fake(tmp_path, "c")
            path.write_text(config_text([a, edited(b, response_text="b2"), c]))
            status, body = await reload(server)
            assert status == 200, body
            assert server.router.statistics().in_flight == {"a": 1}  # still streaming
            assert body["summary"]["unchanged"] == ["a"]
            assert body["summary"]["changed"] == ["b"]
            assert body["summary"]["added"] == ["c"]
            async with session.get("/v1/models") as listing:  # added: listed at once
                assert "c" in [m["id"] for m in (await listing.json())["data"]]
            events = await read_rest(resp, events)
        assert len(events) == len(baseline) and events[-1] == "[DONE]"  # every chunk
        assert content(events) == content(baseline) == "Hello from a"
        assert server.router.processes["a"] is a_process and pid(server, "a") == a_pid
        assert a.starts == 1
        async with session.post("/v1/chat/completions", json=chat("c")) as resp:  # on demand
            assert resp.status == 200
            assert (await resp.json())["choices"][0]["message"]["content"] == "Hello from c"
        assert pid(server, "a") == a_pid


async def test_changed_cmd_restarts_only_that_model_after_its_stream(tmp_path: Path) -> None:
    a, b = fake(tmp_path, "a"), fake(tmp_path, "b", response_text="old", **SLOW)
    async with reloadable(tmp_path, [a, b]) as (server, path), server.session() as session:
        for model in ("a", "b"):
            async with session.post("/v1/chat/completions", json=chat(model)) as resp:
                assert resp.status == 200
        a_pid, old_b = pid(server, "a"), pid(server, "b")
        assert old_b is not None
        async with session.post("/v1/chat/completions", json=chat("b", stream=True)) as resp:
            events = await first_event(resp)
            path.write_text(config_text([a, edited(b, response_text="new")]))
            status, body = await reload(server)
            assert status == 200 and body["summary"]["changed"] == ["b"], body
            assert body["summary"]["unchanged"] == ["a"]
            # A request after the reload waits for the new definition...
            later = asyncio.ensure_future(session.post("/v1/chat/completions", json=chat("b")))
            await server.until(lambda s: any(model == "b" for _, model in s.queue))
            assert pid_alive(old_b) and not later.done()  # ...the old one still streams
            events = await read_rest(resp, events)
        assert content(events) == "old" and events[-1] == "[DONE]"
        answer = await later
        assert answer.status == 200
        assert (await answer.json())["choices"][0]["message"]["content"] == "new"
        answer.release()
        await wait_pid_gone(old_b, timeout=DEADLINE)
        assert pid(server, "b") not in (None, old_b)
        assert b.starts == 2
        assert pid(server, "a") == a_pid and a.starts == 1  # only b restarted


async def test_broken_yaml_is_refused_with_its_line_and_nothing_changes(tmp_path: Path) -> None:
    a = fake(tmp_path, "a")
    async with reloadable(tmp_path, [a]) as (server, path), server.session() as session:
        async with session.post("/v1/chat/completions", json=chat("a")) as resp:
            assert resp.status == 200
        a_pid, config = pid(server, "a"), server.state.config
        good = path.read_text()
        assert good.endswith("\n")
        broken_line = len(good.splitlines()) + 1
        path.write_text(good + "oops: a: b\n")  # "mapping values are not allowed here"
        with server.app[EVENTS_HUB].subscribe() as subscription:
            status, body = await reload(server)
            published = await next_reload_event(subscription)
        assert status == 422, body
        problem = body["error"]["problems"][0]
        assert problem["file"] == str(path)
        assert problem["line"] == broken_line
        assert str(path) in body["error"]["message"]
        assert body["error"]["code"] == "invalid_config"
        assert published["ok"] is False and published["problems"] == body["error"]["problems"]
        assert server.state.config is config and pid(server, "a") == a_pid
        # An unset ${env.X} is refused the same way, naming the variable.
        path.write_text(good.replace("healthCheckTimeout: 15", "healthCheckTimeout: ${env.NOPE}"))
        status, body = await reload(server)
        assert status == 422 and "NOPE" in body["error"]["message"], body
        assert body["error"]["problems"][0]["line"] == 1
        assert server.state.config is config and pid(server, "a") == a_pid and a.starts == 1


async def test_invalid_config_names_file_line_and_key(tmp_path: Path) -> None:
    a = fake(tmp_path, "a")
    async with reloadable(tmp_path, [a]) as (server, path):
        text = path.read_text().replace("unloadTimeout: 2", "concurrencyLimit: many")
        path.write_text(text)
        line = text.splitlines().index("    concurrencyLimit: many") + 1
        status, body = await reload(server)
        assert status == 422, body
        problem = body["error"]["problems"][0]
        assert problem["file"] == str(path) and problem["line"] == line
        assert problem["key"] == "models.a.concurrencyLimit"
        # An unknown macro is refused the same way (macros are expanded before anything).
        path.write_text(text.replace("concurrencyLimit: many", "name: ${no_such_macro}"))
        status, body = await reload(server)
        assert status == 422 and "no_such_macro" in body["error"]["message"], body
        assert body["error"]["problems"][0]["file"] == str(path)


async def test_keys_aliases_and_profiles_switch_with_the_reload(tmp_path: Path) -> None:
    a = fake(tmp_path, "a", settings={"aliases": ["old-name"], "ttl": 300})
    head = "apiKeys: [first]\nprofiles:\n  p:\n    pins: {pinned: old-name}\n"
    async with reloadable(tmp_path, [a], tail=head) as (server, path):
        first, second = {"Authorization": "Bearer first"}, {"Authorization": "Bearer second"}
        async with aiohttp.ClientSession(server.url) as session:
            async with session.post("/api/config/reload") as resp:
                assert resp.status == 401  # protected like every /api route
            async with session.put(
                "/api/profiles/active", json={"name": "p"}, headers=first
            ) as resp:
                assert resp.status == 200
            async with session.post(
                "/v1/chat/completions", json=chat("old-name"), headers=first
            ) as resp:
                assert resp.status == 200
            process = server.router.processes["a"]
            last_use = process.last_use
            renamed = edited(a)
            renamed.settings = {
                **a.settings,
                "aliases": ["new-name"],
                "useModelName": "upstream-name",
                "filters": {"setParams": {"max_tokens": 7}},
            }
            new_head = (
                "apiKeys: [second]\nlogLevel: debug\n"
                "profiles:\n  p:\n    pins: {pinned: new-name}\n"
            )
            path.write_text(config_text([renamed], tail=new_head))
            async with session.post("/api/config/reload", headers=first) as resp:
                assert resp.status == 200
                body = await resp.json()
            assert body["summary"]["updated"] == ["a"], body  # aliases: no restart
            # Same process, and its TTL clock was not reset by the reload.
            assert server.router.processes["a"] is process and process.last_use == last_use
            assert body["summary"]["sections"] == ["apiKeys", "profiles"]
            assert body["warnings"] == ["logLevel changed: it takes effect only after a restart"]
            async with session.get("/v1/models", headers=first) as resp:
                assert resp.status == 401  # the old key stopped working at once
            for name, status in (("old-name", 404), ("new-name", 200), ("pinned", 200)):
                async with session.post(
                    "/v1/chat/completions", json=chat(name), headers=second
                ) as resp:
                    assert resp.status == status, name
                    if status == 200:  # useModelName and filters apply to the same process
                        assert resp.headers["X-Fake-Received-Model"] == "upstream-name"
                        assert (await resp.json())["received"]["max_tokens"] == 7
            async with session.get("/api/profiles", headers=second) as resp:
                assert (await resp.json())["active"] == "p"  # still active, new pins
        assert server.router.processes["a"] is process and a.starts == 1


async def test_an_app_without_a_config_file_has_nothing_to_reload(tmp_path: Path) -> None:
    async with running_server([fake(tmp_path, "a")]) as server:
        status, body = await reload(server)
    assert status == 409 and body["error"]["code"] == "conflict", body
    assert "nothing to reload" in body["error"]["message"]


async def test_a_changed_tls_file_is_reported_as_needing_a_restart(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("one")
    path = tmp_path / "config.yaml"
    path.write_text(config_text([fake(tmp_path, "a")]))
    source = ConfigSource(str(path), environ={}, restart_files={"tls-cert-file": str(cert)})
    app = build_app(source.load().config, base_env=fake_upstream_env(), source=source)
    async with serving(app) as url:
        server = Server(url, app, {})
        status, body = await reload(server)
        assert status == 200 and body["warnings"] == [] and body["summary"]["changed"] == []
        cert.write_text("two")
        status, body = await reload(server)
        assert status == 200
        assert body["warnings"] == ["tls-cert-file changed: it takes effect only after a restart"]


async def test_peers_and_selectors_switch_with_the_reload(tmp_path: Path) -> None:
    a = fake(tmp_path, "a")
    with FakeUpstreamProcess("remote-model", response_text="from the peer") as peer:
        async with reloadable(tmp_path, [a]) as (server, path), server.session() as session:
            for name in ("remote-model", "pick"):
                async with session.post("/v1/chat/completions", json=chat(name)) as resp:
                    assert resp.status == 404, name  # no such peer or selector yet
            path.write_text(
                config_text([a])
                + f"peers:\n  box:\n    proxy: {peer.url}\n    models: [remote-model]\n"
                + "selectors:\n  pick:\n    strategy: pin\n    targets: [remote-model]\n"
            )
            status, body = await reload(server)
            assert status == 200 and body["summary"]["sections"] == ["peers", "selectors"]
            for name in ("remote-model", "pick"):
                async with session.post("/v1/chat/completions", json=chat(name)) as resp:
                    assert resp.status == 200, name
                    answer = await resp.json()
                    assert answer["choices"][0]["message"]["content"] == "from the peer"
            assert a.starts == 0  # the local model was never needed


async def test_removed_model_finishes_its_request_then_stops(tmp_path: Path) -> None:
    a, b = fake(tmp_path, "a", **SLOW), fake(tmp_path, "b")
    async with reloadable(tmp_path, [a, b]) as (server, path), server.session() as session:
        async with session.post("/v1/chat/completions", json=chat("a", stream=True)) as resp:
            events = await first_event(resp)
            a_pid = pid(server, "a")
            assert a_pid is not None
            path.write_text(config_text([b]))
            status, body = await reload(server)
            assert status == 200 and body["summary"]["removed"] == ["a"], body
            async with session.post("/v1/chat/completions", json=chat("a")) as refused:
                assert refused.status == 404
            async with session.get("/v1/models") as listing:
                assert "a" not in [m["id"] for m in (await listing.json())["data"]]
            assert pid_alive(a_pid)  # still serving its stream
            async with session.get("/running") as running:
                assert [m["model"] for m in (await running.json())["running"]] == ["a"]
            events = await read_rest(resp, events)
        assert content(events) == "Hello from a" and events[-1] == "[DONE]"
        await wait_pid_gone(a_pid, timeout=DEADLINE)
        await server.until(lambda s: "a" not in s.processes)


async def test_a_request_waiting_for_a_load_is_served_when_its_model_is_removed(
    tmp_path: Path,
) -> None:
    a, b = fake(tmp_path, "a", startup_delay=1.0), fake(tmp_path, "b")
    async with reloadable(tmp_path, [a, b]) as (server, path), server.session() as session:
        waiting = asyncio.ensure_future(session.post("/v1/chat/completions", json=chat("a")))
        await server.until(lambda s: s.state("a") == "starting")
        path.write_text(config_text([b]))
        status, body = await reload(server)
        assert status == 200 and body["summary"]["removed"] == ["a"], body
        answer = await waiting  # admitted before the reload: its load finishes and serves it
        assert answer.status == 200
        assert (await answer.json())["choices"][0]["message"]["content"] == "Hello from a"
        answer.release()
        await server.until(lambda s: "a" not in s.processes)
        assert a.starts == 1


async def test_requests_queued_before_a_reload_keep_their_order(tmp_path: Path) -> None:
    """The reload gives c a higher priority; b1 and c1, queued before it, keep FIFO order."""
    a, b, c = fake(tmp_path, "a", **SLOW), fake(tmp_path, "b"), fake(tmp_path, "c")
    one_at_a_time = "groups:\n  all:\n    members: [a, b, c]\n"
    async with reloadable(tmp_path, [a, b, c], together=False, tail=one_at_a_time) as (
        server,
        path,
    ):
        async with server.session() as session:
            async with session.post("/v1/chat/completions", json=chat("a", stream=True)) as resp:
                events = await first_event(resp)
                b1 = asyncio.ensure_future(session.post("/v1/chat/completions", json=chat("b")))
                await server.until(lambda s: len(s.queue) == 1)
                c1 = asyncio.ensure_future(session.post("/v1/chat/completions", json=chat("c")))
                await server.until(lambda s: len(s.queue) == 2)
                priority = "routing:\n  scheduler:\n    settings:\n      fifo:\n"
                priority += "        priority: {c: 10}\n"
                path.write_text(
                    config_text([a, b, c], tail=one_at_a_time + priority, together=False)
                )
                status, body = await reload(server)
                assert status == 200 and body["summary"]["sections"] == ["priority"], body
                assert [m for _, m in server.router.statistics().queue] == ["b", "c"]
                await read_rest(resp, events)
            for answer in await asyncio.gather(b1, c1):
                assert answer.status == 200
                answer.release()
        assert b.events("request")[0]["t"] < c.events("request")[0]["t"]


async def test_twenty_reloads_during_500_requests_with_swaps_lose_nothing(
    tmp_path: Path,
) -> None:
    a, b, c = fake(tmp_path, "a"), fake(tmp_path, "b"), fake(tmp_path, "c")
    routing = (
        "groups:\n  pair:\n    members: [a, b]\n  solo:\n    exclusive: false\n    members: [c]\n"
    )
    total, reloads = 500, 20
    async with reloadable(tmp_path, [a, b, c], together=False, tail=routing) as (server, path):
        done: list[int] = []
        outcomes: list[tuple[str, int, str]] = []
        reloaded = asyncio.Event()

        async def client(worker: int, session: aiohttp.ClientSession) -> None:
            for i in range(worker, total, 10):
                model = "abc"[(i // 7) % 3]
                async with session.post("/v1/chat/completions", json=chat(model)) as resp:
                    text = (await resp.json())["choices"][0]["message"]["content"]
                    outcomes.append((model, resp.status, text))
                done.append(i)
                if len(done) % (total // reloads) == 0:
                    reloaded.set()

        async def reloader() -> list[dict[str, Any]]:
            bodies = []
            for n in range(reloads):
                await reloaded.wait()
                reloaded.clear()
                variant = [a, b, edited(c, response_text=f"c{n}") if n % 2 else c]
                extra = "\n  d:\n    cmd: sleep 1\n    proxy: http://127.0.0.1:1\n" if n % 3 else ""
                head = f"# reload {n}\n" + ("includeAliasesInList: true\n" if n % 4 else "")
                text = config_text(variant, head, routing, together=False)
                path.write_text(text.replace("models:\n", "models:" + extra + "\n", 1))
                status, body = await reload(server)
                assert status == 200, body
                bodies.append(body)
            return bodies

        async with server.session() as session:
            async with asyncio.timeout(120):
                results = await asyncio.gather(reloader(), *(client(w, session) for w in range(10)))
        bodies = results[0]
        assert isinstance(bodies, list) and len(bodies) == reloads
        assert len(outcomes) == total
        assert all(status == 200 for _, status, _ in outcomes), outcomes
        for model, _, text in outcomes:
            assert text == f"Hello from {model}" or (model == "c" and text.startswith("c"))
        assert any(body["summary"]["changed"] == ["c"] for body in bodies)
        stats = await server.idle()
        assert stats.in_flight == {} and stats.reservations == {} and stats.tickets == 0
        assert a.starts > 1 and b.starts > 1  # there were swaps
        served = sum(len(f.events("request_done")) for f in (a, b, c))
        assert served == total  # each request reached an upstream exactly once


async def test_the_watcher_picks_up_an_edit_within_one_second(tmp_path: Path) -> None:
    a = fake(tmp_path, "a")
    async with reloadable(tmp_path, [a], watch=True) as (server, path):
        with server.app[EVENTS_HUB].subscribe() as subscription:
            b = fake(tmp_path, "b")
            started = time.monotonic()
            path.write_text(config_text([a, b]))
            seen: list[tuple[str, Any]] = []
            async with asyncio.timeout(1.0):
                published = await next_reload_event(subscription, seen)
            delay = time.monotonic() - started
        assert published["ok"] is True and published["trigger"] == "watch"
        assert published["summary"]["added"] == ["b"]
        assert delay < 1.0
        print(f"watcher delay: {delay * 1000:.0f} ms")
        assert "b" in server.state.config.models
        # UIs learn the new model list at once, not at the next process state change.
        statuses = [data for kind, data in seen if kind == "modelStatus"]
        assert statuses and [m["id"] for m in statuses[-1]] == ["a", "b"]


def _free_port_run(count: int) -> int:
    """A base port with ``count`` consecutive ports free on loopback (for ``startPort``)."""
    import socket

    for base in range(41000, 60000, 97):
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no run of free ports")


async def test_adding_a_model_that_sorts_first_keeps_the_others_ports_and_processes(
    tmp_path: Path,
) -> None:
    """${PORT}s stay with their models across a reload: nothing else restarts."""
    base = _free_port_run(3)

    def text(models: list[str]) -> str:
        lines = [f"startPort: {base}", "healthCheckTimeout: 30", "models:"]
        for model in models:
            cmd = fake_upstream_cmd("${PORT}", model)
            lines += [f"  {model}:", f"    cmd: {json.dumps(cmd)}"]
            lines.append('    proxy: "http://127.0.0.1:${PORT}"')
        return "\n".join(lines) + "\n"

    path = tmp_path / "config.yaml"
    path.write_text(text(["b", "c"]))
    source = ConfigSource(str(path), environ={})
    loaded = source.load()
    source = dataclasses.replace(source, ports=loaded.ports)  # as run_server does
    app = build_app(loaded.config, base_env=fake_upstream_env(), source=source)
    router = app[ROUTER_KEY]
    async with serving(app) as url, aiohttp.ClientSession(url) as session:
        pids = {}
        for model in ("b", "c"):  # one at a time (the default group): c evicts b
            async with session.post("/v1/chat/completions", json=chat(model)) as resp:
                assert resp.status == 200
            pids[model] = router.processes[model].pid
        path.write_text(text(["a", "b", "c"]))
        async with session.post("/api/config/reload") as resp:
            body = await resp.json()
        assert resp.status == 200, body
        assert body["summary"]["added"] == ["a"]
        assert body["summary"]["unchanged"] == ["b", "c"]  # same cmd: same port
        assert router.processes["c"].pid == pids["c"]  # the last one loaded is still running
        async with session.post("/v1/chat/completions", json=chat("a")) as resp:
            assert resp.status == 200  # a took the next free port, base + 2
            assert (await resp.json())["choices"][0]["message"]["content"] == "Hello from a"
        assert f"--port '{base + 2}'" in app[SERVER_STATE].config.models["a"].cmd
        await router.wait_idle()
    for model_pid in pids.values():
        assert model_pid is not None
        await wait_pid_gone(model_pid)
