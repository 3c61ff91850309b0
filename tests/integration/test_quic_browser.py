"""The edge's WebTransport page in headless Chromium: connect, join, exchange.

The page (served by the edge at ``/webtransport``) connects to the edge's QUIC
port over WebTransport with ``serverCertificateHashes``, joins a room and
answers each reliable ``ping:N`` with a reliable ``pong:N`` (stream) and an
unreliable ``dgram:N`` (datagram).  A Python SDK client in the same room sends
the pings and checks both answers.  A refused HELLO (bad token, unsupported
version) must reach the page's ``WebTransport.closed`` as the edge's close code
and reason (CLOSE_WEBTRANSPORT_SESSION capsule, protocol.md section 1); the test
reads the page's title, where the page writes ``closed CODE REASON``, through
Chromium's DevTools HTTP endpoint.  Needs Debian's ``chromium`` (``.ci/run``
installs it when it can); skipped with the reason when it is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

from client_sdk import ReceivedMessage
from tests.helpers import http_get, uid

_NO_CHROMIUM = ("chromium not found on PATH or at /usr/bin/chromium "
                "(Debian: apt-get install chromium)")

pytestmark = pytest.mark.parametrize("transport", ["quic"], indirect=True)


def find_chromium() -> str | None:
    """Chromium on PATH or at /usr/bin/chromium."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def start_chromium(chromium: str, url: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    """Headless Chromium on ``url`` with a fresh profile, in its own process group."""
    with open(tmp_path / "chromium.log", "wb") as log:
        return subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             "--remote-debugging-port=0", url],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            start_new_session=True)


async def test_browser_page_joins_and_exchanges_over_webtransport(edge, clients, token,
                                                                  tmp_path) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip(_NO_CHROMIUM)
    status, ctype, page = await http_get(edge.http_url + "/webtransport")
    assert status == 200 and ctype.startswith("text/html")
    assert str(edge.quic_port).encode() in page

    room = uid("browser")
    got: list[ReceivedMessage] = []
    py = await clients(edge.url, token("py"))
    await py.join(room, on_message=got.append)
    url = (f"{edge.http_url}/webtransport?room={quote(room)}&name=chromium"
           f"&token={quote(token('browser'))}")
    proc = start_chromium(chromium, url, tmp_path)
    try:
        pongs: set[bytes] = set()
        dgrams: set[bytes] = set()
        async with asyncio.timeout(45):
            n = 0
            while not (pongs and dgrams):
                n += 1
                await py.publish(room, b"ping:%d" % n)
                await asyncio.sleep(0.3)
                assert proc.poll() is None, "chromium exited"
                for m in got:
                    if m.payload.startswith(b"pong:") and m.seq:
                        pongs.add(m.payload[5:])
                    elif m.payload.startswith(b"dgram:") and not m.seq:
                        dgrams.add(m.payload[6:])
        browser = [m for m in got if m.payload.startswith((b"pong:", b"dgram:"))]
        assert browser and all(m.sender != py.session_id for m in browser), \
            "answers come from the browser's session"
        members = await py.presence(room)
        assert "browser" in {m.subject for m in members}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


async def page_title(tmp_path: Path, proc: subprocess.Popen[bytes], until: str,
                     timeout: float) -> str:
    """The title of Chromium's page once it starts with ``until`` (read from the
    DevTools HTTP endpoint, whose port Chromium writes to ``DevToolsActivePort``)."""
    port_file = tmp_path / "profile" / "DevToolsActivePort"
    title = ""
    try:
        async with asyncio.timeout(timeout):
            while True:
                assert proc.poll() is None, "chromium exited"
                if port_file.exists() and (lines := port_file.read_text().split()):
                    with contextlib.suppress(OSError):
                        _, _, body = await http_get(f"http://127.0.0.1:{lines[0]}/json/list")
                        pages = [t for t in json.loads(body) if t.get("type") == "page"]
                        if pages:
                            title = str(pages[0].get("title", ""))
                            if title.startswith(until):
                                return title
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"page title still {title!r} after {timeout} s, "
                             f"expected {until!r}...") from None


@pytest.mark.parametrize(("query", "code", "reason"), [
    ("token=not-a-token", 4401, "token"),
    ("version=99", 4405, "version"),
], ids=["bad-token", "bad-version"])
async def test_browser_sees_the_close_code_and_reason_of_a_refused_hello(
        edge, token, tmp_path, query: str, code: int, reason: str) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip(_NO_CHROMIUM)
    if "token=" not in query:
        query += f"&token={quote(token('browser'))}"
    url = f"{edge.http_url}/webtransport?room=lobby&name=chromium&{query}"
    proc = start_chromium(chromium, url, tmp_path)
    try:
        title = await page_title(tmp_path, proc, "closed", timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    # "closed 4401 invalid token: ...": the code of section 7 and the edge's reason.
    got_code, _, got_reason = title.removeprefix("closed ").partition(" ")
    assert got_code == str(code), f"WebTransport.closed gave {title!r}, expected code {code}"
    assert reason in got_reason.lower(), f"reason {got_reason!r} does not mention {reason!r}"
