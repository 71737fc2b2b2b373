"""In-progress swaps and unloads (core/swaps.py): pure bookkeeping, no events."""

from __future__ import annotations

from modelswap.core.scheduler_stats import SwapInfo
from modelswap.core.swaps import SwapTable


def test_join_leave_and_finish_keep_waiters_in_order() -> None:
    t = SwapTable()
    sid = t.start("a", ("b",), 1)
    assert t.join("a", 2) == sid
    assert t.join("c", 3) is None  # nothing loading c: no swap to join
    assert t.join("a", 4) == sid
    t.leave(sid, 2)
    assert t.swap_infos() == (SwapInfo(sid, "a", ("b",), (1, 4)),)
    assert t.loading("a") and t.being_evicted("b") and not t.being_evicted("a")
    finished = t.finish(sid)
    assert finished is not None and finished.waiters == [1, 4]
    assert t.finish(sid) is None  # reported twice: stale
    assert not t.loading("a") and t.swap_count == 0


def test_swap_ids_are_never_reused() -> None:
    """A late SwapDone of a dropped swap cannot resolve a newer swap of the model (§9 #3)."""
    t = SwapTable()
    first = t.start("a", (), 1)
    dropped = t.drop("a")
    assert dropped is not None and dropped.swap_id == first
    second = t.start("a", (), 2)
    assert second != first
    assert t.finish(first) is None
    assert t.loading("a")


def test_collisions_with_other_swaps() -> None:
    t = SwapTable()
    t.start("a", ("b",), 1)
    assert t.collides("c", ("a",))  # would evict what another swap loads
    assert t.collides("b", ())  # another swap evicts our target
    assert t.collides("c", ("b",))  # both would evict b
    assert not t.collides("c", ("d",))
    assert not t.collides("a", ("b",))  # the same target is a join, not a collision


def test_unloads_block_their_models_until_done() -> None:
    t = SwapTable()
    t.begin_unload(7, ("a", "b"))
    t.begin_unload(8, ("c",))
    assert t.unloading("a") and t.unloading("c") and not t.unloading("d")
    assert t.collides("a", ())  # starting a model being unloaded
    assert t.collides("d", ("c",))  # evicting a model being unloaded
    assert not t.collides("d", ("e",))
    assert t.unload_items() == ((7, ("a", "b")), (8, ("c",)))
    assert t.end_unload(7) and not t.end_unload(7)
    assert t.end_unloads() == [8]
    assert t.unload_count == 0 and not t.unloading("c")


def test_drop_all_returns_swaps_in_start_order() -> None:
    t = SwapTable()
    t.start("b", (), 1)
    t.start("a", (), 2)
    assert [s.target for s in t.drop_all()] == ["b", "a"]
    assert list(t.targets()) == [] and repr(t) == "<SwapTable swaps=0 unloads=0>"
