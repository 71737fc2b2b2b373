"""The hardware snapshot behind ``GET /api/hardware`` (server spec §21), captured once.

Shape: llama-swap's ``HardwareSnapshot`` (schema version 1) — architecture,
operating system, environment, CPU, memory capacity and accelerators. It is
read once at startup because none of it changes while we run, and it is kept
modest: what psutil, :mod:`platform` and a few ``/proc``/``/etc`` files say, plus
the GPU source's inventory. Every probe may block briefly (file reads), so
:func:`capture_hardware` runs in a worker thread.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

import modelswap
from modelswap.observability.gpu import GpuDevice
from modelswap.observability.performance import rfc3339

SCHEMA_VERSION = 1

_ARCHITECTURES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}
"""Machine names → Go's GOARCH spelling, which llama-swap's snapshot uses."""


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _os_release() -> dict[str, str]:
    text = _read("/etc/os-release") or _read("/usr/lib/os-release") or ""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    return fields


def _operating_system() -> dict[str, Any]:
    family = {"linux": "linux", "darwin": "macos", "win32": "windows"}.get(sys.platform)
    release = _os_release() if sys.platform == "linux" else {}
    name = release.get("NAME") or (platform.system() or None)
    version = release.get("VERSION_ID") or (platform.version() or None)
    if sys.platform == "darwin":
        version = platform.mac_ver()[0] or version
    return {
        "family": family or "other",
        "name": name,
        "version": version,
        "kernel": platform.release() or None,
        "raw_family": sys.platform,
    }


def _environment() -> dict[str, Any]:
    """``container`` when we can tell we run in one; otherwise ``unknown`` (host or VM)."""
    if os.path.exists("/.dockerenv"):
        return {"kind": "container", "name": "docker", "version": None}
    if os.path.exists("/run/.containerenv"):
        return {"kind": "container", "name": "podman", "version": None}
    cgroup = _read("/proc/1/cgroup") or ""
    for marker, name in (("kubepods", "kubernetes"), ("docker", "docker"), ("lxc", "lxc")):
        if marker in cgroup:
            return {"kind": "container", "name": name, "version": None}
    return {"kind": "unknown", "name": None, "version": None}


def _cpu() -> dict[str, Any]:
    vendor = model = None
    sockets: set[str] = set()
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "vendor_id" and vendor is None:
            vendor = value
        elif key in ("model name", "Model") and model is None:
            model = value
        elif key == "physical id":
            sockets.add(value)
    return {
        "vendor": vendor,
        "model": model or (platform.processor() or None),
        "socket_count": len(sockets) or None,
        "physical_core_count": psutil.cpu_count(logical=False),
        "logical_thread_count": psutil.cpu_count(logical=True),
    }


def _accelerator(device: GpuDevice) -> dict[str, Any]:
    return {
        "index": device.index,
        "kind": "gpu",
        "vendor": device.vendor,
        "model": device.name or None,
        "architecture": None,
        "memory": {
            "kind": "dedicated" if device.memory_total_bytes else "unknown",
            "capacity_bytes": device.memory_total_bytes,
        },
        "driver": {"name": device.vendor.lower(), "version": device.driver_version},
        "power_limit_watts": device.power_limit_watts,
    }


def capture_hardware(devices: Sequence[GpuDevice], captured_at: datetime) -> dict[str, Any]:
    """The snapshot as JSON-ready data. Blocking (file reads): run it in a thread."""
    machine = platform.machine()
    return {
        "schema_version": SCHEMA_VERSION,
        "captured_at": rfc3339(captured_at),
        "capture": {
            "scope": "inference_host",
            "method": "detected",
            "detector": {"name": "modelswap", "version": modelswap.__version__},
        },
        "architecture": {
            "name": _ARCHITECTURES.get(machine.lower(), machine.lower() or "unknown"),
            "raw_name": machine or None,
        },
        "operating_system": _operating_system(),
        "environment": _environment(),
        "cpu": _cpu(),
        "memory": {"capacity_bytes": psutil.virtual_memory().total},
        "accelerators": [_accelerator(d) for d in devices],
    }
