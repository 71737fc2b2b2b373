"""Reload triggers as a user meets them: SIGHUP and ``-watch-config`` on ``python -m modelswap``.

The outcome is read where a user's tools read it: the ``configReload`` event
on ``/api/events`` and the model list.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.test_cli import DEADLINE, serving

pytestmark = pytest.mark.asyncio


def model(model_id: str) -> str:
    return f"  {model_id}:\n    cmd: sleep 60\n    proxy: http://127.0.0.1:9\n"


async def reload_event(events: aiohttp.ClientResponse) -> dict[str, Any]:
    """The next ``configReload`` message of an open ``/api/events`` stream."""
    async with asyncio.timeout(DEADLINE):
        async for line in events.content:
            text = line.decode().strip()
            if text.startswith("data:"):
                envelope = json.loads(text[len("data:") :])
                if envelope["type"] == "configReload":
                    return json.loads(envelope["data"])  # type: ignore[no-any-return]
    raise AssertionError("/api/events ended before a configReload event")


async def model_ids(session: aiohttp.ClientSession, url: str) -> list[str]:
    async with session.get(f"{url}/v1/models") as resp:
        return [m["id"] for m in (await resp.json())["data"]]


async def test_sighup_reloads_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("models:\n" + model("a"))
    args = ["-config", str(config), "-listen", "127.0.0.1:0"]
    async with serving(args, tmp_path) as served, aiohttp.ClientSession() as session:
        async with session.get(f"{served.url}/api/events") as events:
            config.write_text("models:\n" + model("a") + model("b"))
            served.process.send_signal(signal.SIGHUP)
            published = await reload_event(events)
        assert published["ok"] is True and published["trigger"] == "signal"
        assert published["summary"]["added"] == ["b"]
        assert published["summary"]["unchanged"] == ["a"]
        assert await model_ids(session, served.url) == ["a", "b"]
        assert served.process.returncode is None  # SIGHUP did not end the server


async def test_watch_config_follows_a_config_dir(tmp_path: Path) -> None:
    conf_dir = tmp_path / "conf.d"
    conf_dir.mkdir()
    (conf_dir / "10-a.yaml").write_text("models:\n" + model("a"))
    args = ["-config-dir", str(conf_dir), "-watch-config", "-listen", "127.0.0.1:0"]
    async with serving(args, tmp_path) as served, aiohttp.ClientSession() as session:
        async with session.get(f"{served.url}/api/events") as events:
            (conf_dir / "20-b.yaml").write_text("models:\n" + model("b"))  # a new file
            published = await reload_event(events)
            assert published["ok"] is True and published["trigger"] == "watch"
            assert published["summary"]["added"] == ["b"]
            (conf_dir / "20-b.yaml").write_text("models:\n  b: [broken\n")
            refused = await reload_event(events)
        assert refused["ok"] is False
        assert refused["problems"][0]["file"].endswith("20-b.yaml")
        assert await model_ids(session, served.url) == ["a", "b"]  # nothing changed
