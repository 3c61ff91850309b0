"""Which edge to try next (sans-I/O): the order of candidates after a failure.

The asyncio :class:`client_sdk.Client` owns the timing (backoff, retry hints);
this module only answers "where to, in which order" from what the edges told
the client (neighbour lists, each edge's URL on the other transport).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from .protocol.codes import ErrorCode
from .rtt import EdgeRtts
from .transport import scheme_of

__all__ = ["EdgeList", "retry_hint_from_close"]


class EdgeList:
    """Candidate edges, best first; learns each edge's alternate URL from WELCOMEs.

    A client whose first URL is ``quic://`` prefers QUIC and falls back to the
    same edge's WebSocket URL (UDP may be blocked); WebSocket clients never try
    QUIC (a dead or filtered UDP port costs a timeout, a dead TCP port nothing).
    """

    def __init__(self, urls: Sequence[str], rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self.prefer_quic = bool(urls) and scheme_of(urls[0]) == "quic"
        #: The same edge on the other transport (ws URL <-> quic URL).
        self.alternates: dict[str, str] = {}

    def learn(self, info: Mapping[str, object]) -> None:
        """Remember the edge's two URLs from its WELCOME ``info``."""
        ws_url, quic_url = info.get("ws_url"), info.get("quic_url")
        if isinstance(ws_url, str) and isinstance(quic_url, str) and ws_url and quic_url:
            self.alternates[ws_url] = quic_url
            self.alternates[quic_url] = ws_url

    def candidates(self, current: str, neighbours: Sequence[str], urls: Sequence[str],
                   elsewhere: bool, rtts: EdgeRtts | None = None) -> list[str]:
        """Edges to try, best first, each once: the current one (unless told to go
        elsewhere), the neighbours the edge announced, then the configured URLs
        (and the current one last when going elsewhere).  With ``rtts`` the
        neighbours and configured URLs are ordered by measured latency instead
        (:meth:`~client_sdk.rtt.EdgeRtts.order`).

        Going elsewhere, the neighbour list starts at a random place (then wraps
        around) among the neighbours with no latency measured: every client of a dead
        edge got the same list, and taking it in order would send all of them to the
        first neighbour at once (its connection-rate limit refusing most) while the
        others idle."""
        order = [] if elsewhere or not current else [current]
        near = [u for u in dict.fromkeys(neighbours) if u != current]
        if elsewhere and len(near) > 1:
            k = self._rng.randrange(len(near))
            near = near[k:] + near[:k]
        rest = list(dict.fromkeys([*near, *(u for u in urls if u != current)]))
        order += rest if rtts is None else rtts.order(rest, self.alternates)
        if elsewhere and current:
            order.append(current)  # still worth a try after all the others
        if self.prefer_quic:
            expanded: list[str] = []
            for u in order:
                alt = self.alternates.get(u)
                if alt is None:
                    expanded.append(u)
                elif scheme_of(u) == "quic":
                    expanded += [u, alt]
                else:
                    expanded += [alt, u]
            order = expanded
        return list(dict.fromkeys(order))


def retry_hint_from_close(code: int | None, reason: str) -> float:
    """The wait (s) an overloaded edge asked for in its close reason ("retry in N ms"), or 0."""
    if code == ErrorCode.OVERLOADED and "retry in " in reason:
        tail = reason.rsplit("retry in ", 1)[1].removesuffix(" ms")
        if tail.isdigit():
            return int(tail) / 1000.0
    return 0.0
