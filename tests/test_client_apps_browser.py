"""The client-app flow in a real browser (issue 14): a page in headless
Chromium (Debian's) asks its own backend for a client secret -- the backend
mints it through the gateway with the official SDK and its gateway token --
and talks to the gateway over WebSocket with it, the way OpenAI's docs show
for api.openai.com.  The page's origin is on the token's allow-list; a page
elsewhere is refused."""

from __future__ import annotations

from aiohttp import web
from openai import AsyncOpenAI

from openopen8 import ops
from tests.browser import chromium
from tests.standin import Script, StandIn
from tests.test_ledger_e2e import U1, U1_NANOS, eventually, metered, spent

PAGE = """<!doctype html><meta charset=utf-8><title>voice app</title>
<script>
window.events = []; window.state = "start";
async function talk(gatewayWs) {
  const r = await fetch("/session", {method: "POST"});      // our backend mints the secret
  const {value} = await r.json();
  const ws = new WebSocket(gatewayWs, ["realtime", "openai-insecure-api-key." + value]);
  ws.onerror = () => { window.state = "error"; };
  ws.onclose = (e) => { window.closeCode = e.code; if (window.state !== "done") window.state = "closed"; };
  ws.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    window.events.push(ev.type);
    if (ev.type === "session.updated" && !window.asked) {
      window.asked = true;
      ws.send(JSON.stringify({type: "conversation.item.create", item: {type: "message",
        role: "user", content: [{type: "input_text", text: "Hello?"}]}}));
      ws.send(JSON.stringify({type: "response.create"}));
    }
    if (ev.type === "response.done") { window.usage = ev.response.usage; window.state = "done"; ws.close(); }
  };
}
</script>"""


async def backend(gateway_base: str, creds: dict[str, str]) -> web.AppRunner:
    """The app's own server: serves the page and mints secrets with its
    token (``creds["token"]``, known once the server's origin is)."""

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def session(_: web.Request) -> web.Response:
        sdk = AsyncOpenAI(base_url=gateway_base, api_key=creds["token"])
        made = await sdk.realtime.client_secrets.create(session={
            "type": "realtime", "model": "gpt-realtime", "output_modalities": ["text"],
            "instructions": "Greet briefly."})
        return web.json_response({"value": made.value, "expires_at": made.expires_at})

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_post("/session", session)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def test_a_browser_page_talks_through_the_gateway_with_a_minted_secret(tmp_path):
    async with StandIn(ping_interval=0) as upstream:
        g = await metered(tmp_path, f"sqlite:///{tmp_path / 'oo8.db'}", upstream)
        creds: dict[str, str] = {}
        runners = [await backend(g.base_url, creds), await backend(g.base_url, creds)]
        try:
            origin, elsewhere = (f"http://127.0.0.1:{r.addresses[0][1]}" for r in runners)
            new = await ops.create_token(g.gw.store, "webapp", origins=[origin])
            creds["token"] = new.secret
            upstream.scripts.append(Script(usage=U1))
            async with chromium() as browser:
                page = await browser.new_page()
                await page.goto(origin + "/")
                await page.evaluate("g => talk(g)", g.url)
                await page.wait_for_function("['done', 'closed', 'error'].includes(window.state)",
                                             timeout=20_000)
                assert await page.evaluate("window.state") == "done", \
                    await page.evaluate("window.events")
                events = await page.evaluate("window.events")
                assert events[:2] == ["session.created", "session.updated"]
                assert "response.done" in events
                # the same page served from another origin is refused before the upgrade
                other = await browser.new_page()
                await other.goto(elsewhere + "/")
                await other.evaluate("g => talk(g)", g.url)
                await other.wait_for_function("window.state === 'error' || "
                                              "window.state === 'closed'", timeout=20_000)
                assert await other.evaluate("window.events") == []
            up = upstream.sessions[0]
            assert up.received[0]["session"]["instructions"] == "Greet briefly."
            assert len(upstream.sessions) == 1
            assert await eventually(lambda: spent(g, new.record.id)) == U1_NANOS
        finally:
            for r in runners:
                await r.cleanup()
            await g.stop()
