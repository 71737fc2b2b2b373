"""Memory sizes in the config: ``resources:`` per model and ``routing.resources`` for the host.

A size is a non-negative integer of bytes, or a number with a unit: ``KB``,
``MB``, ``GB``, ``TB`` (powers of 1000) or ``KiB``, ``MiB``, ``GiB``, ``TiB``
(powers of 1024); ``B`` is bytes. ``10GiB``, ``10.5 GB``, ``4096`` are sizes;
``10G``, ``-1GB`` and ``true`` are errors naming the key.

Per-GPU budgets. ``vram`` is all GPU memory together; ``vram:N`` is GPU ``N``
alone. A model whose ``env`` sets ``CUDA_VISIBLE_DEVICES`` to integer indices
has its ``vram`` charged to those devices — split evenly when it lists
several (llama.cpp's default tensor split) — unless it gives ``vram:N`` keys
itself, which are then used as written. A ``vram:N`` budget with no ``vram``
budget gives ``vram`` the sum of the device budgets. Non-integer device IDs
(``GPU-uuid``) charge the total ``vram`` only.

Validation (step 12b) rejects a model that can never fit, even alone: one
whose declared size exceeds a budget, naming the model and the key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from modelswap.config.schema_types import describe_value
from modelswap.config.validate_base import Reporter
from modelswap.core.memory import format_bytes

if TYPE_CHECKING:
    from modelswap.config.schema_models import ModelConfig

__all__ = [
    "SIZE_PATTERN",
    "ByteSize",
    "check_resources",
    "effective_resources",
    "never_fits_message",
    "parse_size",
    "resource_budget",
    "visible_devices",
]

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
    "TiB": 1 << 40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$")
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([KMGT]i?B|B)?\s*$"
RESOURCE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*(:\d+)?$")


def parse_size(text: str) -> int | None:
    """``"10GiB"`` → 10737418240; None if ``text`` is not a size."""
    match = _SIZE.match(text)
    if match is None:
        return None
    number, unit = match.groups()
    return math.ceil(float(number) * _UNITS[unit or ""])


def _to_size(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        size = parse_size(value)
        if size is not None:
            return size
    raise PydanticCustomError(
        "size",
        "must be a size in bytes or with a unit (MB, MiB, GB, GiB…), got {got}",
        {"got": describe_value(value)},
    )


ByteSize = Annotated[
    int,
    BeforeValidator(_to_size),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": SIZE_PATTERN}]}
    ),
]
"""A memory size: bytes, or a number with a unit (``10GiB``, ``512MB``)."""


def visible_devices(env: tuple[str, ...]) -> tuple[int, ...] | None:
    """The integer GPU indices of ``CUDA_VISIBLE_DEVICES`` in ``env``; None if unset/non-integer.

    The last assignment wins, as for the child's environment.
    """
    value: str | None = None
    for entry in env:
        name, sep, rest = entry.partition("=")
        if sep and name.strip() == "CUDA_VISIBLE_DEVICES":
            value = rest.strip()
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        return None
    return tuple(dict.fromkeys(int(p) for p in parts))


def effective_resources(resources: Mapping[str, int], env: tuple[str, ...]) -> dict[str, int]:
    """A model's declared sizes with ``vram`` charged to its devices (see the module docs)."""
    out = dict(resources)
    vram = out.get("vram")
    devices = visible_devices(env)
    if vram is None or devices is None or any(k.startswith("vram:") for k in out):
        return out
    share = math.ceil(vram / len(devices))
    for device in devices:
        out[f"vram:{device}"] = share
    return out


def resource_budget(
    configured: Mapping[str, int], detected: Mapping[str, int] | None = None
) -> dict[str, int]:
    """The host budget: configured keys, then detected ones (NVML) for keys not configured.

    A ``vram`` total missing from both is the sum of the per-device budgets.
    """
    budget = dict(configured)
    for name, size in (detected or {}).items():
        budget.setdefault(name, size)
    devices = [size for name, size in budget.items() if name.startswith("vram:")]
    if devices and "vram" not in budget:
        budget["vram"] = sum(devices)
    return budget


def never_fits(
    declared: Mapping[str, int], budget: Mapping[str, int]
) -> tuple[str, int, int] | None:
    """``(resource, needs, has)`` for the first budget a model exceeds alone, else None."""
    for name in sorted(declared):
        if name in budget and declared[name] > budget[name]:
            return name, declared[name], budget[name]
    return None


def check_resources(
    models: Mapping[str, ModelConfig], budget: Mapping[str, int], report: Reporter
) -> dict[str, int]:
    """Step 12b: resource names are well formed and every model fits alone; the budget.

    The budget checked here is the configured one; the NVML default is only
    known when the router is built (``modelswap.router.build`` checks it then).
    """
    for name in budget:
        if not RESOURCE_NAME.match(name):
            report.fail(_BAD_NAME.format(name=name), "routing", "resources", name)
    effective = resource_budget(budget)
    for model_id, model in models.items():
        for name in model.resources:
            if not RESOURCE_NAME.match(name):
                report.fail(_BAD_NAME.format(name=name), "models", model_id, "resources", name)
        too_big = never_fits(effective_resources(model.resources, model.env), effective)
        if too_big is not None:
            name, needs, has = too_big
            key = name if name in model.resources else "vram"
            report.fail(never_fits_message(model_id, name, needs, has), *_where(model_id, key))
    return dict(budget)


def never_fits_message(model_id: str, name: str, needs: int, has: int) -> str:
    """The error for a model that exceeds a budget even alone (config and build time)."""
    return (
        f'model "{model_id}" can never fit: it needs {format_bytes(needs)} of {name} '
        f"but the budget is {format_bytes(has)} (routing.resources.{name})"
    )


def _where(model_id: str, key: str) -> tuple[str, ...]:
    return ("models", model_id, "resources", key)


_BAD_NAME = (
    'resource name "{name}" is not valid: use a word such as vram or ram, '
    "optionally with a device index (vram:0)"
)
