"""Bounds on request bodies for the origin's HTTP API (a plain ASGI middleware).

- A body larger than ``max_bytes`` gets **413** with ``{"detail": ...}`` and never
  reaches the application: it is refused on its declared ``Content-Length``, or at
  the first chunk past the bound when the length is not declared (chunked).  The rest
  is read and dropped (up to ``DRAIN_BYTES``, so the client reads the answer), never
  kept.
- A JSON body nested deeper than ``max_depth`` arrays/objects gets **422** in the
  shape FastAPI uses for every other bad body (a ``detail`` list with ``type``,
  ``loc``, ``msg``), instead of the 400 that Python's recursion limit in the JSON
  parser would give.  No route of the API takes anything near that deep.

Bodies the bounds accept reach the application unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["BodyLimits", "MAX_BODY_BYTES", "MAX_JSON_DEPTH", "json_depth_exceeds"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The largest request body the API reads (desired state, a command, a token request).
MAX_BODY_BYTES = 64 * 1024
#: How much of a refused body is read (and dropped) before answering 413; past it the
#: answer is sent at once and the connection closed.
DRAIN_BYTES = 8 * 1024 * 1024
#: The deepest JSON nesting the API accepts.
MAX_JSON_DEPTH = 32


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """True when ``body`` opens more than ``limit`` arrays/objects at once (brackets
    inside strings do not count).  Linear in the body; does not parse it."""
    depth = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


class BodyLimits:
    """ASGI middleware: ``BodyLimits(app, max_bytes=..., max_depth=...)``."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_BODY_BYTES,
                 max_depth: int = MAX_JSON_DEPTH) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away: let the app see it
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(receive, send, more=message.get("more_body", False))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if b"json" in headers.get(b"content-type", b"") and json_depth_exceeds(
                body, self.max_depth):
            await _respond(send, 422, {"detail": [{
                "type": "json_too_deep", "loc": ["body"],
                "msg": f"JSON nested deeper than {self.max_depth} levels", "input": None}]})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, receive: Receive, send: Send, more: bool = True) -> None:
        # Read (and drop) the rest, up to DRAIN_BYTES, so that the client, which is
        # still sending, reads the answer instead of a reset connection; nothing is kept.
        drained = 0
        while more and drained < DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            more = message.get("more_body", False)
        await _respond(send, 413, {"detail": f"request body over {self.max_bytes} bytes"})


async def _respond(send: Send, status: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})
