"""``/api/version``'s commit discovery and ``/api/hardware``'s snapshot, without a server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import psutil

import modelswap
from modelswap.observability.gpu import GpuDevice
from modelswap.observability.hardware import capture_hardware
from modelswap.observability.version import git_commit, version_info

SHA1 = "1" * 40
SHA2 = "2" * 40


def checkout(tmp: Path, head: str, refs: dict[str, str] | None = None, packed: str = "") -> Path:
    """A package dir ``tmp/repo/pkg`` whose checkout's ``.git`` says ``head``."""
    git = tmp / "repo" / ".git"
    git.mkdir(parents=True)
    (git / "HEAD").write_text(head + "\n")
    for ref, sha in (refs or {}).items():
        (git / ref).parent.mkdir(parents=True, exist_ok=True)
        (git / ref).write_text(sha + "\n")
    if packed:
        (git / "packed-refs").write_text(packed)
    package = tmp / "repo" / "pkg"
    package.mkdir()
    return package


def test_commit_from_a_loose_ref(tmp_path: Path) -> None:
    package = checkout(tmp_path, "ref: refs/heads/main", {"refs/heads/main": SHA1})
    assert version_info(package) == {
        "version": modelswap.__version__,
        "commit": SHA1,
        "build_date": "unknown",
    }


def test_commit_from_packed_refs(tmp_path: Path) -> None:
    packed = f"# pack-refs with: peeled\n{SHA2} refs/heads/other\n{SHA1} refs/heads/main\n"
    package = checkout(tmp_path, "ref: refs/heads/main", packed=packed)
    assert git_commit(package.parent) == SHA1


def test_detached_head(tmp_path: Path) -> None:
    assert git_commit(checkout(tmp_path, SHA2).parent) == SHA2


def test_worktree_reads_refs_from_the_common_dir(tmp_path: Path) -> None:
    main = checkout(tmp_path, "ref: refs/heads/main", {"refs/heads/feature": SHA2}).parent
    private = main / ".git" / "worktrees" / "wt"
    private.mkdir(parents=True)
    (private / "HEAD").write_text("ref: refs/heads/feature\n")
    (private / "commondir").write_text("../..\n")
    worktree = tmp_path / "wt"
    worktree.mkdir()
    (worktree / ".git").write_text(f"gitdir: {private}\n")
    assert git_commit(worktree) == SHA2


def test_no_checkout_is_unknown(tmp_path: Path) -> None:
    package = tmp_path / "site-packages" / "modelswap"
    package.mkdir(parents=True)
    assert version_info(package)["commit"] == "unknown"


def test_build_info_file_wins(tmp_path: Path) -> None:
    package = checkout(tmp_path, SHA2)
    (package / "_build_info.json").write_text(
        json.dumps({"commit": "abc1234", "build_date": "2026-01-02T03:04:05Z"})
    )
    info = version_info(package)
    assert (info["commit"], info["build_date"]) == ("abc1234", "2026-01-02T03:04:05Z")


def test_hardware_snapshot_shape() -> None:
    device = GpuDevice(0, "RTX Fake", "GPU-1", "NVIDIA", 24 * 1024**3, "555.1", 450.0)
    snapshot = capture_hardware([device], datetime(2026, 1, 1, tzinfo=UTC))
    assert snapshot["schema_version"] == 1
    assert snapshot["captured_at"] == "2026-01-01T00:00:00Z"
    assert snapshot["capture"] == {
        "scope": "inference_host",
        "method": "detected",
        "detector": {"name": "modelswap", "version": modelswap.__version__},
    }
    assert snapshot["memory"] == {"capacity_bytes": psutil.virtual_memory().total}
    assert snapshot["cpu"]["logical_thread_count"] == psutil.cpu_count()
    assert (
        snapshot["architecture"]["name"] in {"amd64", "arm64"}
        or snapshot["architecture"]["raw_name"]
    )
    assert set(snapshot["operating_system"]) >= {"family", "name", "version", "kernel"}
    assert snapshot["environment"]["kind"] in {"container", "unknown"}
    assert snapshot["accelerators"] == [
        {
            "index": 0,
            "kind": "gpu",
            "vendor": "NVIDIA",
            "model": "RTX Fake",
            "architecture": None,
            "memory": {"kind": "dedicated", "capacity_bytes": 24 * 1024**3},
            "driver": {"name": "nvidia", "version": "555.1"},
            "power_limit_watts": 450.0,
        }
    ]
    json.dumps(snapshot)  # JSON-ready
