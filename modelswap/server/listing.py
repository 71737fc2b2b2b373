"""``GET /v1/models``: the model list, built as plain data from the config and live status.

Pure: the caller passes ``now`` and a ``is_loaded(model_id)`` view of process
states, so the format (server spec §12) is tested without a server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from modelswap.config import Capabilities, Config, ModelConfig

Record = dict[str, Any]

_RENDERED_META_KEYS = ("architecture", "capabilities", "supported_parameters", "context_length")


def _capability_fields(caps: Capabilities) -> Record:
    """The OpenAI-style capability fields llama-swap derives from ``capabilities``."""
    fields: Record = {}
    ins, outs = list(caps.input_modalities), list(caps.output_modalities)
    architecture: Record = {}
    if ins:
        architecture["input_modalities"] = ins
    if outs:
        architecture["output_modalities"] = outs
    if ins and outs:
        architecture["modality"] = "+".join(ins) + "->" + "+".join(outs)
    if architecture:
        fields["architecture"] = architecture
    flags = {
        "vision": "image" in ins,
        "audio_transcriptions": "audio" in ins and "text" in outs,
        "audio_speech": "text" in ins and "audio" in outs,
        "image_generation": "text" in ins and "image" in outs,
        "image_to_image": "image" in ins and "image" in outs,
        "function_calling": caps.tools,
        "reranker": caps.reranker,
    }
    capabilities = {name: True for name, on in flags.items() if on}
    if capabilities:
        fields["capabilities"] = capabilities
    if caps.tools:
        fields["supported_parameters"] = ["tools", "tool_choice"]
    if caps.context > 0:
        fields["context_length"] = caps.context
    return fields


def _record(
    record_id: str,
    created: int,
    *,
    name: str = "",
    description: str = "",
    caps: Capabilities | None = None,
    llamaswap: Record | None = None,
    loaded: bool = False,
) -> Record:
    record: Record = {"id": record_id, "object": "model", "created": created}
    record["owned_by"] = "llama-swap"
    if name.strip():
        record["name"] = name.strip()
    if description.strip():
        record["description"] = description.strip()
    context = 0
    if caps is not None and not caps.is_empty:
        record.update(_capability_fields(caps))
        context = caps.context
    meta: Record = {}
    if llamaswap:
        meta["llamaswap"] = llamaswap
    if context > 0:
        meta["n_ctx"] = context
    if meta:
        record["meta"] = meta
    record["status"] = {"value": "loaded" if loaded else "unloaded"}
    return record


def _model_meta(model: ModelConfig, internal: Record) -> Record:
    """User metadata plus internal keys (which win); rendered capability keys are dropped."""
    meta = dict(model.metadata)
    if not model.capabilities.is_empty:
        for key in _RENDERED_META_KEYS:
            meta.pop(key, None)
    meta.update(internal)
    return meta


def model_records(
    config: Config,
    *,
    now: int,
    is_loaded: Callable[[str], bool],
    active_pins: Mapping[str, str] | None = None,
) -> list[Record]:
    """Every ``/v1/models`` record, sorted by id (byte order), per llama-swap's rules."""
    records: list[Record] = []
    for model_id, model in config.models.items():
        if model.unlisted:
            continue
        internal: Record = {"type": "model"}
        if model.aliases:
            internal["aliases"] = list(model.aliases)
        loaded = is_loaded(model_id)
        records.append(
            _record(
                model_id,
                now,
                name=model.name,
                description=model.description,
                caps=model.capabilities,
                llamaswap=_model_meta(model, internal),
                loaded=loaded,
            )
        )
        if config.include_aliases_in_list:
            for alias in model.aliases:
                if not alias.strip():
                    continue
                records.append(
                    _record(
                        alias,
                        now,
                        name=model.name,
                        description=model.description,
                        caps=model.capabilities,
                        llamaswap=_model_meta(model, {"type": "alias", "modelID": model_id}),
                        loaded=loaded,
                    )
                )
    for peer_id, peer in config.peers.items():
        for peer_model in dict.fromkeys(peer.models):
            records.append(
                _record(
                    f"{peer_id}/{peer_model}",
                    now,
                    name=f"{peer_id}: {peer_model}",
                    llamaswap={"type": "peer", "peerID": peer_id},
                )
            )
    for selector_id, selector in config.selectors.items():
        if selector.unlisted:
            continue
        meta: Record = dict(selector.metadata)
        meta.update({"type": "selector", "strategy": selector.strategy})
        meta["targets"] = list(selector.targets)
        if selector.strategy == "spillover":
            meta["spillover"] = selector.settings.spillover
        records.append(
            _record(
                selector_id,
                now,
                name=selector.name,
                description=selector.description,
                llamaswap=meta,
                loaded=_selector_loaded(config, selector.strategy, selector.targets, is_loaded),
            )
        )
    listed = {record["id"] for record in records}
    for pin, target in (active_pins or {}).items():
        if target and pin not in listed and not _is_known_name(config, pin):
            records.append(_record(pin, now, llamaswap={"type": "profile"}))
    records.sort(key=lambda record: str(record["id"]).encode())
    return records


def _selector_loaded(
    config: Config, strategy: str, targets: tuple[str, ...], is_loaded: Callable[[str], bool]
) -> bool:
    examined = targets[:1] if strategy == "pin" else targets
    for target in examined:
        model_id = config.resolve_model_id(target)
        if model_id is not None and is_loaded(model_id):
            return True
    return False


def _is_known_name(config: Config, name: str) -> bool:
    return (
        config.resolve_base_model(name) is not None
        or name in config.selectors
        or any(name in model.aliases for model in config.models.values())
    )
