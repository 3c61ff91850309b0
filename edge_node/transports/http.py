"""Plain HTTP on the WebSocket port (answered by websockets' ``process_request``, no
helper thread): what a request gets before any WebSocket handshake.

- ``/healthz``: 200 and ``{"status":"ok","edge_id":..,"connections":..,
  "max_connections":..,"pid":..}`` while the edge takes clients; 503 and
  ``{"status":"draining"}`` once it drains or stops;
- ``/metrics``: the Prometheus text exposition of the edge's metrics;
- a page added with :meth:`HttpEndpoints.add_pages` (the QUIC listener's
  ``/webtransport``): what its renderer returns;
- any other request that is not a WebSocket upgrade: 404;
- an upgrade that :class:`~edge_node.sessions.admission.Admission` refuses: 503 with
  ``Retry-After`` (whole seconds, at least 1) and ``X-Retry-After-Ms``.

An admitted upgrade gets ``None``: websockets carries on with the handshake.
Every response has ``Content-Length`` and ``Cache-Control: no-store``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from edge_node.runtime.metrics import EdgeMetrics
    from edge_node.sessions.admission import Admission

__all__ = ["HttpEndpoints", "PageRenderer"]

PROM_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: A page's path -> ``(status, content type, body)``.
PageRenderer = Callable[[str], tuple[int, str, bytes]]

_REASONS = {200: "OK", 404: "Not Found", 409: "Conflict", 503: "Service Unavailable"}


def response(status: int, body: bytes, ctype: str) -> Response:
    """A complete, uncacheable HTTP response."""
    headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store")])
    return Response(status, _REASONS.get(status, ""), headers, body)


class HttpEndpoints:
    """The HTTP side of one edge's WebSocket port (see the module docstring).

    Pass :meth:`process_request` to websockets' ``serve``.
    """

    def __init__(self, edge_id: str, metrics: EdgeMetrics, admission: Admission) -> None:
        self.edge_id = edge_id
        self.metrics = metrics
        self.admission = admission
        self._pages: dict[str, PageRenderer] = {}

    def add_pages(self, paths: Iterable[str], render: PageRenderer) -> None:
        """Serve ``paths`` (after ``/healthz`` and ``/metrics``) with ``render``."""
        for path in paths:
            self._pages[path] = render

    def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        """The response to ``request``, or ``None`` to go on with the WebSocket upgrade."""
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            body = (
                f'{{"status":"ok","edge_id":"{self.edge_id}",'
                f'"connections":{self.metrics.stats.connections},'
                f'"max_connections":{self.admission.max_connections},"pid":{os.getpid()}}}'
            ).encode()
            if self.admission.closing():
                return response(503, b'{"status":"draining"}', "application/json")
            return response(200, body, "application/json")
        if path == "/metrics":
            return response(200, self.metrics.render(), PROM_CONTENT_TYPE)
        render = self._pages.get(path)
        if render is not None:
            status, ctype, page = render(path)
            return response(status, page, ctype)
        if "upgrade" not in request.headers.get("Connection", "").lower():
            return response(404, b"not found: try /healthz, /metrics or a WebSocket\n",
                            "text/plain")
        wait = self.admission.admit()
        if wait:
            resp = response(503, b"edge busy or draining: retry later\n", "text/plain")
            resp.headers["Retry-After"] = str(max(1, round(wait)))
            resp.headers["X-Retry-After-Ms"] = str(max(1, int(wait * 1000)))
            return resp
        return None
