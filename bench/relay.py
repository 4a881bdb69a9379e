"""The relay benchmark: openopen8 against a direct connection, bare forwarders
and LiteLLM's proxy, in one run on loopback.

    python bench/relay.py [--quick] [--json out.json] [--max-sessions N] [--skip-litellm] ...

Pieces, each its own OS process so that each one's CPU is read apart:

* a stand-in upstream (``bench/standin.py``, picows) that answers every 20 ms
  audio append with one 20 ms audio delta and echoes ``bench.echo``;
* the targets: ``direct`` (straight to the stand-in), bare forwarders
  (``bench/forwarders.py``: picows, aiohttp, websockets), ``openopen8`` (a real
  ``openopen8 serve`` with a token and a channel pointing at the stand-in,
  every stage that has landed switched on) and ``litellm`` (its proxy,
  installed by this script into its own virtual environment, configured
  against the same stand-in as an OpenAI realtime model);
* load generators (``bench/loadgen.py``, picows clients) in separate
  processes.

Figures: p50/p99 round trip per target and N, and *added* to the direct
connection's at the same N; the largest N whose added p99 stays under the
limit (20 ms); round trips per second in a single-session flood; the relay
process's own CPU-seconds per 10,000 round trips (user+system from the OS,
summed over its process tree); resident memory per idle session; and the
ratios openopen8 / bare forwarder and openopen8 / LiteLLM.  A round trip is
one client event up and one server event down (two events relayed).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import psutil  # noqa: E402

from loadgen import percentiles, worker_main  # noqa: E402

MODEL = "gpt-realtime"
LIMIT_MS = 20.0
DEFAULT_STEPS = [10, 25, 50, 100, 150, 200, 300, 400, 600, 800, 1000]
QUICK_STEPS = [4, 8]
BARE = ["bare-picows", "bare-aiohttp", "bare-websockets"]
ALL_TARGETS = ["direct", *BARE, "openopen8", "litellm"]
LITELLM_SPEC = "litellm[proxy]"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- processes ----------------------------------------------------------------

def _proc_cpu(q: psutil.Process) -> float:
    """CPU-seconds of one process: the scheduler's nanosecond counters of its
    threads (/proc/PID/task/TID/schedstat), else the tick-granular cpu_times."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{q.pid}/task"):
            with open(f"/proc/{q.pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        t = q.cpu_times()
        return t.user + t.system


def tree_cpu(pid: int) -> float:
    """CPU-seconds (user+system) of a process and its live descendants."""
    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.Error:
        return float("nan")
    total = 0.0
    for q in procs:
        try:
            total += _proc_cpu(q)
        except psutil.Error:
            pass
    return total


def tree_rss(pid: int) -> int:
    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.Error:
            pass
    return total


def start_ready(cmd: list[str], log_path: Path, env: dict | None = None,
                timeout: float = 30) -> tuple[subprocess.Popen, int]:
    """Start a helper that prints "READY <port>" once listening."""
    logf = open(log_path, "ab")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=logf, env=env, cwd=ROOT,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    while time.monotonic() < deadline:
        if sel.select(timeout=0.2):
            line = proc.stdout.readline().decode().strip()
            if line.startswith("READY "):
                return proc, int(line.split()[1])
            if not line and proc.poll() is not None:
                break
        if proc.poll() is not None:
            break
    stop_proc(proc)
    raise RuntimeError(f"{cmd[1]} did not start (see {log_path})")


def stop_proc(proc: subprocess.Popen | None, grace: float = 5) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def wait_http(url: str, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout:g} s")


# ---- targets ------------------------------------------------------------------

@dataclass
class Target:
    name: str
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    pid: int | None = None          # the process whose CPU/RSS is the relay's
    #: more processes whose CPU is read apart over the same window (name -> pid;
    #: bench/deploy.py: the proxy and each gateway instance behind it)
    pids: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.url)


def setup_bare(name: str, upstream: str, run_dir: Path, loop: str) -> Target:
    lib = name.split("-", 1)[1]
    t = Target(name)
    t.info["loop"] = loop
    try:
        t.proc, port = start_ready([sys.executable, str(BENCH / "forwarders.py"), lib,
                                    "--upstream", upstream, "--loop", loop],
                                   run_dir / f"{name}.log")
    except Exception as exc:  # noqa: BLE001
        t.error = str(exc)
        return t
    t.pid = t.proc.pid
    t.url = f"ws://127.0.0.1:{port}/v1/realtime?model={MODEL}"
    t.info["library"] = f"{lib} {_version(lib)}"
    return t


def _version(mod: str) -> str:
    try:
        from importlib.metadata import version
        return version(mod)
    except Exception:  # noqa: BLE001
        return "?"


def openopen8_source(ref: str, run_dir: Path) -> Path:
    """This repository's ``openopen8`` package at git ``ref``, unpacked apart
    (no worktree) so an older commit can run beside this checkout."""
    dest = run_dir / f"src-{ref.replace('/', '_')}"
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", ref, "openopen8"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def setup_openopen8(upstream_http: str, run_dir: Path, name: str = "openopen8",
                    src: Path = ROOT, extra_env: dict[str, str] | None = None,
                    token_args: list[str] | None = None) -> Target:
    """A real `openopen8 serve` (this checkout, or ``src``), a token and a channel."""
    t = Target(name)
    slug = "".join(c if c.isalnum() else "_" for c in name)
    data = run_dir / f"{slug}-data"
    env = {**os.environ, "PYTHONPATH": str(src) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OPENOPEN8_DATA_DIR": str(data), "OPENOPEN8_LOCAL_ENGINE": "false"}
    for k in ("OPENOPEN8_DATABASE_URL", "OPENOPEN8_CONFIG"):
        env.pop(k, None)
    for k, v in (extra_env or {}).items():
        env[k] = v + os.pathsep + env[k] if k == "PYTHONPATH" else v
    t.info["env"] = extra_env or {}
    cli = [sys.executable, "-m", "openopen8.cli"]
    try:
        out = subprocess.run([*cli, "tokens", "create", "bench", "--json", *(token_args or [])],
                             env=env, cwd=src, capture_output=True, text=True, timeout=120,
                             check=True)
        secret = json.loads(out.stdout.strip().splitlines()[-1])["secret"]
        subprocess.run([*cli, "channels", "add", "standin", "--type", "openai", "--key", "sk-bench",
                        "--base-url", upstream_http + "/v1", "--models", MODEL],
                       env=env, cwd=src, capture_output=True, text=True, timeout=120, check=True)
        port = free_port()
        logf = open(run_dir / f"{slug}.log", "ab")
        t.proc = subprocess.Popen([*cli, "serve", "--host", "127.0.0.1", "--port", str(port)],
                                  env=env, cwd=src, stdout=logf, stderr=logf,
                                  start_new_session=True)
        # meanwhile: which package and which stages this checkout serves
        probe = subprocess.Popen([sys.executable, "-c", _OO8_PROBE], env=env, cwd=src,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_http(f"http://127.0.0.1:{port}/healthz", 60, t.proc)
        out, err = probe.communicate(timeout=60)
        lines = out.strip().splitlines()
        t.info["package"] = lines[0] if lines else f"? {err.strip()[-200:]}"
        stages = lines[1] if len(lines) > 1 else "?"
        t.info["stages"] = (stages.split(",") if not stages.startswith("?")
                            else f"unknown ({stages} {err.strip()[-200:]})")
    except subprocess.CalledProcessError as exc:
        t.error = f"openopen8 setup failed: {(exc.stderr or exc.stdout or '').strip()[-400:]}"
        return t
    except Exception as exc:  # noqa: BLE001
        t.error = f"openopen8 did not start: {exc} (see {run_dir / (slug + '.log')})"
        stop_proc(t.proc)
        return t
    t.pid = t.proc.pid
    t.url = f"ws://127.0.0.1:{port}/v1/realtime?model={MODEL}"
    t.headers = {"Authorization": f"Bearer {secret}"}
    return t


#: prints the openopen8 package path, then the stages its pipeline can put in a
#: session's chain (what has landed; which of them a session gets depends on
#: its token and channel: a metered token and a GA upstream here)
_OO8_PROBE = """
import openopen8
print(openopen8.__file__)
try:
    from openopen8 import pipeline
    def stage(c):
        return hasattr(c, 'on_client') and c.__module__.startswith('openopen8.stages')
    objs = list(vars(pipeline).values())
    inst = [v for v in objs if not isinstance(v, type) and stage(type(v))]
    names = [getattr(v, 'name', type(v).__name__) for v in inst]
    seen = {type(v) for v in inst}
    names += [c.__name__ for c in objs if isinstance(c, type) and stage(c) and c not in seen]
    print(','.join(names))
except Exception as e:
    print('?', type(e).__name__, e)
"""


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        return "?"


def litellm_venv(path: Path, spec: str) -> Path:
    """The venv with LiteLLM's proxy, created and installed on first use."""
    exe = path / "bin" / "litellm"
    if exe.exists():
        return exe
    log(f"installing {spec} into {path} (first run only; a few minutes) …")
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    r = subprocess.run([str(path / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        spec], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0 or not exe.exists():
        tail = "\n".join(line for line in r.stderr.splitlines()
                         if "is ignored: it is neither a file" not in line)[-600:]
        raise RuntimeError(f"pip install {spec} failed: {tail}")
    return exe


def setup_litellm(upstream_http: str, run_dir: Path, venv: Path, spec: str) -> Target:
    t = Target("litellm")
    try:
        exe = litellm_venv(venv, spec)
    except Exception as exc:  # noqa: BLE001
        t.error = f"LiteLLM could not be installed: {exc}"
        return t
    ver = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "from importlib.metadata import version as v; print(v('litellm'))"],
                         capture_output=True, text=True).stdout.strip()
    t.info["version"] = ver or "?"
    master = "sk-bench-master"
    cfg = run_dir / "litellm.yaml"
    cfg.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        "      api_key: sk-bench\n"
        f"      api_base: {upstream_http}\n"
        "    model_info:\n"
        "      mode: realtime\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "general_settings:\n"
        f"  master_key: {master}\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENOPEN8_", "DATABASE_URL"))}
    env.pop("PYTHONPATH", None)
    env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
                "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true", "DISABLE_ADMIN_UI": "True",
                "NO_DOCS": "True", "LITELLM_LOG": "ERROR", "HOME": str(run_dir / "litellm-home")})
    (run_dir / "litellm-home").mkdir(exist_ok=True)
    logf = open(run_dir / "litellm.log", "ab")
    try:
        t.proc = subprocess.Popen([str(exe), "--config", str(cfg), "--host", "127.0.0.1",
                                   "--port", str(port), "--num_workers", "1"],
                                  env=env, cwd=run_dir, stdout=logf, stderr=logf,
                                  start_new_session=True)
        wait_http(f"http://127.0.0.1:{port}/health/liveliness", 180, t.proc)
    except Exception as exc:  # noqa: BLE001
        t.error = f"LiteLLM proxy did not start: {exc} (see {run_dir / 'litellm.log'})"
        stop_proc(t.proc)
        return t
    t.pid = t.proc.pid
    t.url = f"ws://127.0.0.1:{port}/v1/realtime?model={MODEL}"
    t.headers = {"Authorization": f"Bearer {master}"}
    return t


# ---- load ---------------------------------------------------------------------

class Load:
    """The load-generator processes."""

    def __init__(self, procs: int) -> None:
        ctx = mp.get_context("spawn")
        self.conns = []
        self.procs = []
        for _ in range(procs):
            a, b = ctx.Pipe()
            p = ctx.Process(target=worker_main, args=(b,), daemon=True)
            p.start()
            self.conns.append(a)
            self.procs.append(p)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def call_all(self, cmds: list[dict], timeout: float = 300) -> list[dict]:
        for c, cmd in zip(self.conns, cmds):
            c.send(cmd)
        out = []
        for c in self.conns[:len(cmds)]:
            if not c.poll(timeout):
                raise RuntimeError("load generator did not answer")
            out.append(c.recv())
        for r in out:
            if "exception" in r:
                raise RuntimeError(f"load generator failed: {r['exception']}")
        return out

    def connect(self, t: Target, n: int, workers: int | None = None) -> dict:
        """Open ``n`` sessions to ``t``, spread over the workers (group ``t.name``)."""
        k = min(workers or len(self.conns), max(n, 1))
        parts = [n // k + (1 if i < n % k else 0) for i in range(k)]
        rs = self.call_all([{"op": "connect", "url": t.url, "headers": t.headers, "n": p,
                             "group": t.name} for p in parts])
        return {"ok": sum(r["ok"] for r in rs), "failed": sum(r["failed"] for r in rs),
                "error": next((r["error"] for r in rs if r["error"]), None), "parts": parts}

    def close(self) -> None:
        self.call_all([{"op": "close"} for _ in range(len(self.conns))])

    def quit(self) -> None:
        for c in self.conns:
            try:
                c.send({"op": "quit"})
            except Exception:  # noqa: BLE001
                pass
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()


#: seconds between opening the sessions and the start of the load (set by --quick)
PAUSE = 0.3


def measure(load: Load, t: Target, standin_pid: int, *, n: int, mode: str, warm: float,
            dur: float, drain: float, window: int = 32, echo: bool = False) -> dict[str, Any]:
    """Open ``n`` sessions through ``t``, run the load, close them."""
    return measure_many(load, [t], standin_pid, n=n, mode=mode, warm=warm, dur=dur,
                        drain=drain, window=window, echo=echo)[t.name]


def measure_many(load: Load, targets: list[Target], standin_pid: int, *, n: int, mode: str,
                 warm: float, dur: float, drain: float, window: int = 32,
                 echo: bool = False) -> dict[str, dict[str, Any]]:
    """``n`` sessions through *each* of ``targets`` at once, over one window:
    every process sees the same neighbours, so their CPU figures pair up."""
    results: dict[str, dict[str, Any]] = {
        t.name: {"target": t.name, "n": n, "mode": mode + ("-echo" if echo else "")}
        for t in targets}
    nworkers = len(load.conns)
    counts = [0] * nworkers
    for t in targets:
        c = load.connect(t, n, workers=1 if mode == "flood" else None)
        for i, p in enumerate(c["parts"]):
            counts[i] += p
        if c["failed"]:
            load.close()
            for r in results.values():
                r.update(ok=False, error=f"{t.name}: {c['failed']} of {n} sessions failed to "
                         f"open: {c['error']}")
            return results
    t0 = time.monotonic() + PAUSE
    cmds, first = [], 0
    total = sum(counts)
    for part in counts:
        if part:
            cmds.append({"op": "run", "mode": mode, "t0": t0, "warm": warm, "dur": dur,
                         "drain": drain, "first_index": first, "total": total, "window": window,
                         "echo": echo})
        first += part
    for conn, cmd in zip(load.conns, cmds):
        conn.send(cmd)
    pids = {t.name: t.pid for t in targets if t.pid}
    time.sleep(max(0.0, t0 + warm - time.monotonic()))
    cpu0 = {name: tree_cpu(pid) for name, pid in pids.items()}
    cpu_s0 = tree_cpu(standin_pid)
    apart_pids = {(t.name, k): pid for t in targets for k, pid in t.pids.items()}
    apart0 = {key: tree_cpu(pid) for key, pid in apart_pids.items()}
    time.sleep(max(0.0, t0 + warm + dur - time.monotonic()))
    cpu1 = {name: tree_cpu(pid) for name, pid in pids.items()}
    cpu_s1 = tree_cpu(standin_pid)
    apart = {key: tree_cpu(pid) - apart0[key] for key, pid in apart_pids.items()}
    outs = []
    for conn in load.conns[:len(cmds)]:
        if not conn.poll(warm + dur + drain + 60):
            raise RuntimeError("load generator did not answer")
        outs.append(conn.recv())
    for o in outs:
        if "exception" in o:
            raise RuntimeError(f"load generator failed: {o['exception']}")
    load.close()
    all_rts = sum(g["recv_in_window"] for o in outs for g in o.values())
    for t in targets:
        res = results[t.name]
        groups = [o[t.name] for o in outs if t.name in o]
        samples = array("q")
        for g in groups:
            samples.frombytes(g["samples_ns"])
        sent = sum(g["sent_in_window"] for g in groups)
        rts = sum(g["recv_in_window"] for g in groups)
        lost = sent - len(samples)
        disconnects = sum(g["disconnects"] for g in groups)
        share = rts / all_rts if all_rts else 0.0   # the shared processes' CPU, pro rata
        res.update(
            ok=bool(samples) and disconnects == 0 and lost <= max(2, sent // 1000),
            latency_ms=percentiles(samples), sent=sent, replies=len(samples), lost=lost,
            disconnects=disconnects, round_trips=rts, rt_per_s=rts / dur,
            relay_cpu_s=(cpu1[t.name] - cpu0[t.name]) if t.name in pids else None,
            standin_cpu_s=(cpu_s1 - cpu_s0) * share,
            loadgen_cpu_s=sum(o[next(iter(o))]["cpu"] for o in outs) * share,
            duration_s=dur,
        )
        if t.pids:
            res["cpu_s_apart"] = {name: apart[(t.name, name)] for name in t.pids}
        if len(targets) > 1:
            res["concurrent_with"] = [x.name for x in targets if x is not t]
        if t.name in pids and rts:
            res["relay_cpu_per_10k_rt"] = res["relay_cpu_s"] / rts * 10_000
            res["relay_cpu_util"] = res["relay_cpu_s"] / dur
        if rts:
            res["standin_cpu_per_10k_rt"] = res["standin_cpu_s"] / rts * 10_000
        res["loadgen_cpu_util"] = res["loadgen_cpu_s"] / (warm + dur + drain)
        if not res["ok"]:
            res["error"] = (f"lost {lost} of {sent} replies, {disconnects} disconnects"
                            if samples else "no replies")
    return results


def idle_memory(load: Load, t: Target, k: int, settle: float) -> dict[str, Any]:
    """RSS growth of the relay's process tree per open, idle session."""
    time.sleep(settle)
    rss0 = tree_rss(t.pid)
    c = load.connect(t, k)
    if c["failed"]:
        load.close()
        return {"error": f"{c['failed']} of {k} idle sessions failed: {c['error']}"}
    time.sleep(settle)
    rss1 = tree_rss(t.pid)
    load.close()
    return {"sessions": k, "rss_before_mb": rss0 / 2**20, "rss_after_mb": rss1 / 2**20,
            "kb_per_session": (rss1 - rss0) / k / 1024}


# ---- the run ------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Relay benchmark: openopen8 vs direct, bare "
                                 "forwarders and LiteLLM's proxy, on loopback.")
    ap.add_argument("--quick", action="store_true",
                    help="tiny N and short windows (a smoke run, numbers not meaningful)")
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    ap.add_argument("--max-sessions", type=int, default=None, help="highest N to try")
    ap.add_argument("--steps", help="comma-separated N to step through "
                    f"(default {','.join(map(str, DEFAULT_STEPS))})")
    ap.add_argument("--targets", help=f"comma-separated subset of {','.join(ALL_TARGETS)}")
    ap.add_argument("--openopen8-at", action="append", default=[], metavar="GITREF|DIR",
                    help="also run openopen8 as of this commit (unpacked with git archive) or "
                    "from this source directory, beside this checkout: before/after in one "
                    "run (repeatable)")
    ap.add_argument("--openopen8-env", action="append", default=[], metavar="NAME:K=V[,K=V]",
                    help="also run this checkout with extra environment, as target "
                    "openopen8[NAME] (repeatable), e.g. hb0:OPENOPEN8_HEARTBEAT=0")
    ap.add_argument("--openopen8-quota", metavar="USD",
                    help="also run this checkout with a quota of USD on the bench token, as "
                    "target openopen8[quota]: the limits stage then checks every delta")
    ap.add_argument("--skip-litellm", action="store_true", help="do not install or run LiteLLM")
    ap.add_argument("--litellm-venv", type=Path, default=BENCH / ".venv-litellm",
                    help="virtual environment for LiteLLM (created on first use)")
    ap.add_argument("--litellm-spec", default=LITELLM_SPEC, help="pip requirement for LiteLLM")
    ap.add_argument("--duration", type=float, help="measuring window per step, seconds")
    ap.add_argument("--warmup", type=float, help="seconds of load before the window")
    ap.add_argument("--flood-seconds", type=float, help="measuring window of the flood")
    ap.add_argument("--flood-window", type=int, default=32, help="events in flight in the flood")
    ap.add_argument("--idle-sessions", type=int, help="K for the idle-memory figure")
    ap.add_argument("--cpu-sessions", type=int,
                    help="sessions per target in the concurrent CPU phase (default 25)")
    ap.add_argument("--cpu-seconds", type=float, help="window of one concurrent CPU round")
    ap.add_argument("--cpu-rounds", type=int, help="concurrent CPU rounds (pooled)")
    ap.add_argument("--load-procs", type=int, default=1,
                    help="load-generator processes for the session steps")
    ap.add_argument("--limit-ms", type=float, default=LIMIT_MS,
                    help="added p99 round trip a target must stay under")
    ap.add_argument("--retries", type=int, default=1,
                    help="re-run a failing step (and its direct baseline) this often before "
                    "calling it the limit: the machine is shared, one noisy window is not a verdict")
    ap.add_argument("--phases", default="idle,cpu,flood,steps",
                    help="which measurements to run (comma-separated subset of the default)")
    ap.add_argument("--bare-loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                    help="event loop of the bare forwarders; auto: the one openopen8 serves on "
                    "(uvloop when installed), so the floor is measured on equal terms")
    ap.add_argument("--turn-every", type=int, default=0, metavar="N",
                    help="the stand-in ends a turn (response.done with usage: a ledger row) "
                    "after every N deltas of a session; 0: never")
    ap.add_argument("--keep-logs", action="store_true", help="keep the run directory")
    a = ap.parse_args(argv)
    quick = a.quick
    a.steps = [int(x) for x in a.steps.split(",")] if a.steps else (QUICK_STEPS if quick else DEFAULT_STEPS)
    if a.max_sessions:
        a.steps = [n for n in a.steps if n <= a.max_sessions] or [a.max_sessions]
    a.duration = a.duration or (0.25 if quick else 4.0)
    a.warmup = a.warmup if a.warmup is not None else (0.05 if quick else 1.0)
    a.drain = 0.1 if quick else 1.0
    a.flood_seconds = a.flood_seconds or (0.2 if quick else 3.0)
    a.idle_sessions = a.idle_sessions or (40 if quick else 200)
    a.cpu_sessions = a.cpu_sessions or (4 if quick else 25)
    a.cpu_seconds = a.cpu_seconds or (0.4 if quick else 10.0)
    a.cpu_rounds = a.cpu_rounds or (1 if quick else 3)
    a.settle = 0.15 if quick else 1.0
    if quick and a.retries == 1:
        a.retries = 0
    names = a.targets.split(",") if a.targets else list(ALL_TARGETS)
    bad = [n for n in names if n not in ALL_TARGETS]
    if bad:
        ap.error(f"unknown target(s): {', '.join(bad)}")
    if "direct" not in names:
        names.insert(0, "direct")
    if a.skip_litellm and "litellm" in names:
        names.remove("litellm")
    if a.bare_loop == "auto":
        try:
            import uvloop  # noqa: F401
            a.bare_loop = "uvloop"
        except ImportError:
            a.bare_loop = "asyncio"
    a.variants = {}
    for ref in a.openopen8_at:
        a.variants[f"openopen8@{ref}"] = {"ref": ref}
    for spec in a.openopen8_env:
        vname, _, kvs = spec.partition(":")
        env = dict(kv.split("=", 1) for kv in kvs.split(",") if kv)
        a.variants[f"openopen8[{vname}]"] = {"env": env}
    if a.openopen8_quota:
        a.variants["openopen8[quota]"] = {"env": {}, "token_args": ["--quota-usd",
                                                                   a.openopen8_quota]}
    at = names.index("openopen8") + 1 if "openopen8" in names else len(names)
    names = names[:at] + list(a.variants) + names[at:]
    a.target_names = names
    return a


def run(a: argparse.Namespace) -> dict[str, Any]:
    global PAUSE
    PAUSE = 0.1 if a.quick else 0.3
    run_dir = Path(tempfile.mkdtemp(prefix="oo8-relay-bench-"))
    result: dict[str, Any] = {
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": platform.node(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
            "commit": _git("rev-parse", "--short", "HEAD"),
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
            "quick": a.quick, "steps": a.steps, "duration_s": a.duration, "warmup_s": a.warmup,
            "limit_ms": a.limit_ms, "flood_window": a.flood_window,
            "audio": "input_audio_buffer.append / response.output_audio.delta, 20 ms PCM16 24 kHz "
                     "(960 bytes raw, 1280 base64), one each way every 20 ms per session",
            "round_trip": "one client event up + one server event down",
            "loadgen_procs": a.load_procs, "run_dir": str(run_dir), "bare_loop": a.bare_loop,
            "libraries": {m: _version(m) for m in ("picows", "aiohttp", "websockets", "orjson",
                                                   "uvloop")},
        },
        "targets": {}, "idle_memory": {}, "cpu_concurrent": [], "flood": {}, "steps": [],
        "summary": {},
    }
    targets: dict[str, Target] = {}
    standin = None
    load = None
    try:
        standin, sport = start_ready([sys.executable, str(BENCH / "standin.py"),
                                      "--turn-every", str(a.turn_every)],
                                     run_dir / "standin.log")
        up_ws, up_http = f"ws://127.0.0.1:{sport}", f"http://127.0.0.1:{sport}"
        log(f"stand-in upstream on {up_ws} (pid {standin.pid})")
        load = Load(a.load_procs)
        def setup(name: str) -> Target:
            if name == "direct":
                return Target("direct", url=f"{up_ws}/v1/realtime?model={MODEL}")
            if name in BARE:
                return setup_bare(name, up_ws, run_dir, a.bare_loop)
            if name == "openopen8":
                t = setup_openopen8(up_http, run_dir)
                t.info["commit"] = result["meta"]["commit"]
                return t
            if name in a.variants:
                v = a.variants[name]
                if "ref" in v and (Path(v["ref"]) / "openopen8").is_dir():
                    return setup_openopen8(up_http, run_dir, name, src=Path(v["ref"]).resolve())
                if "ref" in v:
                    try:
                        src = openopen8_source(v["ref"], run_dir)
                    except subprocess.CalledProcessError as exc:
                        return Target(name, error=f"git archive {v['ref']} failed: {exc}")
                    t = setup_openopen8(up_http, run_dir, name, src=src)
                    t.info["commit"] = _git("rev-parse", "--short", v["ref"])
                    return t
                return setup_openopen8(up_http, run_dir, name, extra_env=v["env"],
                                       token_args=v.get("token_args"))
            return setup_litellm(up_http, run_dir, a.litellm_venv, a.litellm_spec)

        log(f"starting {', '.join(a.target_names)} …")
        with ThreadPoolExecutor(len(a.target_names)) as pool:
            for name, t in zip(a.target_names, pool.map(setup, a.target_names)):
                targets[name] = t
                result["targets"][name] = {"ok": t.ok, "error": t.error, "pid": t.pid, **t.info}
                if t.error:
                    log(f"  {name}: UNAVAILABLE — {t.error}")
        live = [t for t in targets.values() if t.ok]

        # warm-up (imports, first connections), then resident memory per idle session
        for t in live if not a.quick else []:     # a quick run's first steps do this
            warm = measure(load, t, standin.pid, n=2, mode="rate", warm=0.1, dur=0.2, drain=0.1)
            if not warm["ok"]:
                t.error = f"warm-up failed: {warm.get('error')}"
                result["targets"][t.name].update(ok=False, error=t.error)
                log(f"  {t.name}: UNAVAILABLE — {t.error}")
        live = [t for t in live if t.ok]
        for t in live if "idle" in a.phases else []:
            if t.pid:
                result["idle_memory"][t.name] = m = idle_memory(load, t, a.idle_sessions, a.settle)
                log(f"idle memory {t.name}: {m.get('kb_per_session', float('nan')):.1f} KB/session")

        # CPU per round trip, every relay loaded at once over the same windows:
        # the neighbours' noise hits all of them alike, so the ratios hold up
        relays = [t for t in live if t.pid]
        for rnd in range(a.cpu_rounds if relays and "cpu" in a.phases else 0):
            rs = measure_many(load, relays, standin.pid, n=a.cpu_sessions, mode="rate",
                              warm=a.warmup, dur=a.cpu_seconds, drain=a.drain)
            for r in rs.values():
                r["round"] = rnd + 1
                result["cpu_concurrent"].append(r)
            log(f"concurrent CPU round {rnd + 1}: " + ", ".join(
                f"{n} {r.get('relay_cpu_per_10k_rt', float('nan')):.2f}" for n, r in rs.items())
                + " CPU-s/10k rt")

        # single-session floods: audio pairs, then tiny echo events
        for echo in (False, True) if "flood" in a.phases else ():
            for t in live:
                r = measure(load, t, standin.pid, n=1, mode="flood", warm=a.warmup,
                            dur=a.flood_seconds, drain=a.drain, window=a.flood_window, echo=echo)
                result["flood"].setdefault("echo" if echo else "audio", {})[t.name] = r
                log(f"flood {'echo ' if echo else 'audio'} {t.name}: {r.get('rt_per_s', 0):,.0f} rt/s"
                    + (f", relay {r['relay_cpu_per_10k_rt']:.2f} CPU-s/10k rt"
                       if r.get("relay_cpu_per_10k_rt") else ""))

        # the session steps, interleaved: at each N the direct baseline, then every target
        active = [t for t in live if t.name != "direct"]
        direct = targets["direct"]
        for n in a.steps if "steps" in a.phases else []:
            if not active:
                break
            base = measure(load, direct, standin.pid, n=n, mode="rate", warm=a.warmup,
                           dur=a.duration, drain=a.drain)
            result["steps"].append(base)
            log(_step_line(base, None))
            if not base["ok"]:
                log(f"direct connection failed at N={n}: the load generator or the stand-in is "
                    "the limit here; stopping")
                break
            for t in list(active):
                tries = 0
                while True:
                    r = measure(load, t, standin.pid, n=n, mode="rate", warm=a.warmup,
                                dur=a.duration, drain=a.drain)
                    _added(r, base)
                    r["passed"] = bool(r["ok"] and r["added_p99_ms"] is not None
                                       and r["added_p99_ms"] < a.limit_ms)
                    r["attempt"] = tries + 1
                    result["steps"].append(r)
                    log(_step_line(r, a.limit_ms))
                    if r["passed"] or tries >= a.retries:
                        break
                    tries += 1
                    base = measure(load, direct, standin.pid, n=n, mode="rate", warm=a.warmup,
                                   dur=a.duration, drain=a.drain)
                    base["attempt"] = tries + 1
                    result["steps"].append(base)
                    log(_step_line(base, None) + " (re-measured)")
                if not r["passed"] and not a.quick:   # a smoke run goes through every step
                    active.remove(t)
        result["meta"]["loadavg_end"] = os.getloadavg()
        result["summary"] = summarize(result, a)
    finally:
        if load is not None:
            load.quit()
        for t in targets.values():
            stop_proc(t.proc)
        stop_proc(standin)
        if not a.keep_logs and not any(t.error for t in targets.values()):
            shutil.rmtree(run_dir, ignore_errors=True)
    return result


def _added(r: dict, base: dict) -> None:
    lat, blat = r.get("latency_ms") or {}, base.get("latency_ms") or {}
    if lat and blat:
        r["added_p50_ms"] = lat["p50"] - blat["p50"]
        r["added_p99_ms"] = lat["p99"] - blat["p99"]
    else:
        r["added_p50_ms"] = r["added_p99_ms"] = None


def _step_line(r: dict, limit: float | None) -> str:
    lat = r.get("latency_ms") or {}
    s = f"N={r['n']:<4} {r['target']:<20}"
    if lat:
        s += f" p50 {lat['p50']:7.2f} ms  p99 {lat['p99']:7.2f} ms"
    if r.get("added_p99_ms") is not None:
        s += f"  added p50 {r['added_p50_ms']:+7.2f}  p99 {r['added_p99_ms']:+7.2f}"
    if r.get("relay_cpu_per_10k_rt") is not None:
        s += f"  cpu {r['relay_cpu_per_10k_rt']:.2f} s/10k ({r['relay_cpu_util']:.0%})"
    if not r.get("ok"):
        s += f"  FAILED: {r.get('error')}"
    elif limit is not None and not r.get("passed"):
        s += "  over the limit"
    return s


# ---- summary ------------------------------------------------------------------

def summarize(result: dict, a: argparse.Namespace) -> dict[str, Any]:
    names = [n for n, t in result["targets"].items() if t["ok"]]
    relays = [n for n in names if n != "direct"]
    steps = [s for s in result["steps"] if s["target"] != "direct"]
    per: dict[str, dict[str, Any]] = {}
    # the last attempt at each (target, N) is the one that counts
    final: dict[tuple[str, int], dict] = {}
    for s in steps:
        final[(s["target"], s["n"])] = s
    passed_ns = {n: sorted(N for (t, N), s in final.items() if t == n and s.get("passed"))
                 for n in relays}
    common = sorted(set.intersection(*(set(v) for v in passed_ns.values()))) if relays else []
    if not common and relays:
        tried = [set(N for (t, N) in final if t == n) for n in relays]
        common = sorted(set.intersection(*tried))[:1]
    for n in names:
        d: dict[str, Any] = {}
        if n in relays:
            d["max_sessions"] = max(passed_ns[n], default=0)
            tried = sorted(N for (t, N) in final if t == n)
            d["limit_reached"] = any(not final[(n, N)].get("passed") for N in tried)
            if not d["limit_reached"]:
                d["max_sessions_note"] = "never failed: the real limit is higher (raise --steps)"
            cpu = sum(final[(n, N)]["relay_cpu_s"] for N in common if (n, N) in final)
            rts = sum(final[(n, N)]["round_trips"] for N in common if (n, N) in final)
            if rts:
                d["cpu_s_per_10k_rt_steps"] = cpu / rts * 10_000
            d["cpu_steps"] = common
            conc = [r for r in result["cpu_concurrent"] if r["target"] == n
                    and r.get("relay_cpu_s") is not None]
            if conc and sum(r["round_trips"] for r in conc):
                cpu = sum(r["relay_cpu_s"] for r in conc)
                rts = sum(r["round_trips"] for r in conc)
                per_round = sorted(r["relay_cpu_per_10k_rt"] for r in conc
                                   if r.get("relay_cpu_per_10k_rt") is not None)
                d["cpu_s_per_10k_rt_rounds"] = per_round
                d["cpu_source"] = (f"concurrent: {a.cpu_sessions} sessions per target, "
                                   f"{len(conc)} x {a.cpu_seconds:g} s")
            else:
                d["cpu_source"] = f"session steps N in {common}"
            if rts:
                d["cpu_s_per_10k_rt"] = cpu / rts * 10_000
            if rts and cpu:
                # what one fully busy core could carry at this CPU per round trip
                # (50 round trips a second per session): steadier than the
                # p99-bound figure on a shared machine, but an upper bound
                d["sessions_per_core_cpu_model"] = 1 / (cpu / rts * 50)
            d["added_ms"] = {N: {"p50": final[(n, N)].get("added_p50_ms"),
                                 "p99": final[(n, N)].get("added_p99_ms")} for N in tried}
        for kind in ("audio", "echo"):
            f = result["flood"].get(kind, {}).get(n)
            if f and f.get("rt_per_s"):
                d[f"flood_{kind}_rt_per_s"] = f["rt_per_s"]
                d[f"flood_{kind}_events_per_s"] = 2 * f["rt_per_s"]
                if f.get("relay_cpu_per_10k_rt") is not None:
                    d[f"flood_{kind}_cpu_s_per_10k_rt"] = f["relay_cpu_per_10k_rt"]
        m = result["idle_memory"].get(n)
        if m and "kb_per_session" in m:
            d["idle_kb_per_session"] = m["kb_per_session"]
        per[n] = d

    def ratio(x: str, y: str, key: str) -> float | None:
        vx, vy = per.get(x, {}).get(key), per.get(y, {}).get(key)
        return vx / vy if vx is not None and vy else None

    bares = [b for b in BARE if per.get(b, {}).get("cpu_s_per_10k_rt")]
    fastest = min(bares, key=lambda b: per[b]["cpu_s_per_10k_rt"]) if bares else None
    ratios: dict[str, Any] = {}
    if "openopen8" in per:
        for b in bares:
            ratios[f"cpu_openopen8_over_{b}"] = ratio("openopen8", b, "cpu_s_per_10k_rt")
            ratios[f"flood_cpu_openopen8_over_{b}"] = ratio("openopen8", b, "flood_echo_cpu_s_per_10k_rt")
        if fastest:
            ratios["bare_reference"] = fastest
            ratios["cpu_openopen8_over_bare"] = ratio("openopen8", fastest, "cpu_s_per_10k_rt")
        if "litellm" in per:
            ratios["cpu_openopen8_over_litellm"] = ratio("openopen8", "litellm", "cpu_s_per_10k_rt")
            ratios["flood_cpu_openopen8_over_litellm"] = ratio("openopen8", "litellm",
                                                               "flood_echo_cpu_s_per_10k_rt")
            ratios["sessions_openopen8_over_litellm"] = ratio("openopen8", "litellm", "max_sessions")
            ratios["model_sessions_openopen8_over_litellm"] = ratio(
                "openopen8", "litellm", "sessions_per_core_cpu_model")
            ratios["memory_openopen8_over_litellm"] = ratio("openopen8", "litellm", "idle_kb_per_session")
    for v in per:
        if v.startswith("openopen8") and v != "openopen8":
            ratios[f"cpu_openopen8_over_{v}"] = ratio("openopen8", v, "cpu_s_per_10k_rt")
            ratios[f"flood_cpu_openopen8_over_{v}"] = ratio("openopen8", v,
                                                            "flood_echo_cpu_s_per_10k_rt")
    goals = {}
    if ratios.get("cpu_openopen8_over_bare") is not None:
        goals["cpu_vs_bare<=1.25"] = ratios["cpu_openopen8_over_bare"] <= 1.25
    if ratios.get("cpu_openopen8_over_litellm") is not None:
        goals["cpu_vs_litellm<=0.5"] = ratios["cpu_openopen8_over_litellm"] <= 0.5
    if ratios.get("sessions_openopen8_over_litellm") is not None:
        goals["sessions_vs_litellm>=3"] = ratios["sessions_openopen8_over_litellm"] >= 3
    return {"targets": per, "ratios": ratios, "goals": goals,
            "unavailable": {n: t["error"] for n, t in result["targets"].items() if not t["ok"]}}


def _fmt(v: Any, spec: str = ".2f", none: str = "—") -> str:
    if v is None:
        return none
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return "∞" if v == float("inf") else none
    return format(v, spec)


def report(result: dict) -> None:
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
    except ImportError:  # pragma: no cover
        Console = Table = None
    s = result["summary"]
    per = s.get("targets", {})
    names = list(per)
    rows = [(n,
             _fmt(per[n].get("max_sessions"), "d") + ("+" if per[n].get("max_sessions_note") else "")
             if n != "direct" else "—",
             _fmt(per[n].get("sessions_per_core_cpu_model"), ",.0f"),
             _fmt(per[n].get("cpu_s_per_10k_rt")),
             _fmt(per[n].get("flood_echo_cpu_s_per_10k_rt")),
             _fmt(per[n].get("flood_audio_events_per_s"), ",.0f"),
             _fmt(per[n].get("flood_echo_events_per_s"), ",.0f"),
             _fmt(per[n].get("idle_kb_per_session"), ".1f")) for n in names]
    head = ("target", f"max N (p99 +<{result['meta']['limit_ms']:g} ms)", "N/core (CPU model)",
            "CPU-s/10k rt (audio, concurrent)",
            "CPU-s/10k rt (echo flood)", "flood ev/s (audio)", "flood ev/s (echo)", "KB/idle session")
    steps_ns = sorted({st["n"] for st in result["steps"]})
    final: dict[tuple[str, int], dict] = {}
    for st in result["steps"]:
        final[(st["target"], st["n"])] = st
    lat_rows = []
    for n in steps_ns:
        row = [str(n)]
        for t in names:
            st = final.get((t, n))
            if st is None:
                row.append("")
            elif t == "direct":
                lat = st.get("latency_ms") or {}
                row.append(f"{_fmt(lat.get('p50'))} / {_fmt(lat.get('p99'))}" if lat else "failed")
            else:
                mark = "" if st.get("passed") else " ✗"
                row.append(f"+{_fmt(st.get('added_p50_ms'))} / +{_fmt(st.get('added_p99_ms'))}{mark}"
                           if st.get("latency_ms") else "failed")
        lat_rows.append(row)
    lat_head = ["N", *[("direct p50 / p99 ms" if t == "direct" else f"{t} added p50 / p99")
                       for t in names]]
    ratio_rows = [(k, _fmt(v) if isinstance(v, float) else str(v)) for k, v in s.get("ratios", {}).items()]
    ratio_rows += [(f"goal {k}", "met" if v else "NOT met") for k, v in s.get("goals", {}).items()]
    ratio_rows += [(f"{k} unavailable", v) for k, v in s.get("unavailable", {}).items()]
    if Console:
        con = Console(stderr=False)
        for title, hd, rs in (("Relay benchmark", head, rows),
                              ("Round trip: direct, and added by each relay (ms)", lat_head, lat_rows),
                              ("Ratios", ("ratio", "value"), ratio_rows)):
            tb = Table(title=title)
            for h in hd:
                tb.add_column(escape(h), overflow="fold")
            for r in rs:   # escaped: a variant is named openopen8[NAME], not a style tag
                tb.add_row(*map(escape, r))
            con.print(tb)
    else:
        for hd, rs in ((head, rows), (lat_head, lat_rows), (("ratio", "value"), ratio_rows)):
            print(" | ".join(hd))
            for r in rs:
                print(" | ".join(r))
            print()


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    result = run(a)
    report(result)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
        log(f"wrote {a.json}")
    return 0


def _json_default(o: Any) -> Any:
    if isinstance(o, bytes):
        return None
    if isinstance(o, Path):
        return str(o)
    return str(o)


if __name__ == "__main__":
    sys.exit(main())
