"""``/api/tags``, ``/api/ps`` and ``/api/show`` as plain data (pure).

The route gathers the facts (file sizes and times, process states, TTLs) and
passes them in with ``now``; these functions only shape them as Ollama does.
A model whose ``cmd`` names no ``.gguf`` file has size 0 and empty details.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from modelswap.config import ModelConfig
from modelswap.ollama.names import Details, digest, ollama_name
from modelswap.ollama.response import JsonDict, created_at

FOREVER_SECONDS = 292 * 365 * 86400
"""``expires_at`` of a model that never unloads: Go's longest duration, as Ollama shows it."""
_EMBEDDING_FLAGS = ("--embedding", "--embeddings")


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What is known about one configured model."""

    model_id: str
    size: int = 0
    modified: float = 0.0
    """Wall time of the model file's last change (0: unknown)."""
    details: Details = field(default_factory=Details)
    context: int = 0
    capabilities: tuple[str, ...] = ("completion",)


def capabilities(model: ModelConfig) -> tuple[str, ...]:
    """Ollama's capability words from the config (``capabilities`` and the ``cmd``)."""
    try:
        argv = shlex.split(model.cmd)
    except ValueError:
        argv = []
    caps = model.capabilities
    words = ["embedding"] if any(flag in argv for flag in _EMBEDDING_FLAGS) else ["completion"]
    if caps.tools:
        words.append("tools")
    if "image" in caps.input_modalities:
        words.append("vision")
    return tuple(words)


def _entry(name: str, facts: ModelFacts, now: float) -> JsonDict:
    return {
        "name": ollama_name(name),
        "model": ollama_name(name),
        "modified_at": created_at(facts.modified or now),
        "size": facts.size,
        "digest": digest(facts.model_id),
        "details": facts.details.as_json(),
    }


def tags(models: Sequence[tuple[str, ModelFacts]], now: float) -> JsonDict:
    """``/api/tags``: every listed ``(name, facts)``."""
    return {"models": [_entry(name, facts, now) for name, facts in models]}


@dataclass(frozen=True, slots=True)
class Running:
    """A loaded model for ``/api/ps``."""

    facts: ModelFacts
    idle_for: float
    """Seconds since its last request ended (0 while one is in flight)."""
    ttl: float
    """Its TTL in force; ≤ 0 = never unloads."""
    footprint: Mapping[str, int] = field(default_factory=dict)
    """Bytes per resource (``vram``, ``vram:N``, ``ram``) memory routing counts for it;
    empty without ``resources`` in the config."""


def memory_sizes(facts: ModelFacts, footprint: Mapping[str, int]) -> tuple[int, int]:
    """``(size, size_vram)`` for ``/api/ps``: Ollama's total and GPU bytes of a loaded model.

    From the footprint memory routing keeps (the larger of declared and
    measured; per-GPU ``vram:N`` summed when no host ``vram`` is given), so a
    client sees what the model really holds; the file size, and 0 in VRAM,
    when there is none (no ``resources`` configured, or nothing on a GPU).
    """
    vram = footprint.get("vram")
    if vram is None:
        vram = sum(v for k, v in footprint.items() if k.startswith("vram:"))
    total = vram + footprint.get("ram", 0)
    return max(facts.size, total), vram


def ps(running: Sequence[Running], now: float) -> JsonDict:
    """``/api/ps``: loaded models with the time their TTL would unload them."""
    models: list[JsonDict] = []
    for item in running:
        entry = _entry(item.facts.model_id, item.facts, now)
        del entry["modified_at"]
        left = item.ttl - item.idle_for if item.ttl > 0 else FOREVER_SECONDS
        entry["expires_at"] = created_at(now + max(0.0, left))
        entry["size"], entry["size_vram"] = memory_sizes(item.facts, item.footprint)
        if item.facts.context:
            entry["context_length"] = item.facts.context
        models.append(entry)
    return {"models": models}


def show(facts: ModelFacts, model: ModelConfig, model_file: str | None, now: float) -> JsonDict:
    """``/api/show``: details, capabilities and what modelswap knows of the model."""
    architecture = facts.details.family or "unknown"
    info: JsonDict = {"general.architecture": architecture}
    if facts.context:  # clients read "<general.architecture>.context_length"
        info[f"{architecture}.context_length"] = facts.context
    lines = ["# served by modelswap; the model's cmd decides how it is loaded"]
    if model_file:
        lines.append(f"FROM {model_file}")
    return {
        "modelfile": "\n".join(lines) + "\n",
        "parameters": "",
        "template": "",
        "details": facts.details.as_json(),
        "model_info": info,
        "capabilities": list(facts.capabilities),
        "modified_at": created_at(facts.modified or now),
    }
