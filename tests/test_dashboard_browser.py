"""The console in a real headless Chromium (Debian's ``chromium``): an
operator logs in, creates a token and reads its secret, adds a channel
pointing at the stand-in upstream and tests it; a client (this test) opens a
session with that token; the operator sees it live, ends it from the page,
and finds its transcript in the session's detail; the playground talks to
the model through a client secret the console minted.  A screenshot of
every page is taken (``OPENOPEN8_SCREENSHOTS=docs/screenshots`` keeps them
in the repository, as README shows them)."""

from __future__ import annotations

import array
import asyncio
import base64
import json
import math
import os
import wave
from pathlib import Path

import websockets

from openopen8 import ops
from tests.browser import chromium
from tests.conftest import start_gateway
from tests.standin import Script, StandIn

ADMIN = "adm-browser-console-1"
SAID = "What will the weather be in Oslo tomorrow?"
ANSWER = "Clear skies in Oslo tomorrow, around twelve degrees."


def shots_dir(tmp_path: Path) -> Path:
    keep = os.environ.get("OPENOPEN8_SCREENSHOTS")
    d = Path(keep) if keep else tmp_path / "screenshots"
    d.mkdir(parents=True, exist_ok=True)
    return d


def speech_wav(path: Path) -> Path:
    """The fake microphone: 0.7 s of a tone (speech to the stand-in's VAD),
    then 1 s of silence (the end of the turn); Chromium loops it."""
    rate = 48000
    tone = [int(12000 * math.sin(2 * math.pi * 220 * i / rate)) for i in range(rate * 7 // 10)]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(array.array("h", tone + [0] * rate).tobytes())
    return path


async def client_session(url: str, secret: str, ready: asyncio.Event,
                         closed: asyncio.Future) -> None:
    """A client of the gateway: one spoken turn, then it waits (live) until
    the operator ends it; ``closed`` gets the close code."""
    async with websockets.connect(url + "?model=gpt-realtime", additional_headers={
            "Authorization": f"Bearer {secret}"}) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"},
                                                    "turn_detection": None}}}}))
        audio = base64.b64encode(b"\x10\x00" * 24 * 300).decode()
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await ws.send(json.dumps({"type": "response.create"}))
        while json.loads(await ws.recv())["type"] != "response.done":
            pass
        ready.set()
        events = []
        try:
            async for msg in ws:
                events.append(json.loads(msg))
        except websockets.ConnectionClosed:
            pass
        closed.set_result((ws.close_code, events))


async def test_the_operator_console_in_a_real_browser(tmp_path):
    shots = shots_dir(tmp_path)
    async with StandIn(input_transcript=SAID, script=Script(text=ANSWER, audio_deltas=2)) as up:
        g = await start_gateway(tmp_path, admin_token=ADMIN, balance_refresh_seconds=0.3,
                                tick_seconds=0.2)
        try:
            async with chromium(fake_audio=speech_wav(tmp_path / "mic.wav"),
                                extra_flags=["--allow-loopback-in-peer-connection"]) as browser:
                ctx = await browser.new_context(viewport={"width": 1280, "height": 860},
                                                color_scheme="light")
                page = await ctx.new_page()
                page.set_default_timeout(10_000)
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on("dialog", lambda d: asyncio.ensure_future(d.accept()))
                base = g.http

                # log in (a wrong token first)
                await page.goto(base + "/dashboard")
                assert page.url.endswith("/dashboard/login")
                await page.fill("input[name=admin_token]", "nope")
                await page.click("button[type=submit]")
                await page.wait_for_selector("text=That is not the admin token.")
                await page.screenshot(path=str(shots / "login.png"))
                await page.fill("input[name=admin_token]", ADMIN)
                await page.click("button[type=submit]")
                await page.wait_for_url(base + "/dashboard/")
                cookies = await ctx.cookies()
                assert [(c["httpOnly"], c["sameSite"]) for c in cookies] == [(True, "Strict")]
                assert await page.evaluate("document.cookie") == ""   # HttpOnly: not for scripts

                # a token, its secret read from the page once
                await page.click("nav >> text=Tokens")
                await page.fill("input[name=name]", "web-app")
                await page.fill("input[name=quota_usd]", "5")
                await page.fill("input[name=max_sessions]", "3")
                await page.check("input[name=log_transcripts]")
                await page.click("text=Create token")
                await page.wait_for_selector("#new-secret:not([hidden])")
                secret = (await page.text_content("#new-secret-value")).strip()
                assert len(secret) > 20
                await page.wait_for_selector("#token-list >> text=web-app")
                await page.screenshot(path=str(shots / "tokens.png"))
                await page.reload()
                assert secret not in await page.content()            # shown once only

                # a channel at the stand-in, tested with a real handshake
                await page.click("nav >> text=Channels")
                await page.click("summary:has-text('Add a channel')")
                await page.fill("form input[name=name]", "standin")
                await page.fill("form input[name=base_url]", up.base_url)
                await page.fill("form input[name=key]", "sk-good")
                await page.fill("form input[name=models]", "gpt-realtime")
                await page.fill("form input[name=priority]", "10")
                await page.click("text=Add channel")
                await page.wait_for_selector("td >> text=standin")
                await page.click("button:has-text('Test')")
                out = page.locator("#test-standin")
                await out.locator("text=session.created").wait_for()
                assert (await out.get_attribute("class")) == "pass"
                await page.screenshot(path=str(shots / "channels.png"))
                # priority from its field, disable and enable again
                await page.fill("input[data-field=priority]", "7")
                await page.press("input[data-field=priority]", "Tab")
                await page.wait_for_selector("#flash:has-text('Saved.')")
                assert [c.priority for c in await g.gw.store.list_channels()] == [7]
                await page.click("button:has-text('Disable')")
                await page.wait_for_selector("td >> text=disabled")
                await page.click("button:has-text('Enable')")
                await page.wait_for_selector("td >> text=enabled")

                # a client opens a session with the token; the operator sees it live
                ready, closed = asyncio.Event(), asyncio.get_running_loop().create_future()
                client = asyncio.ensure_future(client_session(g.url, secret, ready, closed))
                await asyncio.wait_for(ready.wait(), 10)
                await page.click("nav >> text=Sessions")
                live = page.locator("#live tbody tr")
                await live.first.wait_for()
                row = await live.first.inner_text()
                assert "web-app" in row and "gpt-realtime" in row and "standin" in row
                await page.screenshot(path=str(shots / "sessions.png"))
                sid = (await live.first.locator("a").first.inner_text()).strip()

                # ...and ends it from the page: the client gets an error and 1008
                async with page.expect_navigation(timeout=10_000):   # the page reloads after
                    await live.first.locator("button:has-text('End')").click()
                code, events = await asyncio.wait_for(closed, 10)
                await client
                assert code == 1008
                assert any(e["type"] == "error" for e in events)

                # its detail: the transcript timeline
                await page.goto(f"{base}/dashboard/sessions/{sid}")
                for _ in range(50):     # the turns and the session's end are written in batches
                    if (await page.locator(".turn.assistant").count()
                            and "1008" in await page.locator("dl.facts").inner_text()):
                        break
                    await asyncio.sleep(0.1)
                    await page.reload()
                user = await page.locator(".turn.user p").first.inner_text()
                bot = await page.locator(".turn.assistant p").first.inner_text()
                assert (user, bot) == (SAID, ANSWER)
                assert "1008" in await page.locator("dl.facts").inner_text()
                await page.screenshot(path=str(shots / "session-detail.png"), full_page=True)

                # the sessions list filtered by close code
                await page.goto(f"{base}/dashboard/sessions")
                await page.fill("input[name=close_code]", "1000")
                await page.click("button:has-text('Filter')")
                await page.wait_for_selector("text=No sessions match.")
                await page.fill("input[name=close_code]", "1008")
                await page.click("button:has-text('Filter')")
                await page.wait_for_selector(f"td >> text={sid}")

                # usage and overview show the session and its cost
                await page.click("nav >> text=Usage")
                await page.select_option("select[name=by]", "token")
                await page.click("button:has-text('Show')")
                await page.wait_for_selector("td >> text=web-app")
                await page.screenshot(path=str(shots / "usage.png"))
                async with page.expect_download() as dl:
                    await page.click("a:has-text('CSV')")
                csv_path = await (await dl.value).path()
                assert "web-app" in Path(csv_path).read_text()
                await page.click("nav >> text=Overview")
                assert await page.text_content("#live-count") == "0"
                assert "session.created" in await page.text_content("#test-standin")  # last test
                await page.screenshot(path=str(shots / "overview.png"))

                # the playground: a client secret minted by the console; over WebRTC the
                # fake microphone's turn is heard (the call's Opus track, decoded to the
                # upstream's PCM16), over a WebSocket (AudioWorklet PCM16) too, then a typed turn
                await page.click("nav >> text=Playground")
                for transport in ("webrtc", "websocket"):
                    await page.select_option("select[name=transport]", transport)
                    await page.click("#pg-start")
                    await page.wait_for_selector("#pg-status:has-text('Connected')", timeout=20_000)
                    await page.wait_for_selector(f".captions >> text=You: {SAID}",
                                                 timeout=20_000)
                    await page.fill("#pg-text input[name=text]", "Hello there")
                    await page.click("#pg-text button")
                    await page.wait_for_selector(".captions >> text=You: Hello there")
                    # a locator, not wait_for_function: Playwright polls a string predicate
                    # with eval, which the console's CSP (no 'unsafe-eval') rightly refuses
                    await page.locator(".captions p.bot").nth(1).wait_for(timeout=20_000)
                    if transport == "webrtc":
                        await page.screenshot(path=str(shots / "playground.png"))
                    await page.click("#pg-stop")
                vias = {r["via"] for r in (await ops.list_sessions(g.gw.store))["sessions"]}
                assert vias == {"websocket", "webrtc"}
                for upstream in up.sessions[-2:]:   # the typed turn reached the upstream both ways
                    assert any(e.get("type") == "conversation.item.create"
                               and "Hello there" in json.dumps(e) for e in upstream.received)

                # the token revoked from its page
                await page.click("nav >> text=Tokens")
                await page.click("button:has-text('Revoke')")
                await page.wait_for_selector("#token-list >> text=revoked")

                # phone width, dark theme
                phone = await browser.new_context(viewport={"width": 390, "height": 844},
                                                  color_scheme="dark", device_scale_factor=1)
                await phone.add_cookies(cookies)
                mobile = await phone.new_page()
                await mobile.goto(f"{base}/dashboard/sessions/{sid}")
                bg = await mobile.evaluate("getComputedStyle(document.body).backgroundColor")
                assert bg == "rgb(15, 19, 24)"                        # the dark theme
                width = await mobile.evaluate("document.documentElement.scrollWidth")
                assert width <= 390                                    # nothing wider than a phone
                await mobile.screenshot(path=str(shots / "phone-dark.png"), full_page=True)
                for path in ("/", "/tokens", "/channels", "/usage?by=token", "/sessions",
                             "/playground"):
                    await mobile.goto(f"{base}/dashboard{path}")
                    width = await mobile.evaluate("document.documentElement.scrollWidth")
                    assert width <= 390, (path, width)
                await phone.close()
                assert errors == []
        finally:
            await g.stop()
