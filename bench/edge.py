"""The reliability run: how the gateway's edge holds up, in figures to compare between versions.

    python bench/edge.py [--quick] [--json out.json] [--openopen8-at REF ...] [--phases ...]

Each phase runs a real ``openopen8 serve`` of this checkout (and of each
``--openopen8-at`` commit, unpacked with ``git archive``) in its own
process, with SQLite in a fresh data dir, a token made with the CLI and a
channel pointing at a stand-in OpenAI upstream (``bench/edge_upstream.py``:
``tests/standin.py``, which validates events like OpenAI and scripts
responses that end with usage).  All traffic stays on 127.0.0.1 and every
loop is bounded.

1. ``fuzz``: N malformed or ill-typed client frames (``bench/edge_fuzz.py``,
   seeded) over a few sessions, each frame followed by an echo that proves
   the session still answers.  Figures: frames sent, ``error`` events
   answered (the gateway's own and the upstream's), sessions the gateway
   ended (with their close codes and the kind of frame that ended them),
   gateway crashes (process died, or /healthz unanswered), ERROR lines and
   bytes the gateway logged.
2. ``hold``: slowloris connections sending a request head a byte at a time,
   and idle connections sending nothing: are they closed, after how long,
   and can a valid client open a session while they are held.
3. ``fdlimit``: a gateway started with a low ``RLIMIT_NOFILE`` and more idle
   connections than that: its CPU %, the log bytes it writes, whether
   /healthz answers (and how fast), and how it recovers once they go.
4. ``durability``: a session runs M scripted responses; the bench sees the
   last ``response.done``, waits 0.1 / 0.3 / 1 s, SIGKILLs the gateway and
   counts the ledger rows in the SQLite file (opened read-only) against the
   responses done, and the session rows left with ``closed_at`` NULL; then
   restarts the gateway on the same data dir and looks again
   (``closed_by``).

The run measures; it asserts nothing about the gateway.  Its exit status is
non-zero only when the bench itself failed (a phase could not run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import orjson  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidHandshake  # noqa: E402

from edge_fuzz import FrameGen  # noqa: E402
from edge_gateway import MODEL, Gateway, Reader, connect, healthz  # noqa: E402
from relay import (_git, _version, log, openopen8_source, start_ready,  # noqa: E402
                   stop_proc, tree_cpu)

PHASES = ("fuzz", "hold", "fdlimit", "durability")


# ---- targets ------------------------------------------------------------------------

@dataclass
class Target:
    name: str
    src: Path
    commit: str


def _stats(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"n": 0, "min": None, "median": None, "max": None}
    return {"n": len(xs), "min": min(xs), "median": statistics.median(xs), "max": max(xs)}


# ---- phase 1: fuzzed frames -----------------------------------------------------------

async def phase_fuzz(gw: Gateway, a: argparse.Namespace) -> dict[str, Any]:
    """Each frame is followed by an echo through gateway and upstream, so what
    came back between the two is that frame's answer, and a session the
    gateway ends is ended by the frame just sent (the run notes its kind)."""
    gen = FrameGen(a.seed)
    r: dict[str, Any] = {"frames_planned": a.frames, "seed": a.seed}
    sent = 0
    kinds: Counter[str] = Counter()
    answers: Counter[str] = Counter()     # error / other / none, per frame
    codes: Counter[str] = Counter()
    close_codes: Counter[str] = Counter()
    killers: Counter[str] = Counter()
    killer_samples: list[str] = []
    types: Counter[str] = Counter()
    errs_gw = errs_up = 0
    opened = ended = client_closed = connect_failures = sync_timeouts = 0
    crashes = unanswered = restarts = 0
    per = math.ceil(a.frames / a.sessions)
    log0 = gw.log_size()
    t0 = time.monotonic()

    async def check() -> None:
        nonlocal crashes, unanswered, restarts
        if not gw.alive():
            crashes += 1
        elif not (await healthz(gw.port, 5))[0]:
            unanswered += 1
        else:
            return
        if restarts < 3:   # keep going on a fresh process, the same data dir
            gw.stop()
            gw.start()
            restarts += 1

    while sent < a.frames and restarts <= 3 and connect_failures <= 20:
        if not gw.alive():
            await check()
            continue
        try:
            ws = await connect(gw)
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            connect_failures += 1
            log(f"  fuzz: connect failed: {exc!r}")
            await check()
            continue
        opened += 1
        rd = Reader(ws)
        quota = min(per, a.frames - sent)
        done = 0
        kind, payload = "", b""
        while done < quota and not rd.closed:
            kind, payload, text = gen.frame()
            sid = f"sync_{sent}"
            errors0, events0 = rd.errors, rd.events
            try:
                await ws.send(payload, text=text)
                sent += 1
                done += 1
                kinds[kind] += 1
                await ws.send(b'{"type":"bench.echo","event_id":"' + sid.encode() + b'"}',
                              text=True)
            except ConnectionClosed:
                break
            if not await rd.until(lambda: sid in rd.echoes, a.sync_timeout):
                if not rd.closed:
                    sync_timeouts += 1
                    await check()
                break
            answers["error" if rd.errors > errors0 else
                    "other event" if rd.events > events0 else "nothing"] += 1
        if rd.closed:
            await asyncio.wait_for(rd.task, 5)
            ended += 1
            close_codes[str(rd.close_code())] += 1
            killers[kind] += 1
            if len(killer_samples) < 20:
                killer_samples.append(f"{kind}: {payload[:160]!r}")
        else:
            client_closed += 1
            await ws.close()
            try:
                await asyncio.wait_for(rd.task, 5)
            except TimeoutError:
                rd.task.cancel()
        codes.update(rd.error_codes)
        types.update(rd.types)
        errs_gw += rd.errors_gateway
        errs_up += rd.errors_upstream
        if opened % 5 == 0 and gw.alive():
            if not (await healthz(gw.port, 5))[0]:
                unanswered += 1
    elapsed = time.monotonic() - t0
    if not gw.alive():
        crashes += 1
    alive = gw.alive() and (await healthz(gw.port, 5))[0]
    types.pop("bench.echo", None)
    r.update(
        frames_sent=sent, frames_by_kind=dict(kinds.most_common()),
        frames_answered=dict(answers.most_common()),
        frames_answered_with_error=answers["error"],
        errors_answered=errs_gw + errs_up, errors_from_gateway=errs_gw,
        errors_from_upstream=errs_up, error_codes=dict(codes.most_common()),
        server_event_types=dict(types.most_common()),
        sessions_opened=opened, sessions_ended_by_gateway=ended,
        sessions_closed_by_client=client_closed, close_codes=dict(close_codes.most_common()),
        sessions_ended_by_kind=dict(killers.most_common()), session_enders=killer_samples,
        echo_timeouts=sync_timeouts, connect_failures=connect_failures,
        gateway_crashes=crashes, healthz_unanswered=unanswered, gateway_restarts=restarts,
        gateway_alive_at_end=alive, seconds=elapsed, frames_per_s=sent / elapsed if elapsed else 0,
        **gw.log_since(log0))
    return r


# ---- phase 2: slowloris and idle connections ------------------------------------------

def _slow_head(path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Authorization: Bearer oo8_not_a_real_token_just_slow\r\n"
            + "X-Pad: " + "p" * 400 + "\r\n\r\n").encode()


async def _held(port: int, cap: float, trickle: bytes | None, interval: float) -> dict[str, Any]:
    """One connection: send ``trickle`` a byte every ``interval`` s (or nothing);
    how long until the gateway closes it, and what it said."""
    t0 = time.monotonic()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except (OSError, TimeoutError) as exc:
        return {"connected": False, "error": repr(exc)}
    sent, got = 0, b""
    closed_at = None
    try:
        while True:
            left = cap - (time.monotonic() - t0)
            if left <= 0:
                break
            if trickle is not None and sent < len(trickle):
                w.write(trickle[sent:sent + 1])
                sent += 1
            wait = min(left, interval) if trickle is not None and sent < len(trickle) else left
            try:
                data = await asyncio.wait_for(r.read(65536), wait)
            except TimeoutError:
                continue
            if not data:
                closed_at = time.monotonic() - t0
                break
            got += data
    except (ConnectionError, OSError):
        closed_at = time.monotonic() - t0
    finally:
        w.close()
    status = got.split(b"\r\n", 1)[0].decode("latin-1") if got else None
    return {"connected": True, "closed": closed_at is not None, "closed_after_s": closed_at,
            "bytes_sent": sent, "answer": status}


async def _valid_session(gw: Gateway, timeout: float) -> tuple[bool, float]:
    """Open a session and wait for its first event: (ok, seconds)."""
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            ws = await connect(gw, timeout)
            try:
                await ws.recv()
            finally:
                await ws.close()
        return True, time.monotonic() - t0
    except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed):
        return False, time.monotonic() - t0


async def phase_hold(gw: Gateway, a: argparse.Namespace) -> dict[str, Any]:
    cap = a.hold_cap
    log0 = gw.log_size()
    slow_paths = [f"/v1/realtime?model={MODEL}", "/healthz"]
    slow = [asyncio.ensure_future(_held(gw.port, cap, _slow_head(slow_paths[i % 2]),
                                        a.slow_interval)) for i in range(a.slow)]
    idle = [asyncio.ensure_future(_held(gw.port, cap, None, cap)) for _ in range(a.idle)]
    probes: list[tuple[bool, float]] = []
    health: list[tuple[bool, float]] = []
    t0 = time.monotonic()
    for at in (1.0, cap / 3, 2 * cap / 3):       # a valid client while they are held
        await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
        probes.append(await _valid_session(gw, 5))
        health.append(await healthz(gw.port, 5))
    slow_r = await asyncio.gather(*slow)
    idle_r = await asyncio.gather(*idle)

    def summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
        conn = [x for x in rs if x["connected"]]
        times = [x["closed_after_s"] for x in conn if x["closed"]]
        return {"connections": len(rs), "connected": len(conn), "closed": len(times),
                "still_open_at_cap": len(conn) - len(times), "closed_after_s": _stats(times),
                "answers": dict(Counter(x["answer"] or "none (closed silently)" for x in conn))}

    s, i = summary(slow_r), summary(idle_r)
    s["bytes_sent"] = _stats([x["bytes_sent"] for x in slow_r if x["connected"]])
    s["byte_interval_s"] = a.slow_interval
    return {"cap_s": cap, "slowloris": s, "idle": i,
            "valid_sessions_ok": sum(ok for ok, _ in probes), "valid_sessions_tried": len(probes),
            "valid_session_s": _stats([t for ok, t in probes if ok]),
            "healthz_ok": sum(ok for ok, _ in health), "healthz_tried": len(health),
            "healthz_s": _stats([t for ok, t in health if ok]),
            "gateway_alive_at_end": gw.alive(), **gw.log_since(log0)}


# ---- phase 3: descriptor limit ------------------------------------------------------

async def phase_fdlimit(gw: Gateway, a: argparse.Namespace) -> dict[str, Any]:
    r: dict[str, Any] = {"nofile": a.nofile, "idle_connections": a.nofile + a.fd_extra}
    cpu0, w0 = tree_cpu(gw.pid), time.monotonic()
    await asyncio.sleep(1.0)
    r["cpu_pct_before"] = (tree_cpu(gw.pid) - cpu0) / (time.monotonic() - w0) * 100

    writers: list[asyncio.StreamWriter] = []

    async def one() -> None:
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", gw.port), 3)
            writers.append(w)
        except (OSError, TimeoutError):
            pass

    t_open = time.monotonic()
    await asyncio.gather(*(one() for _ in range(r["idle_connections"])))
    r["connections_opened"] = len(writers)
    r["open_s"] = time.monotonic() - t_open

    log0 = gw.log_size()
    cpu0, w0 = tree_cpu(gw.pid), time.monotonic()
    end = w0 + a.fd_window
    valid = asyncio.ensure_future(_valid_session(gw, a.fd_window))
    probes: list[tuple[bool, float]] = []
    while time.monotonic() < end - 0.1:
        probes.append(await healthz(gw.port, min(1.0, end - time.monotonic())))
        await asyncio.sleep(0.25)
    ok, valid_s = await valid
    cpu1, w1 = tree_cpu(gw.pid), time.monotonic()
    held_log = gw.log_since(log0)
    r.update(window_s=w1 - w0, cpu_pct=(cpu1 - cpu0) / (w1 - w0) * 100,
             log_bytes=held_log["log_bytes"], log_bytes_per_s=held_log["log_bytes"] / (w1 - w0),
             log_lines=held_log["log_lines"], log_error_lines=held_log["log_error_lines"],
             log_tracebacks=held_log["log_tracebacks"],
             healthz_ok=sum(p[0] for p in probes), healthz_tried=len(probes),
             healthz_s=_stats([t for good, t in probes if good]),
             valid_session_ok=ok, valid_session_s=valid_s if ok else None,
             gateway_alive_held=gw.alive())

    # let them go: how soon does it answer again, and does the CPU settle
    for w in writers:
        w.close()
    t_rel = time.monotonic()
    recovered = None
    while time.monotonic() - t_rel < a.fd_recover_cap:
        if not gw.alive():
            break
        if (await healthz(gw.port, 1.0))[0]:
            recovered = time.monotonic() - t_rel
            break
        await asyncio.sleep(0.1)
    cpu0, w0 = tree_cpu(gw.pid), time.monotonic()
    await asyncio.sleep(1.0)
    r.update(healthz_recovered_after_s=recovered, recover_cap_s=a.fd_recover_cap,
             cpu_pct_after=(tree_cpu(gw.pid) - cpu0) / (time.monotonic() - w0) * 100,
             gateway_alive_at_end=gw.alive())
    return r


# ---- phase 4: crash durability ------------------------------------------------------

def _db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def _session_ids(db: Path) -> set[str]:
    con = _db(db)
    try:
        return {row[0] for row in con.execute("SELECT id FROM sessions")}
    finally:
        con.close()


def _session_rows(db: Path, ids: set[str]) -> tuple[int, list[tuple]]:
    """(ledger rows of kind 'response' for these sessions, their session rows)."""
    if not ids:
        return 0, []
    con = _db(db)
    q = ",".join("?" * len(ids))
    try:
        rows = con.execute(f"SELECT count(*) FROM ledger WHERE kind = 'response' "
                           f"AND session_id IN ({q})", tuple(ids)).fetchone()[0]
        sess = con.execute(f"SELECT id, closed_at, closed_by FROM sessions WHERE id IN ({q})",
                           tuple(ids)).fetchall()
        return rows, sess
    finally:
        con.close()


async def _durability_trial(gw: Gateway, delay: float, m: int) -> dict[str, Any]:
    before = _session_ids(gw.db)
    ws = await connect(gw)
    rd = Reader(ws)
    done = 0
    for i in range(m):
        await ws.send(orjson.dumps({"type": "response.create", "event_id": f"evt_dur_{i}"}),
                      text=True)
        if not await rd.until(lambda: rd.types["response.done"] > i, 15):
            break
        done += 1
    seen = rd.last_done_at
    await asyncio.sleep(max(0.0, seen + delay - time.monotonic()))
    killed_after = time.monotonic() - seen
    gw.kill()
    rd.task.cancel()
    ids = _session_ids(gw.db) - before
    rows, sess = _session_rows(gw.db, ids)
    open_after_kill = sum(1 for s in sess if s[1] is None)
    gw.start()
    # the orphan may be closed while the gateway starts or just after: look for a moment
    deadline = time.monotonic() + 0.5
    while True:
        _, sess2 = _session_rows(gw.db, ids)
        if all(s[1] is not None for s in sess2) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    try:
        await ws.close()
    except Exception:  # noqa: BLE001 - the socket died with the gateway
        pass
    return {"delay_s": delay, "killed_after_s": killed_after, "responses_done": done,
            "rows": rows, "rows_lost": done - rows, "sessions": len(ids),
            "sessions_open_after_kill": open_after_kill,
            "sessions_open_after_restart": sum(1 for s in sess2 if s[1] is None),
            "closed_by_after_restart": [s[2] for s in sess2]}


async def phase_durability(gw: Gateway, a: argparse.Namespace) -> dict[str, Any]:
    trials = []
    for delay in a.delays:
        for _ in range(a.runs):
            if not gw.alive():
                gw.start()
            trials.append(await _durability_trial(gw, delay, a.responses))
    by_delay = {}
    for delay in a.delays:
        ts = [t for t in trials if t["delay_s"] == delay]
        by_delay[f"{delay:g}"] = {
            "runs": len(ts), "responses_done": sum(t["responses_done"] for t in ts),
            "rows": sum(t["rows"] for t in ts), "rows_lost": sum(t["rows_lost"] for t in ts),
            "runs_losing_rows": sum(1 for t in ts if t["rows_lost"]),
            "sessions_open_after_kill": sum(t["sessions_open_after_kill"] for t in ts),
            "sessions_open_after_restart": sum(t["sessions_open_after_restart"] for t in ts),
            "closed_by_after_restart": dict(Counter(str(c) for t in ts
                                                    for c in t["closed_by_after_restart"])),
        }
    return {"responses_per_session": a.responses, "by_delay": by_delay, "trials": trials}


# ---- the run ------------------------------------------------------------------------

PHASE_FUNCS = {"fuzz": phase_fuzz, "hold": phase_hold, "fdlimit": phase_fdlimit,
               "durability": phase_durability}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Reliability run of the gateway's edge, on loopback.")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: fewer frames, connections and trials (well under a minute)")
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    ap.add_argument("--phases", default=",".join(PHASES),
                    help=f"comma-separated subset of {','.join(PHASES)}")
    ap.add_argument("--openopen8-at", action="append", default=[], metavar="GITREF|DIR",
                    help="also run openopen8 as of this commit (git archive) or from this source "
                    "directory: before/after in one run (repeatable)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the fuzzed frames")
    ap.add_argument("--frames", type=int, help="fuzzed frames (default 10000; quick 1000)")
    ap.add_argument("--sessions", type=int, help="sessions the frames are spread over (default 5)")
    ap.add_argument("--sync-timeout", type=float, default=10.0,
                    help="seconds the echo after a frame may take before the session counts as "
                    "stuck")
    ap.add_argument("--slow", type=int, help="slowloris connections (default 6; quick 2)")
    ap.add_argument("--slow-interval", type=float, default=0.5, help="seconds between their bytes")
    ap.add_argument("--idle", type=int, help="idle connections held (default 200; quick 20)")
    ap.add_argument("--hold-cap", type=float, help="longest wait for a held connection to be "
                    "closed, seconds (default 25; quick 17)")
    ap.add_argument("--nofile", type=int, default=256, help="the fd-limit gateway's RLIMIT_NOFILE")
    ap.add_argument("--fd-extra", type=int, help="idle connections over --nofile (default 250; "
                    "quick 60)")
    ap.add_argument("--fd-window", type=float, help="seconds measured while they are held "
                    "(default 6; quick 2)")
    ap.add_argument("--fd-recover-cap", type=float, default=20.0,
                    help="longest wait for /healthz once they are released, seconds")
    ap.add_argument("--delays", default="0.1,0.3,1", help="SIGKILL this long after response.done")
    ap.add_argument("--runs", type=int, help="kills per delay (default 3; quick 1)")
    ap.add_argument("--responses", type=int, default=5, help="responses per killed session")
    ap.add_argument("--keep-logs", action="store_true", help="keep the run directory")
    a = ap.parse_args(argv)
    q = a.quick
    a.frames = a.frames or (1000 if q else 10_000)
    a.sessions = a.sessions or (3 if q else 5)
    a.slow = a.slow if a.slow is not None else (2 if q else 6)
    a.idle = a.idle if a.idle is not None else (20 if q else 200)
    a.hold_cap = a.hold_cap or (17.0 if q else 25.0)
    a.fd_extra = a.fd_extra if a.fd_extra is not None else (60 if q else 250)
    a.fd_window = a.fd_window or (2.0 if q else 6.0)
    a.runs = a.runs or (1 if q else 3)
    a.delays = [float(x) for x in a.delays.split(",")]
    a.phases = [p for p in a.phases.split(",") if p]
    bad = [p for p in a.phases if p not in PHASES]
    if bad:
        ap.error(f"unknown phase(s): {', '.join(bad)}")
    return a


def _raise_own_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def run(a: argparse.Namespace) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix="oo8-edge-bench-"))
    _raise_own_nofile(4 * (a.idle + a.slow + a.nofile + a.fd_extra) + 256)
    commit = _git("rev-parse", "--short", "HEAD")
    result: dict[str, Any] = {
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(),
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg(), "commit": commit,
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
            "quick": a.quick, "phases": a.phases, "run_dir": str(run_dir),
            "libraries": {m: _version(m) for m in ("picows", "aiofastnet", "uvloop", "websockets",
                                                   "aiohttp", "orjson", "SQLAlchemy")},
            "sqlite": sqlite3.sqlite_version,
        },
        "targets": {}, "phases": {p: {} for p in a.phases}, "bench_errors": [],
    }
    targets = [Target("openopen8", ROOT, commit + ("+dirty" if result["meta"]["dirty"] else ""))]
    for ref in a.openopen8_at:
        name = f"openopen8@{ref}"
        if (Path(ref) / "openopen8").is_dir():
            targets.append(Target(name, Path(ref).resolve(), "?"))
            continue
        try:
            targets.append(Target(name, openopen8_source(ref, run_dir),
                                  _git("rev-parse", "--short", ref)))
        except subprocess.CalledProcessError as exc:
            result["bench_errors"].append(f"{name}: git archive failed: {exc}")
    for t in targets:
        result["targets"][t.name] = {"commit": t.commit, "src": str(t.src)}

    upstream = None
    try:
        upstream, uport = start_ready([sys.executable, str(BENCH / "edge_upstream.py")],
                                      run_dir / "upstream.log")
        up_http = f"http://127.0.0.1:{uport}"
        log(f"stand-in upstream on {up_http} (pid {upstream.pid})")
        for phase in a.phases:
            for t in targets:
                slug = f"{t.name.replace('/', '_').replace('@', '-')}-{phase}"
                gw = Gateway(t.name, t.src, run_dir / slug, up_http, run_dir / f"{slug}.log",
                             nofile=a.nofile if phase == "fdlimit" else None)
                log(f"{phase}: {t.name} …")
                t0 = time.monotonic()
                try:
                    gw.provision()
                    gw.start()
                    res = await PHASE_FUNCS[phase](gw, a)
                    res["gateway_starts"] = gw.starts
                except Exception as exc:  # noqa: BLE001 - a bench failure is reported, not hidden
                    msg = f"{phase} / {t.name}: {type(exc).__name__}: {exc}"
                    log(f"  BENCH ERROR {msg}")
                    result["bench_errors"].append(msg)
                    res = {"bench_error": msg}
                finally:
                    gw.stop()
                res["phase_seconds"] = time.monotonic() - t0
                result["phases"][phase][t.name] = res
                log(f"  {phase} {t.name}: {res['phase_seconds']:.1f} s")
        result["meta"]["loadavg_end"] = os.getloadavg()
    finally:
        stop_proc(upstream)
        if not a.keep_logs and not result["bench_errors"]:
            shutil.rmtree(run_dir, ignore_errors=True)
    return result


# ---- the report ---------------------------------------------------------------------

def _f(v: Any, spec: str = ".1f") -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return format(v, spec)
    if isinstance(v, dict):
        return ", ".join(f"{k}: {x}" for k, x in v.items()) or "—"
    return str(v)


def _rng(st: dict[str, Any], spec: str = ".2f") -> str:
    if not st or not st.get("n"):
        return "—"
    return f"{_f(st['median'], spec)} ({_f(st['min'], spec)}–{_f(st['max'], spec)})"


def rows_for(phase: str, r: dict[str, Any]) -> list[tuple[str, str]]:
    if "bench_error" in r:
        return [("BENCH ERROR", r["bench_error"])]
    if phase == "fuzz":
        return [
            ("frames sent", _f(r["frames_sent"])),
            ("error events answered", _f(r["errors_answered"])),
            ("  … by the gateway / the upstream",
             f"{r['errors_from_gateway']} / {r['errors_from_upstream']}"),
            ("frames answered by: error / other event / nothing",
             " / ".join(str(r["frames_answered"].get(k, 0))
                        for k in ("error", "other event", "nothing"))),
            ("sessions opened", _f(r["sessions_opened"])),
            ("sessions ended by the gateway", _f(r["sessions_ended_by_gateway"])),
            ("  … close codes", _f(r["close_codes"])),
            ("  … ended by a frame of kind", _f(r["sessions_ended_by_kind"])),
            ("echo checks unanswered", _f(r["echo_timeouts"])),
            ("gateway crashes / healthz unanswered",
             f"{r['gateway_crashes']} / {r['healthz_unanswered']}"),
            ("log: bytes / ERROR lines / tracebacks",
             f"{r['log_bytes']:,} / {r['log_error_lines']} / {r['log_tracebacks']}"),
            ("frames/s", _f(r["frames_per_s"], ",.0f")),
        ]
    if phase == "hold":
        s, i = r["slowloris"], r["idle"]
        return [
            ("slowloris closed / held", f"{s['closed']} / {s['connected']} "
             f"(a byte every {s['byte_interval_s']:g} s)"),
            ("  … slowloris closed after s, median (min–max)", _rng(s["closed_after_s"], ".1f")),
            ("  … slowloris answer", _f(s["answers"])),
            ("idle closed / held", f"{i['closed']} / {i['connected']}"),
            ("  … idle closed after s, median (min–max)", _rng(i["closed_after_s"], ".1f")),
            ("  … idle answer", _f(i["answers"])),
            ("valid session while held: ok / tried",
             f"{r['valid_sessions_ok']} / {r['valid_sessions_tried']}"),
            ("  … open s, median (min–max)", _rng(r["valid_session_s"], ".3f")),
            ("healthz ok / tried while held", f"{r['healthz_ok']} / {r['healthz_tried']}"),
            ("log bytes", f"{r['log_bytes']:,}"),
        ]
    if phase == "fdlimit":
        return [
            ("RLIMIT_NOFILE / idle connections opened",
             f"{r['nofile']} / {r['connections_opened']}"),
            ("gateway CPU % (before / held / after)",
             f"{_f(r['cpu_pct_before'], '.0f')} / {_f(r['cpu_pct'], '.0f')} / "
             f"{_f(r['cpu_pct_after'], '.0f')}"),
            ("log while held: bytes/s (ERROR lines)",
             f"{r['log_bytes_per_s']:,.0f} ({r['log_error_lines']})"),
            ("healthz ok / tried while held", f"{r['healthz_ok']} / {r['healthz_tried']}"),
            ("  … s, median (min–max)", _rng(r["healthz_s"], ".3f")),
            ("valid session while held", _f(r["valid_session_ok"])
             + (f" ({r['valid_session_s']:.3f} s)" if r["valid_session_s"] is not None else "")),
            ("healthz again after release, s", _f(r["healthz_recovered_after_s"], ".2f")
             if r["healthz_recovered_after_s"] is not None
             else f"not within {r['recover_cap_s']:g} s"),
            ("gateway alive", _f(r["gateway_alive_at_end"])),
        ]
    if phase == "durability":
        out = []
        for d, x in r["by_delay"].items():
            out.append((f"kill {d} s after response.done: rows lost / responses",
                        f"{x['rows_lost']} / {x['responses_done']} "
                        f"({x['runs_losing_rows']} of {x['runs']} runs lost rows)"))
            out.append((f"  … {d} s: sessions open after kill / after restart",
                        f"{x['sessions_open_after_kill']} / {x['sessions_open_after_restart']}"
                        f" (closed_by: {_f(x['closed_by_after_restart'])})"))
        return out
    return []


TITLES = {"fuzz": "Fuzzed client frames", "hold": "Slowloris and idle connections",
          "fdlimit": "Descriptor limit", "durability": "Crash durability (SIGKILL)"}


def report(result: dict[str, Any]) -> None:
    m = result["meta"]
    libs = m["libraries"]
    print(f"openopen8 edge reliability — commit {m['commit']}{' (dirty)' if m['dirty'] else ''}, "
          f"Python {m['python']}, picows {libs['picows']}, aiofastnet {libs['aiofastnet']}, "
          f"uvloop {libs['uvloop']}, SQLite {m['sqlite']}, {m['cpus']} CPUs"
          + (" — QUICK (smoke run; figures not meaningful)" if m["quick"] else ""))
    for name, t in result["targets"].items():
        print(f"  target {name}: {t['commit']}")
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
        con = Console(width=140)
    except ImportError:  # pragma: no cover
        con = None
    for phase, per in result["phases"].items():
        names = list(per)
        table: dict[str, dict[str, str]] = {}
        for n in names:
            for label, v in rows_for(phase, per[n]):
                assert n not in table.get(label, {}), f"two rows labelled {label!r}"
                table.setdefault(label, {})[n] = v
        if con is not None:
            tb = Table(title=TITLES[phase], title_justify="left")
            tb.add_column("")
            for n in names:
                tb.add_column(escape(n), overflow="fold")
            for label, vs in table.items():
                tb.add_row(escape(label), *(escape(vs.get(n, "")) for n in names))
            con.print(tb)
        else:
            print(f"\n{TITLES[phase]}\n" + " | ".join(["", *names]))
            for label, vs in table.items():
                print(" | ".join([label, *(vs.get(n, "") for n in names)]))
    for e in result["bench_errors"]:
        print(f"BENCH ERROR: {e}")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    result = asyncio.run(run(a))
    report(result)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
        log(f"wrote {a.json}")
    return 1 if result["bench_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
