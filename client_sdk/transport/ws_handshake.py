"""The RFC 6455 opening handshake, client side (sans-I/O).

:func:`build_request` makes the HTTP/1.1 upgrade request; the caller reads the
response head (up to the blank line, at most :data:`MAX_HEAD` bytes) and hands
it to :func:`parse_response`, then checks a 101 with :func:`check_upgrade`.
No compression or subprotocol is offered, so a server that picks one is wrong.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

__all__ = ["MAX_HEAD", "HandshakeError", "Response", "accept_for", "build_request",
           "check_upgrade", "make_key", "parse_response"]

#: Largest response head (status line + headers) accepted.
MAX_HEAD = 16 * 1024
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HandshakeError(ValueError):
    """The server's answer is not a valid WebSocket upgrade."""


@dataclass(frozen=True, slots=True)
class Response:
    """A parsed HTTP response head; header names are lower case (last one wins)."""

    status: int
    reason: str
    headers: dict[str, str]


def make_key() -> str:
    """A fresh ``Sec-WebSocket-Key`` (16 random bytes, base64)."""
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer ``key`` with."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def build_request(host: str, target: str, key: str) -> bytes:
    """The upgrade request for ``target`` (path and query) on ``host`` (the
    ``Host`` header: host, and port when not the scheme's default)."""
    return (f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nUser-Agent: edge-relay-sdk\r\n\r\n").encode()


def parse_response(head: bytes) -> Response:
    """Parse a response head (without the final blank line)."""
    try:
        text = head.decode("latin-1")
        status_line, *lines = text.split("\r\n")
        version, code, *reason = status_line.split(" ", 2)
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ValueError(status_line)
    except ValueError as exc:
        raise HandshakeError(f"not an HTTP response: {head[:80]!r}") from exc
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HandshakeError(f"malformed header line {line[:80]!r}")
        headers[name.lower()] = value.strip()
    return Response(int(code), reason[0] if reason else "", headers)


def check_upgrade(resp: Response, key: str) -> None:
    """Raise :class:`HandshakeError` unless ``resp`` accepts the upgrade for ``key``."""
    h = resp.headers
    if resp.status != 101:
        raise HandshakeError(f"HTTP {resp.status} {resp.reason}".rstrip())
    if h.get("upgrade", "").lower() != "websocket":
        raise HandshakeError("101 without 'Upgrade: websocket'")
    if "upgrade" not in (t.strip().lower() for t in h.get("connection", "").split(",")):
        raise HandshakeError("101 without 'Connection: Upgrade'")
    if h.get("sec-websocket-accept") != accept_for(key):
        raise HandshakeError("wrong Sec-WebSocket-Accept")
    for name in ("sec-websocket-extensions", "sec-websocket-protocol"):
        if h.get(name):
            raise HandshakeError(f"server chose {name} {h[name]!r}, none was offered")
