"""``/v1/models`` records (server spec §12), built from a loaded config with no server."""

from __future__ import annotations

from modelswap.config import load_config_text
from modelswap.server.listing import model_records

CONFIG = """
includeAliasesInList: true
models:
  zeta:
    cmd: s --port ${PORT}
    name: "  Zeta  "
    description: the last one
    aliases: [z]
    metadata: {family: test, capabilities: dropped-when-rendered}
    capabilities:
      in: [text, image]
      out: [text]
      tools: true
      context: 8192
  alpha:
    cmd: s --port ${PORT}
  hidden:
    cmd: s --port ${PORT}
    unlisted: true
peers:
  remote:
    proxy: http://127.0.0.1:9999
    models: [big, big]
selectors:
  fast:
    strategy: pin
    targets: [zeta, alpha]
"""


def records(loaded: set[str] | None = None) -> dict[str, dict]:
    config = load_config_text(CONFIG, environ={}).config
    out = model_records(config, now=1000, is_loaded=lambda m: m in (loaded or set()))
    return {record["id"]: record for record in out}


def test_records_sorted_and_unlisted_hidden() -> None:
    config = load_config_text(CONFIG, environ={}).config
    ids = [r["id"] for r in model_records(config, now=1, is_loaded=lambda m: False)]
    assert ids == ["alpha", "fast", "remote/big", "z", "zeta"]


def test_model_record_fields_and_capabilities() -> None:
    zeta = records({"zeta"})["zeta"]
    assert list(zeta)[:4] == ["id", "object", "created", "owned_by"]
    assert zeta["owned_by"] == "llama-swap"
    assert zeta["name"] == "Zeta"
    assert zeta["architecture"] == {
        "input_modalities": ["text", "image"],
        "output_modalities": ["text"],
        "modality": "text+image->text",
    }
    assert zeta["capabilities"] == {"vision": True, "function_calling": True}
    assert zeta["supported_parameters"] == ["tools", "tool_choice"]
    assert zeta["context_length"] == 8192
    assert zeta["meta"] == {
        "llamaswap": {"family": "test", "type": "model", "aliases": ["z"]},
        "n_ctx": 8192,
    }
    assert zeta["status"] == {"value": "loaded"}


def test_plain_model_has_no_optional_fields() -> None:
    alpha = records()["alpha"]
    assert alpha == {
        "id": "alpha",
        "object": "model",
        "created": 1000,
        "owned_by": "llama-swap",
        "meta": {"llamaswap": {"type": "model"}},
        "status": {"value": "unloaded"},
    }


def test_alias_record_points_at_model() -> None:
    z = records({"zeta"})["z"]
    assert z["meta"]["llamaswap"]["type"] == "alias"
    assert z["meta"]["llamaswap"]["modelID"] == "zeta"
    assert z["status"] == {"value": "loaded"}


def test_peer_record() -> None:
    peer = records()["remote/big"]
    assert peer["name"] == "remote: big"
    assert peer["meta"] == {"llamaswap": {"type": "peer", "peerID": "remote"}}
    assert peer["status"] == {"value": "unloaded"}


def test_pin_selector_status_follows_first_target_only() -> None:
    assert records({"zeta"})["fast"]["status"] == {"value": "loaded"}
    assert records({"alpha"})["fast"]["status"] == {"value": "unloaded"}
    meta = records()["fast"]["meta"]["llamaswap"]
    assert meta == {"type": "selector", "strategy": "pin", "targets": ["zeta", "alpha"]}
