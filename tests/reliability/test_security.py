"""Security properties, each proved against the running program rather than read from code.

* API keys go through ``hmac.compare_digest`` against every configured key,
  whatever the offered key's length (observed with ``sys.setprofile``, so
  nothing is patched), and never appear in logs, responses or upstream requests;
* ``/upstream`` reaches only the model's own upstream, whatever the path;
* ``cmd`` is never run through a shell;
* with ``apiKeys`` set, every route but the documented public ones is a 401.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import re
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from modelswap.app import build_app
from modelswap.config import load_config_text
from modelswap.server.auth import is_protected, key_accepted
from modelswap.testing.fake_process import fake_upstream_env, free_port
from tests.integration.proxy_harness import serving
from tests.reliability.fuzz_strategies import PATH_TRICKS
from tests.reliability.harness import models_yaml, modelswap_process, raw_request

KEYS = ["k3y", "sk-" + "a" * 29, "z" * 100]
"""Three lengths, so a length check could not short-cut any comparison."""


def compare_digest_calls(action: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``action`` and count the C calls to ``hmac.compare_digest`` it makes."""
    calls = 0

    def profiler(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        if event == "c_call" and arg is hmac.compare_digest:
            calls += 1

    sys.setprofile(profiler)
    try:
        result = action()
    finally:
        sys.setprofile(None)
    return result, calls


def test_every_key_is_compared_in_constant_time_whatever_the_length() -> None:
    for offered in ["x", "k3", "k3y!", "sk-" + "a" * 28, "z" * 101, "q" * 5000, *KEYS]:
        accepted, calls = compare_digest_calls(lambda o=offered: key_accepted(o, KEYS))
        assert accepted == (offered in KEYS)
        assert calls == len(KEYS), f"{offered[:10]!r}: {calls} compare_digest calls"


@asynccontextmanager
async def app_server(
    tmp: Path, head: str, models: str
) -> AsyncIterator[tuple[str, web.Application]]:
    text = f"healthCheckTimeout: 15\n{head}\n{models}"
    config = load_config_text(text, "security.yaml", environ={}).config
    app = build_app(config, base_env=fake_upstream_env())
    async with serving(app) as url:
        yield url, app


async def test_requests_go_through_compare_digest(tmp_path: Path) -> None:
    """Over HTTP too: a wrong key of any length meets every configured key.

    The server runs on this thread's loop, so the profiler sees its calls.
    """
    head = "apiKeys: " + json.dumps(KEYS)
    server = app_server(tmp_path, head, models_yaml(tmp_path, ["m1"]))
    async with server as (url, _), aiohttp.ClientSession() as session:
        for offered in ["x", "sk-" + "b" * 29, "w" * 300]:
            calls = 0

            def profiler(frame: object, event: str, arg: object) -> None:
                nonlocal calls
                calls += event == "c_call" and arg is hmac.compare_digest

            sys.setprofile(profiler)
            try:
                r = await session.get(f"{url}/running", headers={"x-api-key": offered})
                r.release()
            finally:
                sys.setprofile(None)
            assert r.status == 401
            assert calls >= len(KEYS)


OBSERVABILITY_ROUTES = {
    "/logs",
    "/logs/stream",
    "/logs/stream/x",
    "/api/events",
    "/api/metrics/activity",
    "/api/metrics/stats",
    "/api/captures/x",
    "/api/inflight/x/cancel",
    "/api/performance",
    "/api/version",
    "/api/hardware",
    "/metrics",
    "/api/timeline",
    "/api/processes",
    "/ui",
    "/ui/x",
}
"""Step 9's and 10's routes (paths as enumerated, ``{…}`` → ``x``): each must be checked."""


async def test_every_non_public_route_needs_a_key(tmp_path: Path) -> None:
    """Enumerate the router: each route answers 401 without a key unless documented public."""
    head = "apiKeys: " + json.dumps(KEYS)
    public: set[tuple[str, str]] = set()
    protected: set[str] = set()
    async with app_server(tmp_path, head, models_yaml(tmp_path, ["m1"])) as (url, app):
        checked = 0
        async with aiohttp.ClientSession() as session:
            for route in app.router.routes():
                info = route.resource.canonical if route.resource else ""
                path = re.sub(r"\{[^}]*\}", "x", info)
                methods = (
                    ["GET", "POST", "PUT", "DELETE"] if route.method == "*" else [route.method]
                )
                for method in methods:
                    for headers in ({}, {"Authorization": "Bearer wrong"}):
                        async with session.request(
                            method, url + path, headers=headers, allow_redirects=False
                        ) as r:
                            body = await r.read()
                        if not is_protected(method, path):
                            public.add((method, path))
                            assert r.status != 401, (method, path)
                            continue
                        assert r.status == 401, (method, path, r.status, body[:200])
                        if method != "HEAD":
                            error = json.loads(body)["error"]
                            if path.startswith("/ollama"):  # Ollama's shape: {"error": "…"}
                                assert isinstance(error, str) and error, (path, body)
                            else:
                                assert error["code"] == "unauthorized", body
                        assert b"wrong" not in body
                        protected.add(path)
                        checked += 1
    assert checked > 40
    assert protected >= OBSERVABILITY_ROUTES, OBSERVABILITY_ROUTES - protected
    assert {p for _, p in public} == {"/health", "/wol-health", "/", "/upstream", "/favicon.ico"}, (
        public
    )
    assert {m for m, p in public if p == "/upstream"} <= {"GET", "HEAD"}


async def test_keys_never_logged_echoed_or_forwarded(tmp_path: Path) -> None:
    """Debug logging on; good and bad keys in every slot; then grep everything for them."""
    good, bad = "sk-good-" + uuid.uuid4().hex, "sk-bad-" + uuid.uuid4().hex
    config = tmp_path / "config.yaml"
    config.write_text(
        f"logLevel: debug\napiKeys: [{good}]\nhealthCheckTimeout: 15\n"
        + models_yaml(tmp_path, ["m1"])
    )
    basic = lambda k: "Basic " + base64.b64encode(f"user:{k}".encode()).decode()  # noqa: E731
    seen: list[bytes] = []
    with modelswap_process(config) as ms:
        async with aiohttp.ClientSession() as session:
            for key in (good, bad):
                for headers in (
                    {"Authorization": f"Bearer {key}"},
                    {"x-api-key": key},
                    {"Authorization": basic(key)},
                ):
                    for method, path, body in (
                        ("POST", "/v1/chat/completions", {"model": "m1"}),
                        ("POST", "/v1/chat/completions", {"model": "m1", "stream": True}),
                        ("POST", "/v1/chat/completions", {"model": "nope"}),
                        ("POST", "/upstream/m1/echo/headers", {"x": 1}),
                        ("GET", "/running", None),
                        ("GET", "/v1/models", None),
                        ("GET", "/no/such/route", None),
                    ):
                        async with session.request(
                            method, ms.url + path, json=body, headers=headers
                        ) as r:
                            seen.append(r.status.to_bytes(2, "big"))
                            seen.append(json.dumps(dict(r.headers)).encode())
                            seen.append(await r.read())
                            if key == good and path.startswith("/upstream"):
                                assert r.status == 200  # it really reached the upstream
        assert await asyncio.to_thread(ms.terminate) == 0
        logs = ms.text
    assert b"/v1/chat/completions" in logs  # the access log did record the requests
    upstream_log = (tmp_path / "m1.events").read_bytes()
    for secret in (good, bad):
        for encoded in (secret.encode(), base64.b64encode(f"user:{secret}".encode())):
            assert encoded not in logs, "key in modelswap's output"
            assert encoded not in upstream_log, "key in the upstream's log"
            for chunk in seen:
                assert encoded not in chunk, f"key echoed: {chunk[:300]!r}"


class Attacker:
    """A server that must never be reached: it records every request it gets."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.record)

    async def record(self, request: web.Request) -> web.Response:
        self.hits.append(f"{request.method} {request.raw_path}")
        return web.Response(text="pwned")


async def test_upstream_passthrough_cannot_reach_another_host(tmp_path: Path) -> None:
    attacker = Attacker()
    async with (
        serving(attacker.app) as attacker_url,
        app_server(tmp_path, "", models_yaml(tmp_path, ["m1"])) as (url, _),
    ):
        aport = int(attacker_url.rsplit(":", 1)[1])
        port = int(url.rsplit(":", 1)[1])
        tricks = [t.format(attacker=aport) for t in PATH_TRICKS]
        targets = [f"/upstream/m1/{t}" for t in tricks]
        targets += [f"/upstream/m1/{t}/v1/chat/completions" for t in tricks]
        targets += [f"/upstream/{t}" for t in tricks] + [f"/upstream/m1{t}" for t in tricks]
        targets += [f"http://127.0.0.1:{aport}/upstream/m1/x", f"//127.0.0.1:{aport}/x"]
        targets += [
            f"/upstream/m1//127.0.0.1:{aport}/x",
            f"/upstream/m1/..%2F..%2F127.0.0.1:{aport}",
        ]
        reached_m1 = 0
        for target in targets:
            for headers in (
                [],
                [("Host", f"127.0.0.1:{aport}")],
                [("X-Forwarded-Host", f"127.0.0.1:{aport}")],
            ):
                reply = await asyncio.to_thread(raw_request, port, "GET", target, headers, b"")
                assert reply.status < 500 or reply.status in (502, 503), (target, reply)
                if reply.headers.get("x-fake-model-id") == "m1":
                    reached_m1 += 1
    assert attacker.hits == []
    assert reached_m1 > 50  # the tricks were really forwarded, to m1 and nowhere else


async def test_cmd_is_never_run_through_a_shell(tmp_path: Path) -> None:
    """Shell syntax in ``cmd`` reaches the program as literal words; nothing runs it."""
    tag = uuid.uuid4().hex
    pwned = [Path(f"/tmp/pwned-{tag}-{i}") for i in range(5)]
    argv_file = tmp_path / "argv.json"
    script = "import json,sys; open(sys.argv[1],'w').write(json.dumps(sys.argv[2:]))"
    cmd = (
        f'{sys.executable} -c "{script}" {argv_file} ; touch {pwned[0]} $(touch {pwned[1]})'
        f" `touch {pwned[2]}` && touch {pwned[3]} | touch {pwned[4]}"
    )
    models = (
        f"models:\n  evil:\n    cmd: {json.dumps(cmd)}\n    proxy: http://127.0.0.1:{free_port()}\n"
    )
    server = app_server(tmp_path, "", models)
    async with server as (url, _), aiohttp.ClientSession() as session:
        r = await session.post(f"{url}/v1/chat/completions", json={"model": "evil"})
        body = await r.json()
    assert r.status >= 500 and "error" in body  # it exits at once: the start fails
    argv = json.loads(argv_file.read_text())
    assert argv[:3] == [";", "touch", str(pwned[0])]
    assert f"$(touch {pwned[1]})" in " ".join(argv)
    assert "`touch" in argv and "&&" in argv and "|" in argv
    for path in pwned:
        assert not path.exists(), f"{path} was created: cmd went through a shell"
