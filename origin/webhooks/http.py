"""A minimal asyncio HTTP/1.1 client: one POST per connection (``Connection: close``).

Enough for webhooks and nothing more: ``http://`` and ``https://`` (the default SSL
context: system CAs, hostname checked), a request body with ``Content-Length``, one
deadline for connect + send + status line + headers, the status code parsed and the
response body read up to a bound and discarded.  No redirects, no proxies, no
keep-alive (each delivery opens its own connection).

Errors: :class:`HttpError` (connection refused or reset, timeout, a malformed reply);
a non-2xx status is a normal :class:`HttpResponse`, not an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["HttpError", "HttpResponse", "parse_url", "post"]

#: Bounds on what is read back: the status line and headers, and the body.
MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024


class HttpError(Exception):
    """The request did not get a well-formed HTTP response (the message says why)."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """The status and headers (lower-cased names) of a response."""

    status: int
    reason: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL points."""

    tls: bool
    host: str
    port: int
    path: str  # with the query string


def parse_url(url: str) -> Target:
    """Split an ``http(s)://host[:port]/path?query`` URL; ``ValueError`` if unusable."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: only http:// and https:// URLs")
    if not u.hostname:
        raise ValueError(f"{url!r}: no host")
    if u.username or u.password:
        raise ValueError(f"{url!r}: credentials in the URL are not supported")
    try:
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    return Target(u.scheme == "https", u.hostname, port, path)


def _request(t: Target, body: bytes, headers: Mapping[str, str]) -> bytes:
    host = t.host if ":" not in t.host else f"[{t.host}]"
    default_port = 443 if t.tls else 80
    lines = [f"POST {t.path} HTTP/1.1",
             f"Host: {host}" + ("" if t.port == default_port else f":{t.port}"),
             "Content-Type: application/json",
             f"Content-Length: {len(body)}",
             "Connection: close",
             "User-Agent: edge-relay-origin"]
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r}: line breaks are not allowed")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _parse_head(head: bytes) -> HttpResponse:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes anything
        raise HttpError("undecodable response head") from exc
    status_line, *rest = text.split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit() \
            or len(parts[1]) != 3:
        raise HttpError(f"malformed status line {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in rest:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(f"malformed header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return HttpResponse(int(parts[1]), parts[2] if len(parts) > 2 else "", headers)


async def _exchange(t: Target, request: bytes, ssl_ctx: ssl.SSLContext | None
                    ) -> HttpResponse:
    reader, writer = await asyncio.open_connection(
        t.host, t.port, ssl=ssl_ctx if t.tls else None,
        server_hostname=t.host if t.tls else None, limit=MAX_HEAD_BYTES)
    try:
        writer.write(request)
        await writer.drain()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise HttpError("response head too long") from exc
        except asyncio.IncompleteReadError as exc:
            raise HttpError("connection closed before a complete response head") from exc
        resp = _parse_head(head[:-4])
        # Read (and drop) a bounded body so the server sees its reply taken.
        length = resp.headers.get("content-length", "")
        if length.isdigit():
            with contextlib.suppress(asyncio.IncompleteReadError):
                await reader.readexactly(min(int(length), MAX_BODY_BYTES))
        return resp
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def post(url: str, body: bytes, headers: Mapping[str, str] | None = None, *,
               timeout: float = 10.0, ssl_ctx: ssl.SSLContext | None = None
               ) -> HttpResponse:
    """POST ``body`` (JSON) to ``url``; the whole exchange must finish in ``timeout``
    seconds.  Returns the response (any status); raises :class:`HttpError` otherwise
    (and ``ValueError`` for a URL :func:`parse_url` refuses)."""
    t = parse_url(url)
    request = _request(t, body, headers or {})
    if t.tls and ssl_ctx is None:
        ssl_ctx = ssl.create_default_context()
    try:
        async with asyncio.timeout(timeout):
            return await _exchange(t, request, ssl_ctx)
    except TimeoutError as exc:
        raise HttpError(f"no response within {timeout:g} s") from exc
    except (OSError, ssl.SSLError) as exc:
        raise HttpError(f"{type(exc).__name__}: {exc}") from exc
