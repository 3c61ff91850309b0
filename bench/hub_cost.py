"""The hub's own cost per reliable publish, in process: no sockets, no Redis, no load
generator.  One room with M members on null transports; N reliable publishes from one
member; the CPU time per publish (fan-out to every member included).

    python -m bench.hub_cost --members 50 --publishes 4000 --rounds 7

For a figure that does not depend on what else the machine does, count instructions:
run it twice under callgrind, with N and with 0 publishes, and divide the difference by
N (``valgrind --tool=callgrind --callgrind-out-file=/dev/null python -m bench.hub_cost
--publishes 1000 --rounds 1``; the ``Collected`` line).  ``--no-store`` serves the room
without a store (acknowledged at once, nothing appended), as an edge does while Redis is
unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from client_sdk.protocol import Member
from edge_node.fanout.hub import Hub
from edge_node.runtime.metrics import EdgeMetrics
from edge_node.store.base import StoreUnavailable
from edge_node.transports.outbound import Flusher, FrameSink, Outbound

__all__ = ["main", "measure"]


class _NullTransport:
    def write(self, data: bytes) -> None: ...
    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


class _Session:
    def __init__(self, sid: str, flusher: Flusher) -> None:
        self.session_id = sid
        self.member = Member(sid, sid, "player")
        self.closed = False
        self.out: FrameSink = Outbound(_NullTransport(), flusher, limit=1 << 30, soft_limit=1 << 29,
                            on_slow=lambda: None)

    def send(self, data: bytes) -> None: ...


async def measure(members: int, publishes: int, rounds: int, store: bool) -> list[float]:
    """CPU µs per publish, one figure per round."""
    hub = Hub("bench", EdgeMetrics("bench"))
    if not store:
        async def refuse(room: str, since: object = None) -> object:
            raise StoreUnavailable("no store (bench)")
        hub.store.activate = refuse  # type: ignore[method-assign,assignment]
    flusher = Flusher(asyncio.get_running_loop())
    sessions = [_Session(f"s{i}", flusher) for i in range(members)]
    for s in sessions:
        await hub.join(s, "room", 0)
    out = []
    req = 0
    for _ in range(rounds):
        t0 = time.process_time()
        for i in range(publishes):
            req += 1
            hub.publish(sessions[0], "room", b"x" * 88, True, req, req)
            if i % 20 == 19:
                await asyncio.sleep(0)  # let writes and durability notices run
        await asyncio.sleep(0)
        if publishes:
            out.append((time.process_time() - t0) / publishes * 1e6)
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the median CPU µs per publish (and every round), as text or ``--json``."""
    p = argparse.ArgumentParser(prog="python -m bench.hub_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=50, help="members of the room (default 50)")
    p.add_argument("--publishes", type=int, default=4000,
                   help="reliable publishes per round (default 4000)")
    p.add_argument("--rounds", type=int, default=7, help="rounds; the median is reported")
    p.add_argument("--no-store", action="store_true",
                   help="serve the room without a store (acknowledged at once)")
    p.add_argument("--json", action="store_true", help="print JSON")
    a = p.parse_args(argv)
    if a.members < 1 or a.publishes < 0 or a.rounds < 1:
        p.error("--members and --rounds must be at least 1, --publishes at least 0")
    figures = asyncio.run(measure(a.members, a.publishes, a.rounds, not a.no_store))
    med = statistics.median(figures) if figures else 0.0
    if a.json:
        print(json.dumps({"members": a.members, "publishes": a.publishes,
                          "store": not a.no_store, "us_per_publish_median": med,
                          "rounds": figures}))
    else:
        print(f"{med:.1f} µs CPU per reliable publish to {a.members} members "
              f"(median of {len(figures)}: {', '.join(f'{x:.1f}' for x in figures)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
