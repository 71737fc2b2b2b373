"""Found by the fuzzer: compressed request bodies must reach the upstream as sent.

aiohttp's server decodes ``Content-Encoding: gzip`` request bodies by
default; modelswap then forwarded the *decoded* bytes under the original
``Content-Encoding`` header (and, for streamed bodies, the compressed
``Content-Length``), so the upstream could not read them, and a body that
failed to decode was a 500. ``run_server`` now turns decoding off, as
llama-swap's Go server never decodes: bytes pass through untouched, and a
compressed JSON body carries no readable model (404, as in llama-swap).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import aiohttp

from tests.reliability.harness import models_yaml, modelswap_process


async def test_gzip_bodies_pass_through_untouched(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("healthCheckTimeout: 15\n" + models_yaml(tmp_path, ["m1"]))
    original = json.dumps({"model": "m1", "text": "x" * 5000}).encode()
    headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain"}
    with modelswap_process(config) as ms:
        async with aiohttp.ClientSession(ms.url, auto_decompress=False) as session:
            async with session.post(
                "/upstream/m1/echo", data=gzip.compress(original), headers=headers
            ) as r:
                echo = await r.json()
            assert r.status == 200
            assert echo["body"] == original.decode()  # the fake itself decoded what we sent
            assert echo["received_headers"]["content-encoding"] == "gzip"
            json_headers = {**headers, "Content-Type": "application/json"}
            async with session.post(
                "/v1/chat/completions", data=gzip.compress(original), headers=json_headers
            ) as r:
                assert r.status == 404
                assert "no model id could be identified" in (await r.json())["error"]["message"]
            async with session.post(
                "/v1/chat/completions", data=b"not gzip", headers=json_headers
            ) as r:
                assert r.status == 404  # never a 500
        assert ms.terminate() == 0
