"""A deployment on loopback, for tests and bench/deploy.py: real ``openopen8
serve`` processes on one PostgreSQL database behind a real nginx running the
shipped ``deploy/nginx/openopen8.conf`` (ports, certificate and the upstream
list substituted; everything else as shipped)."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from openopen8 import ops
from openopen8.crypto import SecretBox
from openopen8.store.base import TokenLimits
from openopen8.store.sql import open_store

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = ROOT / "deploy" / "nginx" / "openopen8.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Instance:
    """One ``openopen8 serve`` subprocess (``python -m openopen8.cli``)."""

    def __init__(self, name: str, folder: Path, db_url: str, secret_key: str,
                 port: int | None = None, **settings: Any) -> None:
        self.name = name
        self.data = folder / name
        self.log = folder / f"{name}.log"
        self.port = port or free_port()
        self.env = {**os.environ, "OPENOPEN8_DATABASE_URL": db_url,
                    "OPENOPEN8_SECRET_KEY": secret_key, "OPENOPEN8_LOCAL_ENGINE": "false",
                    "OPENOPEN8_TRUSTED_PROXIES": "127.0.0.1"}
        for k, v in settings.items():
            self.env[f"OPENOPEN8_{k.upper()}"] = str(v)
        self.proc: subprocess.Popen | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "Instance":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openopen8.cli", "serve", "--data-dir", str(self.data),
             "--host", "127.0.0.1", "--port", str(self.port)], env=self.env,
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                if self.proc.poll() is not None:
                    raise AssertionError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
                try:
                    async with http.get(f"{self.http}/healthz") as r:
                        if r.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name} did not start")

    async def until_draining(self, http: aiohttp.ClientSession, seconds: float = 20,
                             every: float = 0.05) -> tuple[int, Any]:
        """Poll /healthz until it answers 503 (draining) or ``seconds`` have
        passed: the last (status, body)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            async with http.get(f"{self.http}/healthz") as r:
                status, body = r.status, await r.json()
            if status == 503 or loop.time() > deadline:
                return status, body
            await asyncio.sleep(every)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def exited(self, timeout: float = 60) -> int:
        """The exit status, once the process is gone."""
        assert self.proc is not None
        proc = self.proc
        return await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.send_signal(signal.SIGTERM)   # the second: at once
            try:
                await self.exited(20)
            except TimeoutError:
                self.proc.kill()
                self.proc.wait()


def nginx_conf(folder: Path, upstreams: list[int], http_port: int, https_port: int,
               cert: Path, key: Path) -> Path:
    """The shipped config with this test's ports and certificate, in a main
    config whose files all live under ``folder``."""
    text = NGINX_CONF.read_text()
    first = re.search(r"    server 127\.0\.0\.1:\d+( [^\n]*)?;\n", text)
    assert first is not None
    servers = "".join(f"    server 127.0.0.1:{p}{first.group(1) or ''};\n" for p in upstreams)
    text, n = re.subn(r"(    server 127\.0\.0\.1:\d+[^\n]*\n)+", lambda m: servers, text)
    assert n == 1
    for pattern, repl in ((r"listen 80;", f"listen 127.0.0.1:{http_port};"),
                          (r"listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
                          (r"\s*listen \[::\]:\d+( ssl)?;", ""),
                          (r"ssl_certificate     \S+;", f"ssl_certificate     {cert};"),
                          (r"ssl_certificate_key \S+;", f"ssl_certificate_key {key};"),
                          # the plain server block proxies too (the shipped one redirects)
                          (r"return 308 https://\$host\$request_uri;", "proxy_pass http://openopen8; "
                           "proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; "
                           "proxy_set_header Connection $openopen8_connection; "
                           "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; "
                           "proxy_next_upstream error timeout http_503; "
                           "proxy_read_timeout 3700s;")):
        text, n = re.subn(pattern, repl, text)
        assert n >= 1, pattern
    site = folder / "openopen8.conf"
    site.write_text(text)
    main = folder / "nginx.conf"
    user = "root" if os.geteuid() == 0 else None
    main.write_text(
        (f"user {user};\n" if user else "")
        + f"worker_processes 1;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log info;\n"
        "events { worker_connections 4096; }\n"
        "http {\n"
        f"  access_log {folder}/access.log;\n"
        f"  client_body_temp_path {folder}/body; proxy_temp_path {folder}/proxy;\n"
        f"  fastcgi_temp_path {folder}/fastcgi; uwsgi_temp_path {folder}/uwsgi;\n"
        f"  scgi_temp_path {folder}/scgi;\n"
        "  proxy_bind 127.0.0.1;\n"
        f"  include {site};\n"
        "}\n")
    return main


class Nginx:
    def __init__(self, folder: Path, upstreams: list[int], cert: Path, key: Path) -> None:
        self.folder = folder / "nginx"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.http_port, self.https_port = free_port(), free_port()
        self.conf = nginx_conf(self.folder, upstreams, self.http_port, self.https_port, cert, key)
        self.proc: subprocess.Popen | None = None

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.http_port}/v1/realtime"

    @property
    def wss(self) -> str:
        return f"wss://127.0.0.1:{self.https_port}/v1/realtime"

    async def start(self) -> "Nginx":
        self.proc = subprocess.Popen(
            [NGINX, "-c", str(self.conf), "-p", str(self.folder), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=(self.folder / "stderr.log").open("ab"))
        for _ in range(200):
            if self.proc.poll() is not None:
                raise AssertionError("nginx exited: " + (self.folder / "stderr.log").read_text()
                                     + (self.folder / "error.log").read_text()[-2000:])
            try:
                _, w = await asyncio.open_connection("127.0.0.1", self.http_port)
                w.close()
                return self
            except OSError:
                await asyncio.sleep(0.05)
        raise AssertionError("nginx did not start")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)   # graceful; SIGTERM is fast shutdown
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 5)
            except TimeoutError:
                self.proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(self.proc.wait)


async def provision(db_url: str, secret_key: str, upstream_base_url: str,
                    **limits: Any) -> tuple[str, str]:
    """Migrate the database, add a channel to the stand-in and a token with
    ``limits`` (ops.parse_limits names).  Returns (token name, secret)."""
    store = await open_store(db_url)
    try:
        box = SecretBox(secret_key)
        if not await store.list_channels():
            await ops.add_channel(store, box, "standin", "openai", key="sk-good",
                                  models=["gpt-realtime"], base_url=upstream_base_url)
        name = "deploy-" + secrets.token_hex(3)
        new = await ops.create_token(store, name, limits=TokenLimits(**ops.parse_limits(**limits)))
        return name, new.secret
    finally:
        await store.close()

