"""The reliability run (``bench/edge.py``) must keep running: one quick pass.

Only the shape of the report is checked -- every phase ran and came back
with figures -- never what the figures say about the gateway: that is the
run's job to show and a version's to improve, and a smoke run's numbers mean
little.  The one thing asserted outright is that the bench itself did not
fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("websockets", reason="the reliability run's clients use websockets")

ROOT = Path(__file__).resolve().parents[1]


def _count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and x >= 0


def test_edge_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "edge.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "edge.py"), "--quick",
                           "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["bench_errors"] == []
    meta = data["meta"]
    assert meta["commit"] and meta["python"] and meta["libraries"]["picows"]
    for title in ("Fuzzed client frames", "Slowloris and idle connections", "Descriptor limit",
                  "Crash durability"):
        assert title in proc.stdout

    phases = data["phases"]
    assert set(phases) == {"fuzz", "hold", "fdlimit", "durability"}
    for phase, per in phases.items():
        assert "bench_error" not in per["openopen8"], (phase, per["openopen8"])

    fuzz = phases["fuzz"]["openopen8"]
    assert 0 < fuzz["frames_sent"] <= fuzz["frames_planned"]
    for key in ("errors_answered", "errors_from_gateway", "errors_from_upstream",
                "sessions_opened", "sessions_ended_by_gateway", "gateway_crashes",
                "healthz_unanswered", "log_bytes", "log_error_lines"):
        assert _count(fuzz[key]), (key, fuzz[key])
    assert sum(fuzz["frames_answered"].values()) + fuzz["sessions_ended_by_gateway"] \
        >= fuzz["frames_sent"] - fuzz["echo_timeouts"]

    hold = phases["hold"]["openopen8"]
    for side in ("slowloris", "idle"):
        h = hold[side]
        assert h["connected"] > 0 and _count(h["closed"]) and _count(h["still_open_at_cap"])
        assert h["closed"] + h["still_open_at_cap"] == h["connected"]
        if h["closed"]:
            assert _number(h["closed_after_s"]["median"])
    assert hold["valid_sessions_tried"] == 3 and _count(hold["valid_sessions_ok"])
    assert hold["healthz_tried"] == 3 and _count(hold["healthz_ok"])

    fd = phases["fdlimit"]["openopen8"]
    assert fd["nofile"] == 256 and fd["connections_opened"] > 0
    for key in ("cpu_pct_before", "cpu_pct", "cpu_pct_after", "log_bytes", "log_bytes_per_s"):
        assert _number(fd[key]), (key, fd[key])
    assert fd["healthz_tried"] > 0 and _count(fd["healthz_ok"])
    assert isinstance(fd["valid_session_ok"], bool)

    dur = phases["durability"]["openopen8"]
    assert set(dur["by_delay"]) == {"0.1", "0.3", "1"}
    for d in dur["by_delay"].values():
        assert d["runs"] == 1 and d["responses_done"] > 0
        for key in ("rows", "sessions_open_after_kill", "sessions_open_after_restart"):
            assert _count(d[key]), (key, d)
        assert d["rows_lost"] == d["responses_done"] - d["rows"]
    for t in dur["trials"]:
        assert t["killed_after_s"] >= t["delay_s"]
