"""Bootstrap from the origin's discovery endpoint: which edges to try, best first.

``await discover_edges("https://origin.example", api_key, position=(48.85, 2.35))``
asks ``GET /v1/edges`` for the healthy edges (nearest the given position first, then
least loaded; without a position least loaded first) and returns their URLs, ready for
``connect(urls, token, select="rtt")``, which then measures the round trip to each and
connects to the best, falling back down the list and then the edges' own neighbour
lists.  Blocking HTTP runs in a worker thread (standard library only; ``https`` URLs
verify the server's certificate).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .errors import ConnectError

__all__ = ["discover_edges", "DiscoveryError"]


class DiscoveryError(ConnectError):
    """The discovery endpoint could not be used (unreachable, refused the key, bad
    answer).  ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _get(url: str, api_key: str, timeout: float) -> Any:
    req = urllib.request.Request(url, headers={"X-API-Key": api_key,
                                               "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read(1 << 20))
    except urllib.error.HTTPError as exc:
        detail = ""
        with contextlib.suppress(ValueError, AttributeError, OSError):
            detail = json.loads(exc.read(4096)).get("detail", "")
        raise DiscoveryError(f"discovery at {url} answered {exc.code}"
                             + (f": {detail}" if detail else ""), exc.code) from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DiscoveryError(f"discovery at {url} unreachable: {exc}") from exc
    except ValueError as exc:
        raise DiscoveryError(f"discovery at {url} did not answer JSON") from exc


async def discover_edges(origin_url: str, api_key: str, *,
                         position: tuple[float, float] | None = None,
                         timeout: float = 3.0) -> list[str]:
    """URLs of the healthy edges the origin knows, best first.

    Raises :class:`DiscoveryError` (a :class:`ConnectError`) when the origin cannot be
    reached, refuses ``api_key`` (``status`` 401/403), answers something else than an
    edge list, or knows no healthy edge; ``ValueError`` for a URL that is not
    ``http(s)://``.
    """
    parts = urllib.parse.urlsplit(origin_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"origin URL must be http(s)://host[:port], not {origin_url!r}")
    query = ""
    if position is not None:
        query = "?" + urllib.parse.urlencode({"lat": position[0], "lon": position[1]})
    url = origin_url.rstrip("/") + "/v1/edges" + query
    body = await asyncio.to_thread(_get, url, api_key, timeout)
    edges = body.get("edges") if isinstance(body, dict) else None
    if not isinstance(edges, list):
        raise DiscoveryError(f"discovery at {url} answered no edge list")
    urls = [e["url"] for e in edges if isinstance(e, dict) and isinstance(e.get("url"), str)
            and e.get("healthy", True) and str(e.get("draining", "0")) in ("0", "0.0")]
    if not urls:
        raise DiscoveryError(f"discovery at {url}: no healthy edge")
    return urls
