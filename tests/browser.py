"""A real headless Chromium (Debian's ``chromium``) for browser tests, driven
by Playwright's Python client -- only its driver: the browser is the system's
(``executable_path``), never one Playwright downloads.  Installed by
``EXTRAS=test scripts/install-local.sh`` (scripts/install-test-system.sh).

The flags keep Chromium off the network (this machine allows loopback only):
no background networking, component updates, sync or QUIC.  Tests give the
page a fake microphone from a WAV with ``fake_audio``.
"""

from __future__ import annotations

import shutil
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

BASE_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
    # WebRTC: host candidates only, never a public address or mDNS name
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--force-webrtc-ip-handling-policy=default",
]


@asynccontextmanager
async def chromium(fake_audio: Path | None = None, extra_flags: list[str] | None = None
                   ) -> AsyncIterator["object"]:
    """A Playwright ``Browser`` on Debian's chromium; ``fake_audio``: a WAV the
    page's getUserMedia microphone plays (looped by Chromium)."""
    from playwright.async_api import async_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError("Debian's chromium is not installed: run "
                           "`EXTRAS=test scripts/install-local.sh` (scripts/install-test-system.sh)")
    flags = list(BASE_FLAGS) + list(extra_flags or [])
    if fake_audio is not None:
        flags += ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                  f"--use-file-for-fake-audio-capture={fake_audio}"]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
        try:
            yield browser
        finally:
            await browser.close()
