"""The CLI as a user runs it: a real ``python -m modelswap`` process over loopback."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from modelswap import __version__

PYTHON = sys.executable
DEADLINE = 30.0


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "modelswap", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=DEADLINE,
        check=False,
    )


@dataclass
class Served:
    process: asyncio.subprocess.Process
    url: str
    output: list[str]


@asynccontextmanager
async def serving(
    args: Sequence[str], cwd: Path, env: dict[str, str] | None = None
) -> AsyncIterator[Served]:
    """Start modelswap, wait for its 'listening' line, and always clean up."""
    process = await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "modelswap",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    output: list[str] = []
    try:
        assert process.stdout is not None
        async with asyncio.timeout(DEADLINE):
            while True:
                line = (await process.stdout.readline()).decode()
                if not line:
                    raise AssertionError("modelswap exited before listening:\n" + "".join(output))
                output.append(line)
                match = re.search(r"modelswap listening on (\S+)", line)
                if match:
                    break
        yield Served(process, match.group(1), output)
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


async def stop_with(served: Served, signum: int) -> int:
    served.process.send_signal(signum)
    assert served.process.stdout is not None
    async with asyncio.timeout(DEADLINE):
        rest = await served.process.stdout.read()
        served.output.append(rest.decode())
        return await served.process.wait()


def test_version_both_spellings() -> None:
    for flag in ("--version", "-version"):
        result = run_cli(flag)
        assert result.returncode == 0
        assert result.stdout.strip() == f"version: {__version__}"


def test_schema_prints_json_schema() -> None:
    result = run_cli("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert "models" in schema["properties"]
    assert "healthCheckTimeout" in schema["properties"]


def test_check_config_prints_expanded_config(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "macros:\n  port-arg: --port ${PORT}\nstartPort: 7000\n"
        "models:\n  m1:\n    cmd: server ${port-arg} --name ${MODEL_ID}\n"
    )
    result = run_cli("check-config", str(config))
    assert result.returncode == 0, result.stderr
    assert "cmd: server --port 7000 --name m1" in result.stdout
    assert "proxy: http://localhost:7000" in result.stdout


def test_check_config_reports_every_error_with_file_line_and_key(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("models:\n  qwen:\n    cmd: server --port ${PORT}\n    ttl: -5\n")
    result = run_cli("check-config", str(config))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "invalid TTL value -5" in result.stderr
    assert f"{config}:4" in result.stderr


def test_check_config_validates_memory_budgets(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "models:\n  big:\n    cmd: server --port ${PORT}\n    resources:\n      vram: 30GiB\n"
        "routing:\n  resources: {vram: 24GiB}\n"
    )
    result = run_cli("check-config", str(config))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f'{config}:5: model "big" can never fit: it needs 30GiB of vram' in result.stderr
    config.write_text(config.read_text().replace("30GiB", "20GiB"))
    result = run_cli("check-config", str(config))
    assert result.returncode == 0, result.stderr


def test_check_config_warns_about_unknown_key(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("models:\n  qwen:\n    cmd: server --port ${PORT}\n    tll: 5\n")
    result = run_cli("check-config", str(config))
    assert result.returncode == 0
    assert f"{config}:4" in result.stderr
    assert "ttl" in result.stderr


def test_bad_config_exits_1_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("startPort: abcd\n")
    result = run_cli("--config", str(config), "--listen", "127.0.0.1:0")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "startPort" in result.stderr


def test_tls_needs_both_files() -> None:
    result = run_cli("-tls-cert-file", "cert.pem")
    assert result.returncode == 1
    assert "both -tls-cert-file and -tls-key-file must be provided for TLS" in result.stderr


async def test_demo_serves_health_and_models_then_sigterm_exits_0(tmp_path: Path) -> None:
    async with serving(["--listen", "127.0.0.1:0"], cwd=tmp_path) as served:
        assert any("built-in demo config" in line for line in served.output)
        assert any("chat-small" in line for line in served.output)
        async with aiohttp.ClientSession() as session:
            async with session.get(served.url + "/health") as response:
                assert response.status == 200
                assert await response.text() == "OK"
            async with session.get(served.url + "/v1/models") as response:
                assert response.status == 200
                listed = {record["id"] for record in (await response.json())["data"]}
        assert {"chat-small", "chat-large", "embed", "rerank"} <= listed
        assert await stop_with(served, signal.SIGTERM) == 0


async def test_single_dash_flags_and_sigint(tmp_path: Path) -> None:
    config = tmp_path / "my.yaml"
    config.write_text("models:\n  solo:\n    cmd: server --port ${PORT}\n")
    async with serving(["-config", str(config), "-listen", "127.0.0.1:0"], cwd=tmp_path) as served:
        async with (
            aiohttp.ClientSession() as session,
            session.get(served.url + "/v1/models") as response,
        ):
            assert [r["id"] for r in (await response.json())["data"]] == ["solo"]
        assert await stop_with(served, signal.SIGINT) == 0


async def test_uses_config_yaml_in_working_directory(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("models:\n  local-one:\n    cmd: s --port ${PORT}\n")
    async with serving(["--listen", "127.0.0.1:0"], cwd=tmp_path) as served:
        assert any("local-one" in line for line in served.output)
        assert await stop_with(served, signal.SIGTERM) == 0


@pytest.mark.skipif(not Path("/usr/bin/openssl").exists(), reason="needs openssl to make a cert")
async def test_tls_serves_https(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=DEADLINE,
    )  # fmt: skip
    args = ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--listen", "127.0.0.1:0"]
    async with serving(args, cwd=tmp_path) as served:
        assert served.url.startswith("https://")
        async with (
            aiohttp.ClientSession() as session,
            session.get(served.url + "/health", ssl=False) as response,
        ):
            assert response.status == 200
        assert await stop_with(served, signal.SIGTERM) == 0


def test_check_config_merges_config_dir(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("models:\n  alpha:\n    cmd: s --port ${PORT}\n")
    (tmp_path / "b.yml").write_text("models:\n  beta:\n    cmd: s --port ${PORT}\n")
    result = run_cli("check-config", "-config-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "alpha:" in result.stdout and "beta:" in result.stdout
