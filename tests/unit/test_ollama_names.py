"""Ollama names, model details and listings (names.py, listing.py), from a loaded config."""

from __future__ import annotations

import pytest

from modelswap.config import load_config_text
from modelswap.errors import ConfigError
from modelswap.ollama.listing import (
    FOREVER_SECONDS,
    ModelFacts,
    Running,
    capabilities,
    ps,
    show,
    tags,
)
from modelswap.ollama.names import (
    Details,
    details,
    digest,
    listed,
    model_file,
    ollama_name,
    requested_name,
    resolve,
)
from modelswap.ollama.response import created_at

CONFIG = """
includeAliasesInList: {aliases}
models:
  qwen3:
    cmd: llama-server --port ${{PORT}} -m /models/Qwen3-8B-Q4_K_M.gguf --jinja
    aliases: [q, "smart:7b"]
    capabilities: {{tools: true, context: 8192, in: [text, image]}}
  "llama3.2:3b":
    cmd: llama-server --port ${{PORT}} --model=/m/Llama-3.2-3B-Instruct-BF16.gguf
  embedder:
    cmd: llama-server --port ${{PORT}} -m /m/nomic-embed-text-v1.5.f16.gguf --embeddings
  hidden:
    cmd: llama-server --port ${{PORT}}
    unlisted: true
"""


def config(aliases: bool = False):  # type: ignore[no-untyped-def]
    return load_config_text(
        CONFIG.format(aliases=str(aliases).lower()), "t.yaml", environ={}
    ).config


@pytest.mark.parametrize(
    ("name", "model_id"),
    [
        ("qwen3", "qwen3"),
        ("qwen3:latest", "qwen3"),
        ("q:latest", "qwen3"),
        ("smart:7b", "qwen3"),  # an alias with a tag of its own
        ("llama3.2:3b", "llama3.2:3b"),
        ("hidden:latest", "hidden"),  # unlisted is still served
        ("qwen3:8b", None),  # only :latest is implied
        ("nope", None),
    ],
)
def test_resolve(name: str, model_id: str | None) -> None:
    assert resolve(config(), name) == model_id


def test_requested_name_keeps_a_configured_tag() -> None:
    cfg = config()
    assert requested_name(cfg, "qwen3:latest") == "qwen3"
    assert requested_name(cfg, "llama3.2:3b") == "llama3.2:3b"
    assert requested_name(cfg, "q") == "q"


def test_ollama_spelling_has_a_tag() -> None:
    assert ollama_name("qwen3") == "qwen3:latest"
    assert ollama_name("llama3.2:3b") == "llama3.2:3b"


def test_listed_names_follow_the_v1_models_rules() -> None:
    assert listed(config()) == [
        ("qwen3", "qwen3"),
        ("llama3.2:3b", "llama3.2:3b"),
        ("embedder", "embedder"),
    ]
    assert ("smart:7b", "qwen3") in listed(config(aliases=True))


@pytest.mark.parametrize(
    ("cmd", "path"),
    [
        ("llama-server -m /a/b.gguf", "/a/b.gguf"),
        ("llama-server --model '/a b/c.GGUF'", "/a b/c.GGUF"),
        ("llama-server --model=/x.gguf", "/x.gguf"),
        ("llama-server -hf org/repo", None),
        ("vllm serve /models/dir", None),
        ("broken 'quote", None),
    ],
)
def test_model_file(cmd: str, path: str | None) -> None:
    assert model_file(cmd) == path


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (None, Details()),
        ("/m/Qwen3-8B-Q4_K_M.gguf", Details("gguf", "qwen3", "8B", "Q4_K_M")),
        ("/m/Llama-3.2-3B-Instruct-BF16.gguf", Details("gguf", "llama", "3B", "BF16")),
        ("/m/gemma-3-270m-it-IQ4_XS.gguf", Details("gguf", "gemma", "270M", "IQ4_XS")),
        ("/m/nomic-embed-text-v1.5.f16.gguf", Details("gguf", "nomic", "", "F16")),
    ],
)
def test_details_from_file_names(path: str | None, expected: Details) -> None:
    assert details(path) == expected


def test_capabilities_from_config() -> None:
    cfg = config()
    assert capabilities(cfg.models["qwen3"]) == ("completion", "tools", "vision")
    assert capabilities(cfg.models["embedder"]) == ("embedding",)
    assert capabilities(cfg.models["llama3.2:3b"]) == ("completion",)


FACTS = ModelFacts(
    "qwen3", 5_000_000_000, 1_600_000_000.0, Details("gguf", "qwen3", "8B", "Q4_K_M"), 8192
)


def test_tags() -> None:
    out = tags([("qwen3", FACTS), ("q", FACTS)], now=1_700_000_000.0)
    first = out["models"][0]
    assert first == {
        "name": "qwen3:latest",
        "model": "qwen3:latest",
        "modified_at": created_at(1_600_000_000.0),
        "size": 5_000_000_000,
        "digest": digest("qwen3"),
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "qwen3",
            "families": ["qwen3"],
            "parameter_size": "8B",
            "quantization_level": "Q4_K_M",
        },
    }
    assert out["models"][1]["name"] == "q:latest"
    assert len(digest("x")) == 64


@pytest.mark.parametrize(
    ("idle", "ttl", "left"),
    [(10.0, 300.0, 290.0), (0.0, 60.0, 60.0), (500.0, 300.0, 0.0), (10.0, 0.0, FOREVER_SECONDS)],
)
def test_ps_expiry(idle: float, ttl: float, left: float) -> None:
    now = 1_700_000_000.0
    (entry,) = ps([Running(FACTS, idle, ttl)], now)["models"]
    assert entry["expires_at"] == created_at(now + left)
    assert entry["context_length"] == 8192
    assert entry["name"] == "qwen3:latest"
    assert "modified_at" not in entry


GIB = 1 << 30


@pytest.mark.parametrize(
    ("footprint", "size", "size_vram"),
    [
        ({}, 5_000_000_000, 0),  # no memory routing: the file, nothing known on a GPU
        ({"vram": 7 * GIB, "ram": GIB}, 8 * GIB, 7 * GIB),
        ({"vram:0": 3 * GIB, "vram:1": 3 * GIB}, 6 * GIB, 6 * GIB),  # per-GPU only: summed
        ({"vram": 4 * GIB, "vram:0": 4 * GIB}, 5_000_000_000, 4 * GIB),  # host total wins
        ({"ram": GIB}, 5_000_000_000, 0),  # CPU only, smaller than its file
    ],
)
def test_ps_sizes_come_from_the_memory_footprint(
    footprint: dict[str, int], size: int, size_vram: int
) -> None:
    (entry,) = ps([Running(FACTS, 0.0, 60.0, footprint)], 1_700_000_000.0)["models"]
    assert (entry["size"], entry["size_vram"]) == (size, size_vram)


def test_show() -> None:
    cfg = config()
    out = show(FACTS, cfg.models["qwen3"], "/m/Qwen3-8B-Q4_K_M.gguf", now=0.0)
    assert out["model_info"] == {"general.architecture": "qwen3", "qwen3.context_length": 8192}
    assert out["capabilities"] == ["completion"]
    assert "FROM /m/Qwen3-8B-Q4_K_M.gguf" in out["modelfile"]
    unnamed = show(ModelFacts("x", context=2048), cfg.models["qwen3"], None, now=0.0)
    assert unnamed["model_info"] == {
        "general.architecture": "unknown",
        "unknown.context_length": 2048,
    }
    assert "FROM" not in unnamed["modelfile"]


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:11434", "127.0.0.1:11434"),
        (" :11434 ", ":11434"),
        ("", ""),
        ("[::1]:1", "[::1]:1"),
    ],
)
def test_ollama_listen_config(listen: str, expected: str) -> None:
    text = f"ollama:\n  listen: {listen!r}\nmodels: {{}}\n"
    assert load_config_text(text, "t.yaml", environ={}).config.ollama.listen == expected


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ("11434", "expected HOST:PORT"),
        ("localhost:http", "invalid port"),
        ("localhost:0", "port out of range"),
        ("localhost:70000", "port out of range"),
    ],
)
def test_ollama_listen_errors_name_file_line_and_key(listen: str, problem: str) -> None:
    text = f"models: {{}}\nollama:\n  listen: {listen!r}\n"
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "t.yaml", environ={})
    message = str(info.value)
    assert "t.yaml:3" in message
    assert "ollama.listen" in message
    assert problem in message


def test_ollama_is_in_the_json_schema() -> None:
    from modelswap.config import config_json_schema

    schema = config_json_schema()
    assert "ollama" in schema["properties"]
    assert "listen" in schema["$defs"]["OllamaConfig"]["properties"]
