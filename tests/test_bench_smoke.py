"""The relay benchmark must keep running: a tiny, quick run without LiteLLM.

Only the shape of the results is checked (every figure present and
positive), never a timing threshold: CI machines are noisy and the
benchmark's numbers mean something only in a full run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("picows", reason="the benchmark's stand-in and load generator use picows")

ROOT = Path(__file__).resolve().parents[1]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and x == x and x > 0


def test_relay_benchmark_quick(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "relay.py"), "--quick", "--skip-litellm",
         "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert elapsed < 30, f"the quick benchmark took {elapsed:.1f} s"

    data = json.loads(out.read_text())
    targets = data["targets"]
    relays = ["bare-picows", "bare-aiohttp", "bare-websockets", "openopen8"]
    for name in ["direct", *relays]:
        assert targets[name]["ok"], targets[name]
    assert "litellm" not in targets
    assert targets["openopen8"]["stages"], targets["openopen8"]

    summary = data["summary"]["targets"]
    for name in relays:
        s = summary[name]
        assert _positive(s["cpu_s_per_10k_rt"]), (name, s)
        assert _positive(s["flood_audio_events_per_s"]), (name, s)
        assert _positive(s["flood_echo_events_per_s"]), (name, s)
        assert _positive(s["flood_echo_cpu_s_per_10k_rt"]), (name, s)
        assert _positive(s["idle_kb_per_session"]), (name, s)
        assert isinstance(s["max_sessions"], int), (name, s)
        for n, added in s["added_ms"].items():
            assert isinstance(added["p50"], float) and isinstance(added["p99"], float), (name, n)
    assert _positive(summary["direct"]["flood_echo_events_per_s"])

    steps = data["steps"]
    assert {s["n"] for s in steps} == set(data["meta"]["steps"])
    for s in steps:
        lat = s["latency_ms"]
        assert _positive(lat["p50"]) and _positive(lat["p99"]) and lat["p99"] >= lat["p50"]
        assert _positive(s["rt_per_s"])
        if s["target"] != "direct":
            assert _positive(s["relay_cpu_per_10k_rt"]), s

    ratios = data["summary"]["ratios"]
    assert _positive(ratios["cpu_openopen8_over_bare"])
    assert _positive(ratios["cpu_openopen8_over_bare-aiohttp"])


def test_relay_benchmark_quota_variant(tmp_path: Path) -> None:
    """``--openopen8-quota`` runs a second gateway whose token has a quota."""
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "relay.py"), "--quick", "--skip-litellm",
         "--targets", "openopen8", "--openopen8-quota", "1", "--phases", "cpu",
         "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["targets"]["openopen8[quota]"]["ok"], data["targets"]
    assert _positive(data["summary"]["targets"]["openopen8[quota]"]["cpu_s_per_10k_rt"])
    assert "openopen8[quota]" in proc.stdout          # the report names it (rich markup escaped)
