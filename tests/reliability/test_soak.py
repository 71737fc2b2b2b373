"""The soak (``bench/soak.py``) in miniature: same code, 400 requests from 16 clients.

Crash injection is raised to 20 % of upstream starts so that a short run
still sees crashes; the unload-all comes every 5 s instead of 30 s. The soak
exits non-zero when any of its checks fails, and prints why.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modelswap.testing.fake_process import fake_upstream_env

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_short_soak(tmp_path: Path) -> None:
    report_path = tmp_path / "soak.json"
    argv = [sys.executable, str(SOAK), "--requests", "400", "--clients", "16"]
    argv += ["--unload-every", "5", "--crash-ratio", "0.2", "--startup-max", "0.6"]
    argv += ["--request-deadline", "30", "--time-limit", "100", "--json", str(report_path)]
    done = subprocess.run(argv, capture_output=True, timeout=140, env=fake_upstream_env())
    assert done.returncode == 0, done.stdout.decode()[-4000:] + done.stderr.decode()[-4000:]
    report = json.loads(report_path.read_text())
    assert report["failures"] == []
    assert sum(report["outcomes"].values()) == 400
    assert report["upstream_starts"] >= 2 and report["upstream_survivors"] == []
    assert report["modelswap_exit_code"] == 0
    assert report["crashes"] >= 1  # seed 1 plans 4 crashing starts out of ~45
