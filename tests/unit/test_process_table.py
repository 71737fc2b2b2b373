"""The router's process table across reloads, and the watcher's fingerprint of the sources.

No event loop, no children: ``ManagedProcess`` objects are built but never
started, which is all the table needs (it compares definitions and moves
objects).
"""

from __future__ import annotations

from pathlib import Path

from modelswap.process import ManagedProcess, ProcessSpec, ProcessState, StateChange
from modelswap.router.process_table import ProcessTable
from modelswap.server.config_watch import fingerprint


def spec(model: str, cmd: str = "serve") -> ProcessSpec:
    return ProcessSpec(model, f"{cmd} {model}", "http://127.0.0.1:1")


def table(*models: str) -> tuple[ProcessTable, list[StateChange]]:
    seen: list[StateChange] = []
    processes = {m: ManagedProcess(spec(m)) for m in models}
    return ProcessTable(processes, ManagedProcess, seen.append), seen


def test_unchanged_processes_are_the_same_objects() -> None:
    t, _ = table("a", "b")
    before = dict(t.current)
    assert t.reconfigure({"a": spec("a"), "b": spec("b")}) == frozenset()
    assert t.current == before and all(t[m] is before[m] for m in before)


def test_changed_and_removed_models_wait_for_retirement() -> None:
    t, _ = table("a", "b", "c")
    old_b = t["b"]
    replace = t.reconfigure({"a": spec("a"), "b": spec("b", "other"), "d": spec("d")})
    assert replace == {"b", "c"}
    assert t["b"] is old_b and "c" in t.current  # still serving until retired
    assert t["d"].spec == spec("d")  # added: in place at once
    assert t.install_successor("b") is old_b
    assert t["b"].spec == spec("b", "other") and t["b"] is not old_b
    t.install_successor("c")
    assert sorted(t.current) == ["a", "b", "d"]
    assert t.install_successor("a") is None  # nothing pending


def test_every_process_includes_successors_not_yet_in_place() -> None:
    t, _ = table("a")
    t.reconfigure({"a": spec("a", "other")})
    assert len(t.every_process()) == 2


def test_a_model_changed_twice_while_retiring_gets_the_newest_definition() -> None:
    t, _ = table("a")
    t.reconfigure({"a": spec("a", "v2")})
    assert t.reconfigure({"a": spec("a", "v3")}) == {"a"}
    t.install_successor("a")
    assert t["a"].spec == spec("a", "v3")


def test_removed_then_readded_while_draining_comes_back_with_the_new_definition() -> None:
    t, _ = table("a")
    assert t.reconfigure({}) == {"a"}
    assert t.reconfigure({"a": spec("a", "again")}) == {"a"}
    t.install_successor("a")
    assert t["a"].spec == spec("a", "again")


def test_the_listener_follows_the_model_to_its_successor() -> None:
    t, seen = table("a")
    old = t["a"]
    t.reconfigure({"a": spec("a", "v2")})
    t.install_successor("a")
    old._set_state(ProcessState.STARTING)  # the retired object is no longer heard
    t["a"]._set_state(ProcessState.STARTING)
    assert [(c.model_id, c.new) for c in seen] == [("a", ProcessState.STARTING)]


def test_fingerprint_sees_edits_and_files_added_to_the_config_dir(tmp_path: Path) -> None:
    main, conf_dir = tmp_path / "config.yaml", tmp_path / "conf.d"
    conf_dir.mkdir()
    main.write_text("models: {}\n")
    (conf_dir / "a.yaml").write_text("x: 1\n")
    first = fingerprint(str(main), str(conf_dir))
    assert [Path(p).name for p, _ in first] == ["config.yaml", "a.yaml"]
    assert fingerprint(str(main), str(conf_dir)) == first  # stable when nothing changed
    (conf_dir / "b.yml").write_text("y: 2\n")
    second = fingerprint(str(main), str(conf_dir))
    assert len(second) == 3
    (conf_dir / "a.yaml").write_text("x: 2\n")
    assert fingerprint(str(main), str(conf_dir)) != second
    (conf_dir / "notes.txt").write_text("ignored")
    main.unlink()
    assert [p for p, digest in fingerprint(str(main), str(conf_dir)) if not digest] == [str(main)]
