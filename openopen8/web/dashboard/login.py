"""Console logins: the admin token in a form, then a signed cookie
(``HttpOnly``, ``SameSite=Strict``; ``Secure`` over HTTPS, or behind a
trusted proxy that says ``X-Forwarded-Proto: https``) and a CSRF token for
every change."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from aiohttp import web

from ...crypto import server_secret
from ...errors import ForbiddenError
from ..admin import GATEWAY, check_admin_token
from .html import HEADERS, LOGIN, e

COOKIE = "oo8_console"
#: a console login lasts this long
LOGIN_SECONDS = 12 * 3600
CONSOLE = web.AppKey("console", object)


@dataclass
class Login:
    nonce: str
    expires: int        # Unix time
    csrf: str


class Console:
    """The console's logins: signed cookies, so every gateway instance that
    shares the server secret (``secret_key``) knows them -- no session
    store.  The signing key is derived from the server secret *and* the
    admin token: changing ``admin_token`` logs every console out.  A login
    lasts :data:`LOGIN_SECONDS`; logging out revokes it on this instance
    (the browser drops the cookie everywhere)."""

    def __init__(self, gw: Any) -> None:
        self.gw = gw
        self._secret: bytes | None = None
        self.revoked: dict[str, int] = {}      # nonce -> its expiry

    def _key(self) -> bytes | None:
        token = self.gw.settings.admin_token
        if token is None or not token.get_secret_value():
            return None
        if self._secret is None:
            self._secret = server_secret(self.gw.settings.secret_key,
                                         self.gw.settings.data_dir).encode()
        return hashlib.sha256(b"openopen8-console\0" + self._secret + b"\0"
                              + token.get_secret_value().encode()).digest()

    @staticmethod
    def _mac(key: bytes, text: str) -> str:
        digest = hmac.new(key, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def new(self) -> str:
        """A new login's cookie value."""
        key = self._key()
        assert key is not None     # the login was checked against the admin token
        body = f"v1.{int(time.time()) + LOGIN_SECONDS}.{secrets.token_urlsafe(16)}"
        return f"{body}.{self._mac(key, body)}"

    def get(self, request: web.Request) -> Login | None:
        value = request.cookies.get(COOKIE, "")
        key = self._key()
        parts = value.split(".")
        if key is None or len(parts) != 4 or parts[0] != "v1" or not parts[1].isdigit():
            return None
        body = ".".join(parts[:3])
        if not hmac.compare_digest(parts[3].encode(), self._mac(key, body).encode()):
            return None
        expires, nonce = int(parts[1]), parts[2]
        if expires <= time.time() or nonce in self.revoked:
            return None
        return Login(nonce, expires, self._mac(key, "csrf." + nonce))

    def drop(self, login: Login) -> None:
        now = time.time()
        self.revoked = {n: x for n, x in self.revoked.items() if x > now}
        self.revoked[login.nonce] = login.expires

    def admin_verdict(self, request: web.Request) -> Any:
        """For the admin API: True when the request is a logged-in console's
        (with its CSRF token on a change), a refusal for a bad CSRF token,
        None when there is no console login (the bearer token decides)."""
        login = self.get(request)
        if login is None:
            return None
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return True
        if csrf_ok(login, request.headers.get("X-CSRF-Token", "")):
            return True
        return ForbiddenError("This change needs the console's CSRF token (X-CSRF-Token); "
                              "reload the page.", code="csrf_failed")


def csrf_ok(login: Login, given: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), login.csrf.encode())


def _login_page(message: str = "", status: int = 200) -> web.Response:
    html = LOGIN.substitute(message=f'<p class="error" role="alert">{e(message)}</p>'
                             if message else "")
    return web.Response(text=html, content_type="text/html", status=status, headers=HEADERS)


async def login_form(request: web.Request) -> web.Response:
    if request.app[CONSOLE].get(request) is not None:
        raise web.HTTPSeeOther("/dashboard/")
    return _login_page()


async def login_post(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    form = await request.post()
    given = str(form.get("admin_token", "")).strip()
    client = gw.client_address(request.headers, request.remote)
    problem = check_admin_token(gw, client, given)
    if problem is not None:
        text = ("Too many wrong tries from this address; wait a minute."
                if problem.status == 429 else
                "The admin API is disabled: set admin_token to use the console."
                if problem.code == "admin_api_disabled" else "That is not the admin token.")
        return _login_page(text, status=problem.status)
    resp = web.HTTPSeeOther("/dashboard/")
    resp.set_cookie(COOKIE, request.app[CONSOLE].new(), httponly=True, samesite="Strict",
                    path="/", max_age=LOGIN_SECONDS,
                    secure=gw.proxies.https(request.headers, request.remote, request.secure))
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    login = console.get(request)
    form = await request.post()
    if login is not None and csrf_ok(login, str(form.get("csrf", ""))):
        console.drop(login)
    resp = web.HTTPSeeOther("/dashboard/login")
    resp.del_cookie(COOKIE, path="/")
    raise resp


Handler = Callable[[web.Request, Login], Awaitable[web.StreamResponse]]


def logged_in(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        login = request.app[CONSOLE].get(request)
        if login is None:
            raise web.HTTPSeeOther("/dashboard/login")
        return await handler(request, login)
    return wrapped


