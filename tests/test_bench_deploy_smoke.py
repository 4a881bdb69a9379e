"""bench/deploy.py must keep running: a quick run (two serve processes on
PostgreSQL behind two nginx, tiny N).  Only the shape of the results is
checked, never a timing: the figures mean something only in a full run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.postgres


def test_deploy_benchmark_quick(tmp_path: Path) -> None:
    out = tmp_path / "deploy.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "deploy.py"), "--quick",
                           "--steps", "6", "--turn-every", "5", "--json", str(out)],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    for name in ("nginx>1", "nginx>2"):
        steps = [s for s in data["steps"] if s["target"] == name]
        assert steps and all(s["ok"] for s in steps)
        assert set(steps[0]["cpu_s_apart"]) == ({"nginx", "gw0"} if name == "nginx>1"
                                                 else {"nginx", "gw0", "gw1"})
        assert data["summary"][name]["sessions_per_core_cpu_model"]["gateway"] > 0
    pg = data["postgres"]
    assert pg["ledger_rows"] > 0 and pg["commits"] > 0     # turns were billed in PostgreSQL
    assert "sessions per gateway core" in proc.stdout
