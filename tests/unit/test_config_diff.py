"""``diff_configs``: what a reload changes, computed from two loaded configs (pure)."""

from __future__ import annotations

import dataclasses

import pytest

from modelswap.config import Config, load_config_text
from modelswap.config.diff import PROCESS_FIELDS, diff_configs
from modelswap.process import ProcessSpec
from modelswap.router.build import process_specs

BASE = """
healthCheckTimeout: 30
macros:
  bin: /opt/server
models:
  a:
    cmd: ${bin} --port ${PORT} -m a
    proxy: http://127.0.0.1:${PORT}
  b:
    cmd: ${bin} --port ${PORT} -m b
    proxy: http://127.0.0.1:${PORT}
    name: B
"""


def load(text: str) -> Config:
    return load_config_text(text, "c.yaml", environ={}).config


def test_identical_configs_differ_in_nothing() -> None:
    diff = diff_configs(load(BASE), load(BASE))
    assert diff.empty
    assert diff.unchanged == ("a", "b")
    assert diff.summary()["changed"] == []


def test_an_edit_that_expands_to_the_same_definition_is_no_change() -> None:
    spelled_out = BASE.replace("${bin}", "/opt/server")
    diff = diff_configs(load(BASE), load(spelled_out))
    assert diff.unchanged == ("a", "b") and diff.empty
    assert not diff.changed and not diff.updated


def test_a_macro_change_changes_every_model_using_it() -> None:
    diff = diff_configs(load(BASE), load(BASE.replace("/opt/server", "/usr/bin/server")))
    assert diff.changed == ("a", "b") and diff.unchanged == ()


def test_display_settings_update_without_a_restart() -> None:
    diff = diff_configs(load(BASE), load(BASE.replace("name: B", "name: Bee\n    aliases: [bee]")))
    assert diff.updated == ("b",) and diff.changed == () and diff.unchanged == ("a",)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("cmdStop", "kill ${PID}"),
        ("env", '["X=1"]'),
        ("checkEndpoint", "/ready"),
        ("ttl", "60"),
        ("unloadTimeout", "3"),
    ],
)
def test_process_settings_need_a_restart(key: str, value: str) -> None:
    edited = BASE.replace("    name: B", f"    name: B\n    {key}: {value}")
    diff = diff_configs(load(BASE), load(edited))
    assert diff.changed == ("b",) and diff.unchanged == ("a",)


def test_added_and_removed_models() -> None:
    edited = BASE + "  z:\n    cmd: x --port ${PORT}\n    proxy: http://h:${PORT}\n"
    diff = diff_configs(load(BASE), load(edited))
    assert diff.added == ("z",) and diff.unchanged == ("a", "b")
    diff = diff_configs(load(edited), load(BASE))
    assert diff.removed == ("z",) and diff.unchanged == ("a", "b")


def test_ports_follow_model_ids_so_a_new_id_can_shift_the_next_ones() -> None:
    """``${PORT}`` is allocated in sorted ID order: "aa" takes b's port, so b restarts."""
    edited = BASE + "  aa:\n    cmd: x --port ${PORT}\n    proxy: http://h:${PORT}\n"
    diff = diff_configs(load(BASE), load(edited))
    assert diff.added == ("aa",) and diff.changed == ("b",) and diff.unchanged == ("a",)


def test_global_sections_are_reported_by_their_config_keys() -> None:
    edited = BASE + (
        "apiKeys: [k]\n"
        "groups:\n  g:\n    members: [a, b]\n"
        "routing:\n  scheduler:\n    settings:\n      fifo:\n        priority: {a: 3}\n"
        "profiles:\n  p:\n    pins: {x: a}\n"
    )
    diff = diff_configs(load(BASE), load(edited))
    assert diff.sections == ("apiKeys", "groups", "priority", "profiles")
    assert diff.unchanged == ("a", "b") and diff.restart_only == ()


def test_restart_only_keys_are_warned_about() -> None:
    diff = diff_configs(load(BASE), load(BASE + "logLevel: debug\ncaptureBuffer: 9\n"))
    assert diff.restart_only == ("captureBuffer", "logLevel")
    assert diff.warnings(("tls-cert-file",)) == (
        "captureBuffer changed: it takes effect only after a restart",
        "logLevel changed: it takes effect only after a restart",
        "tls-cert-file changed: it takes effect only after a restart",
    )
    assert not diff.empty


def test_health_check_timeout_reaches_every_model() -> None:
    diff = diff_configs(load(BASE), load(BASE.replace("healthCheckTimeout: 30", "")))
    assert diff.changed == ("a", "b") and "healthCheckTimeout" in diff.sections


def test_process_fields_cover_every_process_spec_input() -> None:
    """A model whose process spec differs is always "changed", never merely "updated".

    The router replaces a process when its spec differs; the diff must agree,
    or a reload would report "updated" for a model it actually restarts.
    """
    spec_fields = {f.name for f in dataclasses.fields(ProcessSpec)} - {"model_id"}
    assert spec_fields <= set(PROCESS_FIELDS)
    old, new = load(BASE), load(BASE.replace("name: B", "name: Bee"))
    assert process_specs(old) == process_specs(new)  # an update keeps the spec


def test_declared_resources_are_an_update_and_the_budget_a_routing_change() -> None:
    """``resources:`` only tell the memory policy what to count: no restart for them."""
    old = load(BASE)
    new = load(
        BASE.replace("    name: B", "    name: B\n    resources: {vram: 10GiB}")
        + "routing:\n  resources: {vram: 24GiB}\n"
    )
    diff = diff_configs(old, new)
    assert diff.updated == ("b",) and diff.changed == ()
    assert "routing.resources" in diff.sections
    assert process_specs(old) == process_specs(new)
