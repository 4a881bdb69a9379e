"""A gateway out of file descriptors: the real CLI served under a low
RLIMIT_NOFILE, flooded with idle TCP connections, and measured from outside
(CPU from /proc/PID/stat, log bytes, open descriptors).

Shared by tests/test_fd_exhaustion.py (behaviour) and bench/edge.py (figures:
CPU % and log bytes under fd exhaustion), so both drive the same situation.
Linux only (/proc).

    gw = serve_limited(data_dir, nofile=128)
    idle = open_idle(gw.port, gw.nofile + 64)
    figures = await hold_exhausted(gw, seconds=2.0)   # CPU %, log bytes, descriptors
    close_all(idle)
    gw.stop()
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

EXE = [sys.executable, "-m", "openopen8.cli"]
_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env() -> dict[str, str]:
    env = {**os.environ, "OPENOPEN8_LOCAL_ENGINE": "false"}
    env.pop("OPENOPEN8_DATABASE_URL", None)
    return env


def cli(*args: str, data_dir: Path) -> str:
    """Run an `openopen8` command on ``data_dir``; its stdout."""
    p = subprocess.run([*EXE, *args, "--data-dir", str(data_dir)], capture_output=True,
                       text=True, env=cli_env(), timeout=60)
    if p.returncode != 0:
        raise AssertionError(f"openopen8 {args[0]} failed: {p.stdout}\n{p.stderr}")
    return p.stdout


@dataclass
class LimitedGateway:
    proc: subprocess.Popen
    port: int
    nofile: int
    log_path: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    def log_bytes(self) -> int:
        return self.log_path.stat().st_size

    def log_text(self, start: int = 0) -> str:
        with self.log_path.open("rb") as f:
            f.seek(start)
            return f.read().decode("utf-8", "replace")

    def cpu_seconds(self) -> float:
        """User + system CPU the gateway process has used so far."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / _TICK   # utime, stime

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def nofile_limits(self) -> tuple[str, str]:
        """The gateway's RLIMIT_NOFILE now (soft, hard), as /proc shows them."""
        for line in Path(f"/proc/{self.proc.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return soft, hard
        raise AssertionError("no 'Max open files' in /proc/PID/limits")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def serve_limited(data_dir: Path, nofile: int, port: int | None = None,
                  hard: int | None = None) -> LimitedGateway:
    """`openopen8 serve` on 127.0.0.1 with RLIMIT_NOFILE ``nofile`` (soft and,
    unless ``hard`` is given, hard: the gateway cannot raise it), logging to
    ``data_dir``/serve.log; returns once it accepts connections."""
    port = port or free_port()
    log_path = Path(data_dir) / "serve.log"

    def limit() -> None:  # in the child, before exec
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard or nofile))

    with log_path.open("wb") as log:
        proc = subprocess.Popen([*EXE, "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--data-dir", str(data_dir)],
                                env=cli_env(), stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=limit)
    gw = LimitedGateway(proc, port, nofile, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the gateway exited: {gw.log_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return gw
        except OSError:
            time.sleep(0.05)
    gw.stop()
    raise AssertionError("the gateway did not start listening within 30 s")


def open_idle(port: int, n: int) -> list[socket.socket]:
    """``n`` TCP connections to the gateway that never send a byte.  The
    kernel completes them (backlog 1024) whether or not the gateway accepts."""
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]


def close_all(conns: list[socket.socket]) -> None:
    for c in conns:
        c.close()
    conns.clear()


async def healthz(gw: LimitedGateway, timeout: float) -> int | None:
    """GET /healthz: its status, or None when unanswered within ``timeout``."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
            async with http.get(gw.http + "/healthz") as resp:
                await resp.read()
                return resp.status
    except (asyncio.TimeoutError, aiohttp.ClientError):
        return None


@dataclass
class Exhaustion:
    seconds: float        # how long it was measured
    cpu_percent: float    # of one core, the gateway process
    log_bytes: int        # written to the gateway's log meanwhile
    open_fds: int         # the gateway's, at the end
    log: str              # what it wrote meanwhile (decoded; truncated to 64 KiB)


async def wait_exhausted(gw: LimitedGateway, timeout: float = 15.0) -> None:
    """Until the gateway holds every descriptor it may (accept() now fails)."""
    deadline = time.monotonic() + timeout
    while gw.open_fds() < gw.nofile:
        if time.monotonic() > deadline:
            raise AssertionError(f"the gateway holds {gw.open_fds()} of {gw.nofile} descriptors "
                                 f"after {timeout} s: open more idle connections")
        await asyncio.sleep(0.02)


async def hold_exhausted(gw: LimitedGateway, seconds: float) -> Exhaustion:
    """Wait until the gateway is out of descriptors, then measure it for
    ``seconds`` (the caller keeps its idle connections open meanwhile)."""
    await wait_exhausted(gw)
    log0, cpu0, t0 = gw.log_bytes(), gw.cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, t1, log1 = gw.cpu_seconds(), time.monotonic(), gw.log_bytes()
    with gw.log_path.open("rb") as f:
        f.seek(log0)
        text = f.read(min(log1 - log0, 64 * 1024)).decode("utf-8", "replace")
    return Exhaustion(seconds=t1 - t0, cpu_percent=100 * (cpu1 - cpu0) / (t1 - t0),
                      log_bytes=log1 - log0, open_fds=gw.open_fds(), log=text)
