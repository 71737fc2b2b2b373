"""Shared pytest fixtures. Keep this small and generic; topic fixtures live next to their tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psutil
import pytest

#: Every child the test run spawns inherits this variable (children copy our
#: environment), so even an orphan re-parented away from pytest can be found.
RUN_MARKER = "MODELSWAP_TEST_RUN"
FAKE_UPSTREAM_MODULE = "modelswap.testing.fake_upstream"


def _leftovers(token: str) -> list[psutil.Process]:
    """Processes this test run started that are still alive (zombies excluded)."""
    me = psutil.Process()
    found: dict[int, psutil.Process] = {}
    for proc in me.children(recursive=True):
        try:
            if FAKE_UPSTREAM_MODULE in " ".join(proc.cmdline()):
                found[proc.pid] = proc
        except psutil.Error:
            continue
    for proc in psutil.process_iter():
        if proc.pid == me.pid or proc.pid in found:
            continue
        try:
            if proc.environ().get(RUN_MARKER) == token:
                found[proc.pid] = proc
        except psutil.Error:  # not ours to read, or gone
            continue
    alive = []
    for proc in found.values():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.Error:
            continue
    return alive


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_test_run() -> Iterator[None]:
    """A test that no process from the test run is alive afterwards.

    Fails the session (at teardown of the last test) if any fake upstream this
    pytest process started, or anything carrying this run's marker, survived;
    the survivors are killed so they cannot leak into the next run either.
    """
    token = uuid.uuid4().hex
    previous = os.environ.get(RUN_MARKER)
    os.environ[RUN_MARKER] = token
    yield
    if previous is None:
        os.environ.pop(RUN_MARKER, None)
    else:
        os.environ[RUN_MARKER] = previous
    survivors = _leftovers(token)
    described = []
    for proc in survivors:
        try:
            described.append(f"{proc.pid}: {' '.join(proc.cmdline())[:200]}")
            proc.kill()
        except psutil.Error:
            continue
    assert not described, "processes from the test run still alive:\n" + "\n".join(described)
