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
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    stderr = proc.stderr.read() if proc.stderr else ""
    assert rc == 0 and "Traceback" not in stderr, stderr
