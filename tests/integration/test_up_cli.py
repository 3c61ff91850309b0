"""``edge-relay up`` as a user runs it: with their own keys in the environment.

It must take ``EDGE_RELAY_SECRET`` and ``ORIGIN_API_KEYS`` from the environment (as
docs/configuration.md says), sign its printed token with the first secret, and
accept the user's API keys at the origin.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from typing import IO

import pytest

from client_sdk.protocol import verify_token
from edge_node.local.launch import free_port

pytestmark = pytest.mark.timeout(120)


def _read_banner(out: IO[str], proc: subprocess.Popen[str], timeout: float) -> dict[str, str]:
    """``up``'s lines until "Ctrl-C to stop.", keyed by their first word."""
    lines: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = out.readline()
        if not line:
            break
        if line.startswith("Ctrl-C"):
            return lines
        word, _, rest = line.partition(" ")
        lines[word] = rest.strip()
    proc.kill()
    raise AssertionError(f"up did not start: {lines} {proc.stderr.read() if proc.stderr else ''}")


def _stop(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C ``up``: it must exit 0 without a traceback."""
    proc.send_signal(signal.SIGINT)
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    stderr = proc.stderr.read() if proc.stderr else ""
    assert rc == 0 and "Traceback" not in stderr, stderr


def test_up_takes_secret_and_api_keys_from_the_environment(redis_url: str) -> None:
    env = dict(os.environ, EDGE_RELAY_SECRET="user-secret-1,user-secret-2",
               ORIGIN_API_KEYS="user-key-1, user-key-2", REDIS_URL=redis_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_node", "up", "--edges", "1", "--base-port",
         str(free_port())], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = _read_banner(proc.stdout, proc, timeout=60)
        claims = verify_token(lines["token"], (b"user-secret-1",), now=time.time())
        assert claims.subject == "dev"
        assert "EDGE_RELAY_SECRET" in lines["secret"]
        origin = lines["origin"].split()[0]
        assert "user-key-1" in lines["origin"]
        # The second key works too, and the origin mints with the user's secret.
        req = urllib.request.Request(
            origin + "/v1/tokens", method="POST",
            data=json.dumps({"subject": "bob", "kind": "player", "rooms": ["*"]}).encode(),
            headers={"X-API-Key": "user-key-2", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            tok = json.loads(resp.read())["token"]
        assert verify_token(tok, (b"user-secret-1",), now=time.time()).subject == "bob"
    finally:
        _stop(proc)


async def _exchange_over_tls(url: str, token: str, ca: str) -> None:
    from client_sdk import ConnectError, connect
    from client_sdk.transport import TlsOptions

    tls = TlsOptions(ca_file=ca)
    a = await connect(url, token, tls=tls, rtt_probe_interval=None)
    b = await connect(url, token, tls=tls, rtt_probe_interval=None)
    try:
        sub = await b.join("up-tls")
        await a.join("up-tls")
        await a.publish("up-tls", b"over tls")
        assert (await sub.get(5)).payload == b"over tls"
    finally:
        await a.close()
        await b.close()
    with pytest.raises(ConnectError):
        await connect(url, token, tls=TlsOptions(ca_file=__file__), reconnect=False,
                      rtt_probe_interval=None)


def test_up_with_tls_serves_wss_that_a_client_trusting_its_ca_file_uses(
        redis_url: str) -> None:
    """``edge-relay up --tls``: the edges serve ``wss://`` (and ``https://`` /healthz) with
    the development certificate whose file ``up`` prints; an SDK client given that file
    connects and exchanges messages, a client trusting nothing else is refused."""
    import asyncio

    env = dict(os.environ, REDIS_URL=redis_url)
    env.pop("EDGE_RELAY_CA_FILE", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_node", "up", "--edges", "1", "--base-port",
         str(free_port()), "--tls"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        assert proc.stdout is not None
        lines = _read_banner(proc.stdout, proc, timeout=60)
        url = lines["edge"].split()[1]
        ca = lines["ca"].split()[0]
        assert url.startswith("wss://") and os.path.exists(ca)
        assert "https://" in lines["edge"]
        asyncio.run(_exchange_over_tls(url, lines["token"], ca))
    finally:
        _stop(proc)
