"""The ``edge-tls`` target: our edge with TLS on its WebSocket port (``wss://``).

``--tls`` on ``fanout`` and ``connections`` runs it alternately with ``edge`` (same
Redis setup, same flags) and reports ``edge-tls/edge``: what TLS costs per connect
(the handshake: ECDSA P-256 certificate, TLS 1.3, no session resumption) and per
delivery (AES-GCM record encryption).  The certificate is a throw-away self-signed
one, given to the load processes as their CA file.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TLS_KIND", "TlsEdge", "spawn_tls_edge"]

#: The target kind; not in ``bench.targets.TARGETS`` (so not in ``--target all``).
TLS_KIND = "edge-tls"


@dataclass
class TlsEdge:
    """A running TLS edge process."""

    proc: subprocess.Popen[bytes]
    url: str  # wss://
    ca_file: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def spawn_tls_edge(port: int, redis_url: str, secret: bytes, cert_dir: str,
                   edge_args: tuple[str, ...], env: dict[str, str], log_path: str,
                   timeout: float = 20.0) -> TlsEdge:
    """Start ``python -m edge_node edge --tls-cert ...`` on ``port`` and wait until its
    ``/healthz`` answers over HTTPS; ``RuntimeError`` (with the log's tail) if not."""
    from edge_node.transports.quic.tls import write_self_signed

    cert, key = os.path.join(cert_dir, "cert.pem"), os.path.join(cert_dir, "key.pem")
    write_self_signed(cert, key, ("127.0.0.1", "localhost"))
    cmd = [sys.executable, "-m", "edge_node", "edge", "--host", "127.0.0.1",
           "--port", str(port), "--edge-id", "bench-edge", "--tls-cert", cert,
           "--tls-key", key, *edge_args]
    if redis_url:
        cmd += ["--redis-url", redis_url]
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env={**env, "EDGE_RELAY_SECRET": secret.decode()},
                                start_new_session=True)
    edge = TlsEdge(proc, f"wss://127.0.0.1:{port}", cert)
    ctx = ssl.create_default_context(cafile=cert)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), urllib.request.urlopen(
                f"https://127.0.0.1:{port}/healthz", timeout=0.5, context=ctx) as r:
            if r.status == 200:
                return edge
        time.sleep(0.05)
    edge.stop()
    tail = Path(log_path).read_text(errors="replace")[-800:].strip()
    raise RuntimeError(f"the TLS edge did not become healthy: {tail or 'no output'}")
