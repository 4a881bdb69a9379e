"""The deployment benchmark: sessions and CPU per gateway instance through
nginx, with one instance behind it and with two, on one PostgreSQL database.

    python bench/deploy.py [--quick] [--steps 50,100,...] [--turn-every 50] [--json out.json]

Pieces (bench/relay.py's, reused: its stand-in upstream, load generators,
measurement window and CPU readings):

* the picows stand-in upstream (``bench/standin.py``): one 20 ms audio delta
  per 20 ms audio append, and with ``--turn-every N`` a ``response.done`` with
  usage after every N deltas (default 50: one ledger row per session per
  second, far more than real conversations make -- PostgreSQL's share shows);
* two real ``openopen8 serve`` processes on a fresh PostgreSQL database
  (127.0.0.1:5432 unless ``--pg``), sharing ``OPENOPEN8_SECRET_KEY``;
* two nginx processes running deploy/nginx/openopen8.conf (one worker each):
  ``nginx>1`` proxies to the first instance, ``nginx>2`` to both;
* targets: ``direct`` (straight to the stand-in: the baseline), ``nginx>1``,
  ``nginx>2``.

At each N, the direct baseline and then each target; a target passes while
its p99 round trip *added* to direct's stays under ``--limit-ms`` (20).
Printed per target: the largest N that passed, and at each N the CPU
(fraction of one core) of nginx, of each gateway instance and of PostgreSQL
over the window, and sessions per core of gateway CPU.  Everything shares
this machine's cores (load generators included): compare the rows, and read
absolute figures as this machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(BENCH), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

import psutil  # noqa: E402

from relay import (MODEL, Load, Target, _added, _proc_cpu, free_port, log,  # noqa: E402
                   measure, start_ready, stop_proc, wait_http)
from tests.deploykit import NGINX, nginx_conf  # noqa: E402
from tests.tls import make_cert  # noqa: E402

DEFAULT_STEPS = [25, 50, 100, 150, 200, 300, 400, 500]
LIMIT_MS = 20.0


def backends_cpu(db_name: str) -> dict[int, float]:
    """CPU-seconds of each PostgreSQL backend serving ``db_name`` (its
    process title names the database): the gateways' pooled connections.
    Other databases' backends (other work on this server) are left out."""
    out = {}
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            title = " ".join(p.info["cmdline"] or ())
            if title.startswith("postgres:") and f" {db_name} " in title:
                out[p.pid] = _proc_cpu(p)
        except psutil.Error:
            pass
    return out


def database_counts(url: str) -> dict[str, int]:
    """Ledger rows and session rows written, and transactions committed."""
    import asyncpg

    async def go() -> dict[str, int]:
        conn = await asyncpg.connect(url)
        try:
            return {"ledger_rows": await conn.fetchval("SELECT count(*) FROM ledger"),
                    "session_rows": await conn.fetchval("SELECT count(*) FROM sessions"),
                    "commits": await conn.fetchval(
                        "SELECT xact_commit FROM pg_stat_database WHERE datname = "
                        "current_database()")}
        finally:
            await conn.close()
    return asyncio.run(go())


def create_database(admin_url: str) -> str:
    import asyncpg

    name = "oo8_bench_" + secrets.token_hex(4)

    async def go() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
    asyncio.run(go())
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_database(admin_url: str, url: str) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
        finally:
            await conn.close()
    asyncio.run(go())


def start_instances(k: int, db_url: str, up_http: str, run_dir: Path
                    ) -> tuple[list[subprocess.Popen], list[int], str]:
    """``k`` serve processes on one database; a token and a channel made
    with the CLI first (which migrates the database).  Returns the processes,
    their ports and the token's secret."""
    key = secrets.token_urlsafe(32)
    base = {**os.environ, "OPENOPEN8_DATABASE_URL": db_url, "OPENOPEN8_SECRET_KEY": key,
            "OPENOPEN8_LOCAL_ENGINE": "false", "OPENOPEN8_TRUSTED_PROXIES": "127.0.0.1",
            "OPENOPEN8_DATA_DIR": str(run_dir / "cli-data")}
    cli = [sys.executable, "-m", "openopen8.cli"]
    out = subprocess.run([*cli, "tokens", "create", "bench", "--json"], env=base, cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True)
    secret = json.loads(out.stdout.strip().splitlines()[-1])["secret"]
    subprocess.run([*cli, "channels", "add", "standin", "--type", "openai", "--key", "sk-bench",
                    "--base-url", up_http + "/v1", "--models", MODEL],
                   env=base, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    procs, ports = [], []
    for i in range(k):
        port = free_port()
        env = {**base, "OPENOPEN8_DATA_DIR": str(run_dir / f"gw{i}-data")}
        logf = open(run_dir / f"gw{i}.log", "ab")
        procs.append(subprocess.Popen([*cli, "serve", "--host", "127.0.0.1", "--port", str(port)],
                                      env=env, cwd=ROOT, stdout=logf, stderr=logf,
                                      start_new_session=True))
        ports.append(port)
    for proc, port in zip(procs, ports):
        wait_http(f"http://127.0.0.1:{port}/healthz", 60, proc)
    return procs, ports, secret


def start_nginx(name: str, upstreams: list[int], run_dir: Path, cert: Path, key: Path
                ) -> tuple[subprocess.Popen, int]:
    folder = run_dir / name
    folder.mkdir()
    port = free_port()
    conf = nginx_conf(folder, upstreams, port, free_port(), cert, key)
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(folder), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=open(folder / "stderr.log", "ab"),
                            start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            import socket
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, port
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    raise RuntimeError(f"nginx did not start (see {folder})")


def admissions(db_url: str, total: int, concurrency: int) -> dict[str, Any]:
    """PostgreSQL's busiest job for one token: ``total`` session admissions
    (``store.open_session``: the token row locked FOR UPDATE, limits counted,
    the row inserted) at ``concurrency`` at once, over two engines (two
    instances' pools), each session's row closed again at once.  All on one
    token: the worst case, as its row lock serialises them."""
    from datetime import timedelta

    from openopen8 import ops
    from openopen8.store.base import SessionEnd, TokenLimits, utcnow
    from openopen8.store.sql import open_store

    async def go() -> dict[str, Any]:
        a, b = await open_store(db_url), await open_store(db_url, migrate=False)
        try:
            rec = (await ops.create_token(a, "admissions-" + secrets.token_hex(3), limits=TokenLimits(
                max_sessions=concurrency * 2, sessions_per_minute=10 ** 9))).record
            sem = asyncio.Semaphore(concurrency)
            lat: list[float] = []

            async def one(i: int) -> None:
                store = a if i % 2 else b
                async with sem:
                    t0 = time.perf_counter()
                    await store.open_session(f"adm_{rec.id}_{i}", rec.id, MODEL, f"bench{i % 2}",
                                             utcnow() + timedelta(seconds=30))
                    lat.append(time.perf_counter() - t0)
                    await store.write_ledger([], [SessionEnd(f"adm_{rec.id}_{i}", "client",
                                                             1000)])
            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(total)))
            elapsed = time.perf_counter() - t0
            lat.sort()
            return {"admissions": total, "concurrency": concurrency, "seconds": elapsed,
                    "per_s": total / elapsed, "p50_ms": lat[len(lat) // 2] * 1000,
                    "p99_ms": lat[int(len(lat) * 0.99)] * 1000}
        finally:
            await a.close()
            await b.close()
    return asyncio.run(go())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: tiny N, short windows")
    ap.add_argument("--steps", help=f"comma-separated N (default {DEFAULT_STEPS})")
    ap.add_argument("--duration", type=float, help="measuring window per step, seconds (4)")
    ap.add_argument("--warmup", type=float, help="seconds of load before the window (1)")
    ap.add_argument("--turn-every", type=int, default=50,
                    help="a response.done with usage after every N deltas of a session (0: none)")
    ap.add_argument("--targets", default="nginx>1,nginx>2",
                    help="which of nginx>1, nginx>2 to step through (both by default)")
    ap.add_argument("--limit-ms", type=float, default=LIMIT_MS)
    ap.add_argument("--retries", type=int, default=1, help="re-run a failing step this often")
    ap.add_argument("--load-procs", type=int, default=1)
    ap.add_argument("--pg", default=os.environ.get(
        "OPENOPEN8_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="an admin URL of the PostgreSQL server (a database is made and dropped)")
    ap.add_argument("--admissions", type=int, default=None,
                    help="session admissions on one token in the PostgreSQL phase (2000; "
                    "0: skip it)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep-logs", action="store_true")
    a = ap.parse_args(argv)
    a.steps = ([int(x) for x in a.steps.split(",")] if a.steps
               else [4, 8] if a.quick else DEFAULT_STEPS)
    a.duration = a.duration or (0.3 if a.quick else 4.0)
    a.warmup = a.warmup if a.warmup is not None else (0.1 if a.quick else 1.0)
    a.drain = 0.1 if a.quick else 1.0
    if a.admissions is None:
        a.admissions = 100 if a.quick else 2000
    return a


def run(a: argparse.Namespace) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix="oo8-deploy-bench-"))
    result: dict[str, Any] = {"meta": {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                       "cpus": os.cpu_count(), "steps": a.steps,
                                       "duration_s": a.duration, "turn_every": a.turn_every,
                                       "limit_ms": a.limit_ms, "run_dir": str(run_dir),
                                       "loadavg_start": os.getloadavg()},
                              "steps": [], "summary": {}}
    procs: list[subprocess.Popen] = []
    standin = load = None
    db_url = None
    try:
        standin, sport = start_ready([sys.executable, str(BENCH / "standin.py"),
                                      "--turn-every", str(a.turn_every)], run_dir / "standin.log")
        procs.append(standin)
        up_ws, up_http = f"ws://127.0.0.1:{sport}", f"http://127.0.0.1:{sport}"
        db_url = create_database(a.pg)
        gws, ports, secret = start_instances(2, db_url, up_http, run_dir)
        procs += gws
        cert, key = make_cert(run_dir)
        n1, p1 = start_nginx("nginx1", ports[:1], run_dir, cert, key)
        n2, p2 = start_nginx("nginx2", ports, run_dir, cert, key)
        procs += [n1, n2]
        db_name = db_url.rsplit("/", 1)[1]
        headers = {"Authorization": f"Bearer {secret}"}
        direct = Target("direct", url=f"{up_ws}/v1/realtime?model={MODEL}")
        one = Target("nginx>1", url=f"ws://127.0.0.1:{p1}/v1/realtime?model={MODEL}",
                     headers=headers, pids={"nginx": n1.pid, "gw0": gws[0].pid})
        two = Target("nginx>2", url=f"ws://127.0.0.1:{p2}/v1/realtime?model={MODEL}",
                     headers=headers, pids={"nginx": n2.pid, "gw0": gws[0].pid,
                                            "gw1": gws[1].pid})
        load = Load(a.load_procs)
        pg0, counts0, t_start = backends_cpu(db_name), database_counts(db_url), time.monotonic()
        for t in (direct, one, two):      # warm-up: imports, first connections
            measure(load, t, standin.pid, n=2, mode="rate", warm=0.1, dur=0.2, drain=0.1)
        active = [t for t in (one, two) if t.name in a.targets.split(",")]
        for n in a.steps:
            if not active:
                break
            base = measure(load, direct, standin.pid, n=n, mode="rate", warm=a.warmup,
                           dur=a.duration, drain=a.drain)
            result["steps"].append(base)
            log(f"N={n} direct p99 {base.get('latency_ms', {}).get('p99', float('nan')):.2f} ms")
            if not base["ok"]:
                log("the direct connection failed: the load generator is the limit; stopping")
                break
            for t in list(active):
                for attempt in range(a.retries + 1):
                    r = measure(load, t, standin.pid, n=n, mode="rate", warm=a.warmup,
                                dur=a.duration, drain=a.drain)
                    _added(r, base)
                    r["passed"] = bool(r["ok"] and r["added_p99_ms"] is not None
                                       and r["added_p99_ms"] < a.limit_ms)
                    r["cpu_util"] = {k: v / a.duration for k, v in r["cpu_s_apart"].items()}
                    result["steps"].append(r)
                    log(line(r))
                    if r["passed"]:
                        break
                    base = measure(load, direct, standin.pid, n=n, mode="rate", warm=a.warmup,
                                   dur=a.duration, drain=a.drain)
                    result["steps"].append(base)
                if not r["passed"] and not a.quick:
                    active.remove(t)
        pg1, counts1 = backends_cpu(db_name), database_counts(db_url)
        elapsed = time.monotonic() - t_start
        pg_cpu = sum(cpu - pg0.get(pid, 0.0) for pid, cpu in pg1.items())
        done = {k: counts1[k] - counts0[k] for k in counts1}
        result["postgres"] = {
            **done, "seconds": elapsed, "backend_cpu_s": pg_cpu,
            "backend_cpu_util": pg_cpu / elapsed,
            "ledger_rows_per_s": done["ledger_rows"] / elapsed,
            "commits_per_s": done["commits"] / elapsed,
            "backend_cpu_ms_per_commit": pg_cpu / done["commits"] * 1000 if done["commits"] else None}
        if a.admissions:
            result["admissions"] = adm = admissions(db_url, a.admissions, 32)
            log(f"admissions on one token: {adm['per_s']:.0f}/s, p50 {adm['p50_ms']:.1f} ms, "
                f"p99 {adm['p99_ms']:.1f} ms ({adm['concurrency']} at once, two engines)")
        result["meta"]["loadavg_end"] = os.getloadavg()
        result["summary"] = summarize(result)
    finally:
        if load is not None:
            load.quit()
        for p in reversed(procs):
            stop_proc(p)
        if db_url is not None:
            drop_database(a.pg, db_url)
        if not a.keep_logs:
            shutil.rmtree(run_dir, ignore_errors=True)
    return result


def line(r: dict) -> str:
    lat = r.get("latency_ms") or {}
    cpu = " ".join(f"{k} {v:.2f}" for k, v in r.get("cpu_util", {}).items())
    return (f"N={r['n']} {r['target']}: p99 {lat.get('p99', float('nan')):.2f} ms "
            f"(+{r.get('added_p99_ms') or float('nan'):.2f}) "
            f"{'pass' if r.get('passed') else 'FAIL'}; CPU (cores) {cpu}")


def summarize(result: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("nginx>1", "nginx>2"):
        steps = [r for r in result["steps"] if r["target"] == name and r.get("round_trips")]
        if not steps:
            continue
        # CPU per round trip over every step (passed or not): steadier than the
        # p99-bound N on a shared machine; 50 round trips a second per session
        rts = sum(r["round_trips"] for r in steps)
        per_10k = {k: sum(r["cpu_s_apart"][k] for r in steps) / rts * 10_000
                   for k in (steps[0]["cpu_s_apart"] if steps else {})} if rts else {}
        gw_10k = sum(v for k, v in per_10k.items() if k.startswith("gw"))
        model = {"cpu_s_per_10k_rt": per_10k,
                 "sessions_per_core_cpu_model": {
                     "gateway": 1 / (gw_10k / 10_000 * 50) if gw_10k else None,
                     "nginx": (1 / (per_10k["nginx"] / 10_000 * 50)
                               if per_10k.get("nginx") else None)}}
        passed = [r for r in steps if r.get("passed")]
        if not passed:
            out[name] = {"max_sessions": 0, **model}
            continue
        best = max(passed, key=lambda r: r["n"])
        util = best["cpu_util"]
        gw = sum(v for k, v in util.items() if k.startswith("gw"))
        out[name] = {"max_sessions": best["n"], "p99_ms": best["latency_ms"]["p99"],
                     "added_p99_ms": best["added_p99_ms"], "cpu_util": util,
                     "gateway_cores": gw,
                     "sessions_per_gateway_core": best["n"] / gw if gw else None,
                     "limit_reached": any(r["target"] == name and not r.get("passed")
                                          for r in result["steps"]), **model}
    return out


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    result = run(a)
    if a.json:
        a.json.write_text(json.dumps(result, indent=1, default=str))
    m = result["meta"]
    print(f"\nload average {m['loadavg_start'][0]:.2f} at the start, "
          f"{m.get('loadavg_end', [float('nan')])[0]:.2f} at the end ({m['cpus']} CPUs)")
    print("at the largest N whose added p99 < %g ms (CPU in cores over the window):"
          % a.limit_ms)
    for name, s in result["summary"].items():
        if not s.get("max_sessions"):
            print(f"  {name}: no step passed")
            continue
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in s["cpu_util"].items())
        print(f"  {name}: {s['max_sessions']}{'' if s['limit_reached'] else '+'} sessions, "
              f"p99 {s['p99_ms']:.1f} ms (+{s['added_p99_ms']:.1f}); {cpu}; "
              f"{s['sessions_per_gateway_core'] or 0:.0f} sessions per gateway core")
    pg = result.get("postgres")
    if pg:
        print(f"PostgreSQL (this database's backends, whole run of {pg['seconds']:.0f} s): "
              f"{pg['commits']} commits ({pg['commits_per_s']:.0f}/s), {pg['ledger_rows']} "
              f"ledger rows ({pg['ledger_rows_per_s']:.0f}/s), {pg['session_rows']} session rows; "
              f"backend CPU {pg['backend_cpu_util']:.3f} cores, "
              f"{pg['backend_cpu_ms_per_commit'] or 0:.2f} ms per commit")
    adm = result.get("admissions")
    if adm:
        print(f"session admissions on one token (row-locked), {adm['concurrency']} at once over "
              f"two engines: {adm['per_s']:.0f}/s, p50 {adm['p50_ms']:.1f} ms, "
              f"p99 {adm['p99_ms']:.1f} ms")
    print("CPU-s per 10k round trips over every step, and what one busy core carries at that "
          "rate (50 round trips/s per session):")
    for name, s in result["summary"].items():
        cpu = ", ".join(f"{k} {v:.3f}" for k, v in s["cpu_s_per_10k_rt"].items())
        m = s["sessions_per_core_cpu_model"]
        print(f"  {name}: {cpu}; a gateway core ~{m['gateway'] or 0:.0f} sessions, "
              f"an nginx core ~{m['nginx'] or 0:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
