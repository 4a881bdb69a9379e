"""The console's login and its guards, over real HTTP: the login form
(wrong tokens refused and braked), an HttpOnly SameSite=Strict cookie, the
CSRF token required on every change (the admin API with the cookie, logout,
the playground's secret), pages never holding the admin token, and the
assets shipped in the package."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from openopen8.auth import hash_secret
from openopen8.web import dashboard
from tests.conftest import start_gateway

ADMIN = "adm-dash-secret-1"


async def login(http: aiohttp.ClientSession, token: str = ADMIN) -> aiohttp.ClientResponse:
    return await http.post("/dashboard/login", data={"admin_token": token},
                           allow_redirects=False)


def csrf_of(html: str) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', html).group(1)


async def test_login_cookie_csrf_and_logout(tmp_path):
    g = await start_gateway(tmp_path, admin_token=ADMIN)
    try:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(g.http, cookie_jar=jar) as http:
            async with http.get("/dashboard/tokens", allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/dashboard/login"
            async with http.get("/dashboard/login") as r:
                assert r.status == 200 and 'name="admin_token"' in await r.text()
            r = await login(http, "wrong")
            assert r.status == 401 and "not the admin token" in await r.text()
            assert not list(jar)
            r = await login(http)
            assert r.status == 303 and r.headers["Location"] == "/dashboard/"
            cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
            assert ADMIN not in cookie
            pages = {}
            for path in ("/dashboard/", "/dashboard/tokens", "/dashboard/channels",
                         "/dashboard/usage", "/dashboard/sessions", "/dashboard/playground"):
                async with http.get(path) as r:
                    assert r.status == 200, path
                    pages[path] = await r.text()
                    assert ADMIN not in pages[path]          # never in a page
                    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            csrf = csrf_of(pages["/dashboard/tokens"])
            # the admin API with the cookie: reads need nothing more, changes need the CSRF token
            async with http.get("/admin/tokens") as r:
                assert r.status == 200
            async with http.post("/admin/tokens", json={"name": "x"}) as r:
                assert r.status == 403 and (await r.json())["error"]["code"] == "csrf_failed"
            async with http.post("/admin/tokens", json={"name": "x"},
                                 headers={"X-CSRF-Token": "forged"}) as r:
                assert r.status == 403
            async with http.post("/admin/tokens", json={"name": "x"},
                                 headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 201
            async with http.post("/dashboard/playground/secret", json={"token": "x"}) as r:
                assert r.status == 403
            # logout needs the CSRF token too; then the cookie is worth nothing
            stolen = {c.key: c.value for c in jar}
            async with http.post("/dashboard/logout", data={"csrf": "forged"},
                                 allow_redirects=False) as r:
                assert r.status == 303
        async with aiohttp.ClientSession(g.http, cookies=stolen) as other:
            async with other.get("/admin/tokens") as r:
                assert r.status == 200       # a forged logout did not log it out
        async with aiohttp.ClientSession(g.http, cookies=stolen) as http:
            async with http.post("/dashboard/logout", data={"csrf": csrf},
                                 allow_redirects=False) as r:
                assert r.status == 303
        async with aiohttp.ClientSession(g.http, cookies=stolen) as other:
            async with other.get("/admin/tokens") as r:
                assert r.status == 401
            async with other.get("/dashboard/", allow_redirects=False) as r:
                assert r.status == 303
    finally:
        await g.stop()


async def test_login_without_admin_token_configured_and_the_brake(tmp_path):
    g = await start_gateway(tmp_path, admin_token=None, auth_failure_limit=3)
    try:
        async with aiohttp.ClientSession(g.http) as http:
            r = await login(http, "anything")
            assert r.status == 401 and "admin API is disabled" in await r.text()
    finally:
        await g.stop()
    g = await start_gateway(tmp_path / "b", admin_token=ADMIN, auth_failure_limit=3)
    try:
        async with aiohttp.ClientSession(g.http) as http:
            statuses = [(await login(http, f"guess{i}")).status for i in range(5)]
            assert statuses[:3] == [401] * 3 and statuses[3:] == [429, 429]
            assert (await login(http)).status == 429     # braked before comparing
    finally:
        await g.stop()


def test_assets_ship_in_the_package():
    here = Path(dashboard.__file__).parent
    for name in ("templates/layout.html", "templates/login.html", "static/app.css",
                 "static/app.js", "static/theme.js", "static/playground.js",
                 "static/pcm-worklet.js"):
        assert (here / name).is_file(), name
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert '"openopen8.web.dashboard" = ["templates/*", "static/*"]' in pyproject


async def test_a_login_holds_on_every_instance_until_the_admin_token_changes(tmp_path):
    """Two instances sharing the server secret and the database (a deployment
    behind a load balancer): a console login made on one is good on the other;
    a forged, altered or expired cookie is not; a new admin token ends them all."""
    from pydantic import SecretStr

    from openopen8.web.dashboard import CONSOLE

    shared = dict(admin_token=ADMIN, secret_key="shared-secret-1",
                  database_url=f"sqlite:///{tmp_path / 'shared.db'}")
    a = await start_gateway(tmp_path / "a", **shared)
    b = await start_gateway(tmp_path / "b", **shared)
    try:
        async with aiohttp.ClientSession(a.http) as http:
            r = await login(http)
            cookie = r.cookies["oo8_console"].value
        async with aiohttp.ClientSession(b.http, cookies={"oo8_console": cookie}) as other:
            async with other.get("/dashboard/tokens") as r:
                assert r.status == 200
                csrf = csrf_of(await r.text())
            async with other.post("/admin/tokens", json={"name": "via-b"},
                                  headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 201
        console = b.server.runner.app[CONSOLE]
        body, mac = cookie.rsplit(".", 1)
        _, expires, nonce = body.split(".")
        past = f"v1.{int(expires) - 13 * 3600}.{nonce}"
        for bad in (cookie[:-2] + "xx",                                   # altered
                    f"v1.{int(expires) + 3600}.{nonce}.{mac}",            # extended
                    f"{past}.{console._mac(console._key(), past)}",       # expired
                    "v1.1.2", "nonsense"):
            async with aiohttp.ClientSession(b.http, cookies={"oo8_console": bad}) as other:
                async with other.get("/admin/tokens") as r:
                    assert r.status == 401, bad
        b.gw.settings.admin_token = SecretStr("a-new-admin-token")
        async with aiohttp.ClientSession(b.http, cookies={"oo8_console": cookie}) as other:
            async with other.get("/admin/tokens") as r:
                assert r.status == 401
    finally:
        await b.stop()
        await a.stop()


async def test_the_playground_secret_follows_the_token_policy(tmp_path):
    """The console mints a one-use secret for the token picked; the session
    it starts transcribes with the model the token's policy pins, and a voice
    the policy does not allow is refused naming the parameter."""
    g = await start_gateway(tmp_path, admin_token=ADMIN)
    try:
        await g.channel("up", "http://127.0.0.1:9/v1", ["gpt-realtime"])
        async with aiohttp.ClientSession(g.http, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            await login(http)
            async with http.get("/dashboard/playground") as r:
                csrf = csrf_of(await r.text())
            h = {"X-CSRF-Token": csrf}
            async with http.post("/admin/tokens", headers=h, json={"name": "pinned", "policy": {
                    "voices": ["cedar"], "transcription_model": "gpt-4o-transcribe"}}) as r:
                assert r.status == 201
            async with http.post("/dashboard/playground/secret", headers=h, json={
                    "token": "pinned", "model": "gpt-realtime"}) as r:
                minted = await r.json()
                assert r.status == 200 and minted["value"].startswith("ek_")
            async with http.post("/dashboard/playground/secret", headers=h, json={
                    "token": "pinned", "model": "gpt-realtime", "voice": "marin"}) as r:
                assert r.status == 400
                assert (await r.json())["error"]["param"] == "session.audio.output.voice"
            async with http.post("/dashboard/playground/secret", headers=h, json={
                    "token": "nobody", "model": "gpt-realtime"}) as r:
                assert r.status == 400 and (await r.json())["error"]["param"] == "token"
        secret, token = await g.gw.store.client_secret_by_hash(hash_secret(minted["value"]))
        assert token.name == "pinned" and secret.max_uses == 1 and secret.model == "gpt-realtime"
        assert secret.session["audio"]["input"]["transcription"]["model"] == "gpt-4o-transcribe"
    finally:
        await g.stop()


async def test_the_cookie_is_secure_behind_a_trusted_tls_proxy_only(tmp_path):
    """A proxy that terminates TLS says so with X-Forwarded-Proto: believed
    from a trusted proxy only (a client cannot make the cookie Secure-less
    over HTTPS, nor claim HTTPS from elsewhere to no effect)."""
    for trusted, secure in ((["127.0.0.1"], True), ([], False)):
        g = await start_gateway(tmp_path / str(secure), admin_token=ADMIN,
                                trusted_proxies=trusted)
        try:
            async with aiohttp.ClientSession(g.http) as http:
                r = await http.post("/dashboard/login", data={"admin_token": ADMIN},
                                    headers={"X-Forwarded-Proto": "https"},
                                    allow_redirects=False)
                assert r.status == 303
                assert ("Secure" in r.headers["Set-Cookie"]) is secure
                r = await login(http)                  # plain HTTP, no header: never Secure
                assert "Secure" not in r.headers["Set-Cookie"]
        finally:
            await g.stop()
