"""Failover and live handover: drain (make before break), frozen edge, network cut,
reconnect storm under the connection-rate limit."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

from client_sdk import Client, ReceivedMessage, connect
from tests.faultproxy import FaultProxy
from tests.helpers import PAIR as _P
from tests.helpers import Recorder, http_get
from tests.helpers import wait_until as _wait


async def _steady(pub: Client, room: str, n: int, interval: float, idx: int = 0) -> None:
    futs = []
    for k in range(1, n + 1):
        futs.append(pub.publish_nowait(room, _P.pack(idx, k)))
        await asyncio.sleep(interval)
    await asyncio.wait_for(asyncio.gather(*futs), 30)


async def _metric(url: str, name: str) -> float:
    status, _, body = await http_get(url + "/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_drain_moves_every_client_before_closing(edge_factory, token) -> None:
    """SIGTERM: every client is handed to a neighbour while its old connection still
    delivers; nobody is disconnected, nothing is lost or repeated, rooms keep their epoch."""
    draining, n1 = edge_factory("edge-h1"), edge_factory("edge-h2")
    edge_factory("edge-h3")  # a second neighbour: handoffs are spread over both
    subs: list[Client] = []
    recs: list[Recorder] = []
    pub = await connect(n1.url, token("pub"))
    try:
        first = await connect(draining.url, token("owner"))
        subs.append(first)
        rec0 = Recorder()
        recs.append(rec0)
        await first.join("hv1", on_message=rec0)  # the draining edge owns the room
        for i in range(5):
            c = await connect(draining.url, token(f"s{i}"))
            r = Recorder()
            await c.join("hv1", on_message=r)
            subs.append(c)
            recs.append(r)
        await pub.join("hv1")
        before = await pub.publish("hv1", _P.pack(0, 0))
        assert before is not None
        await _wait(lambda: all(r.seen for r in recs), 5, "first message")
        task = asyncio.create_task(_steady(pub, "hv1", 150, 0.02))
        await asyncio.sleep(0.5)
        draining.signal(signal.SIGTERM)
        await task
        expect = [(0, 0)] + [(0, k) for k in range(1, 151)]
        for r in recs:
            await _wait(lambda r=r: len(r.seen) >= len(expect), 10, "all messages")
        await asyncio.sleep(0.3)
        for c, r in zip(subs, recs, strict=True):
            assert r.seen == expect, "lost, repeated or reordered messages"
            assert c.handoffs == 1 and c.reconnects == 0, "the client was disconnected"
            assert c.edge_id in ("edge-h2", "edge-h3")
            assert all(ev.recovered for ev in c.recoveries)
        after = await pub.publish("hv1", _P.pack(0, 999))
        assert after is not None and after.epoch == before.epoch  # handed over, same epoch
        await _wait(lambda: not draining.alive(), 15, "the drained edge to exit")
        assert draining.proc.returncode == 0
    finally:
        for c in [pub, *subs]:
            await c.close()


async def test_drain_hands_rooms_to_the_neighbour_that_mirrors_them(edge_factory,
                                                                     token) -> None:
    """Room ``ra`` has a member on neighbour r2: its lease goes to r2 when the drain
    starts and every member of ``ra`` moves to r2 (the new owner's own fan-out).
    Room ``rb`` has members only on the draining edge, one of them publishing: its
    members are spread over both neighbours and its lease follows its last member.
    Publishes go on throughout: nothing lost, repeated or reordered, same epochs."""
    draining, n1 = edge_factory("edge-r1"), edge_factory("edge-r2")
    edge_factory("edge-r3")
    clients: list[Client] = []
    recs: dict[str, list[tuple[Client, Recorder]]] = {"ra": [], "rb": []}
    pub_a = await connect(n1.url, token("pub-a"))
    try:
        pub_b = await connect([draining.url, n1.url], token("pub-b"))
        clients.append(pub_b)
        for room in ("ra", "rb"):
            for i in range(4):
                c = await connect([draining.url, n1.url], token(f"{room}{i}"))
                r = Recorder()
                await c.join(room, on_message=r)
                clients.append(c)
                recs[room].append((c, r))
        await pub_b.join("rb", echo=False)  # rb: owned by the draining edge, no mirror
        await pub_a.join("ra", echo=False)  # ra: owned by the draining edge, r2 mirrors
        first_a = await pub_a.publish("ra", _P.pack(1, 0))
        first_b = await pub_b.publish("rb", _P.pack(2, 0))
        assert first_a is not None and first_b is not None
        await _wait(lambda: all(r.seen for v in recs.values() for _c, r in v), 5,
                    "first messages")
        tasks = [asyncio.create_task(_steady(pub_a, "ra", 60, 0.02, 1)),
                 asyncio.create_task(_steady(pub_b, "rb", 60, 0.02, 2))]
        await asyncio.sleep(0.3)
        draining.signal(signal.SIGTERM)
        await asyncio.gather(*tasks)
        for room, idx in (("ra", 1), ("rb", 2)):
            expect = [(idx, k) for k in range(61)]
            for c, r in recs[room]:
                await _wait(lambda r=r: len(r.seen) >= 61, 10, "all messages")
                assert r.seen == expect, "lost, repeated or reordered messages"
                assert c.handoffs == 1 and c.reconnects == 0
        assert {c.edge_id for c, _r in recs["ra"]} == {"edge-r2"}, "not on ra's new owner"
        assert {c.edge_id for c, _r in recs["rb"]} <= {"edge-r2", "edge-r3"}
        after_a = await pub_a.publish("ra", _P.pack(1, 999))
        after_b = await pub_b.publish("rb", _P.pack(2, 999))
        assert after_a is not None and after_a.epoch == first_a.epoch
        assert after_b is not None and after_b.epoch == first_b.epoch
        await _wait(lambda: not draining.alive(), 15, "the drained edge to exit")
        assert draining.proc.returncode == 0
    finally:
        await asyncio.gather(*(c.close() for c in [pub_a, *clients]), return_exceptions=True)


async def test_frozen_edge_is_detected_by_missed_pongs(edge_factory, token) -> None:
    """SIGSTOP: the connection stays open but silent; the SDK's keepalive notices and
    the client resumes on a neighbour with nothing lost."""
    frozen, other = edge_factory("edge-z1"), edge_factory("edge-z2")
    pub = await connect(other.url, token("pub"))
    sub = await connect([frozen.url, other.url], token("sub"), ping_interval=0.3,
                        ping_timeout=0.3, backoff_base=0.05)
    try:
        rec = Recorder()
        await sub.join("fz1", on_message=rec)
        await pub.join("fz1")
        await pub.publish("fz1", _P.pack(1, 1))
        await _wait(lambda: rec.seen == [(1, 1)], 5, "first message")
        frozen.signal(signal.SIGSTOP)
        try:
            for k in range(2, 12):
                await pub.publish("fz1", _P.pack(1, k), timeout=15)
            await _wait(lambda: len(rec.seen) >= 11, 15, "resume on the neighbour")
        finally:
            frozen.signal(signal.SIGCONT)
        assert sub.edge_id == "edge-z2" and sub.reconnects >= 1
        assert rec.seen == [(1, k) for k in range(1, 12)]
    finally:
        await pub.close()
        await sub.close()


async def test_client_side_network_cut(edge_factory, token) -> None:
    """A cut between client and edge (edge still up, still on Redis): detected by the
    SDK's keepalive; the client resumes on a neighbour; nothing lost; the stale session
    on the first edge does not announce a presence leave."""
    e1, e2 = edge_factory("edge-n1"), edge_factory("edge-n2")
    proxy = await FaultProxy("127.0.0.1", e1.port).start()
    watcher = await connect(e2.url, token("watcher"))
    sub = await connect([proxy.url, e2.url], token("cut"), ping_interval=0.3,
                        ping_timeout=0.3, backoff_base=0.05, connect_timeout=1.0)
    try:
        rec = Recorder()
        await sub.join("nc1", on_message=rec)
        wsub = await watcher.join("nc1", presence=True, presence_grace=0.0)  # the edge's own events
        await watcher.publish("nc1", _P.pack(2, 1))
        await _wait(lambda: rec.seen == [(2, 1)], 5, "first message")
        proxy.blackhole()
        for k in range(2, 8):
            await watcher.publish("nc1", _P.pack(2, k))
        await _wait(lambda: len(rec.seen) >= 7, 15, "resume after the cut")
        assert sub.edge_id == "edge-n2"
        assert rec.seen == [(2, k) for k in range(1, 8)]
        # The first edge closes the silent connection after its own ping timeout;
        # by then the session lives on edge-n2, so no "leave" may be announced.
        await asyncio.sleep(11)
        leaves = []
        while True:
            try:
                ev = await wsub.next_presence(0.05)
            except TimeoutError:
                break
            if not ev.joined and ev.member.subject == "cut":
                leaves.append(ev)
        assert leaves == []
        assert "cut" in {m.subject for m in await watcher.presence("nc1")}
    finally:
        await proxy.stop()
        await watcher.close()
        await sub.close()


async def test_reconnect_storm_respects_the_connection_rate(edge_factory, token) -> None:
    """1,000 clients of a killed edge reconnect to a neighbour limited to 100
    connections/s: some are told to retry later, none exceeds the limit, all resume.

    The limit sits far below what this process can offer (it reconnects 1,000
    clients at 400-550/s on a 2-core host), so the bucket runs dry on any machine:
    at 400/s rejections happened only when the test process happened to be fast."""
    rate = 100
    dead = edge_factory("edge-st1")
    near = edge_factory("edge-st2", "--connect-rate", str(rate))
    n = 1000
    clients: list[Client] = []
    try:
        sem = asyncio.Semaphore(100)

        async def one(i: int) -> Client:
            async with sem:
                return await connect([dead.url, near.url], token(f"p{i}"), ping_interval=None,
                                     backoff_base=0.2, backoff_cap=2.0)

        clients = list(await asyncio.gather(*(one(i) for i in range(n))))
        assert {c.edge_id for c in clients} == {"edge-st1"}
        opened0 = await _metric(near.http_url, "edge_connections_opened_total")
        samples: list[tuple[float, float, float]] = []  # (asked at, answered at, count)
        dead.kill()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            asked = time.monotonic()
            count = await _metric(near.http_url, "edge_connections_opened_total")
            samples.append((asked, time.monotonic(), count))
            if all(c.connected and c.edge_id == "edge-st2" for c in clients):
                break
            await asyncio.sleep(0.1)
        assert all(c.connected and c.edge_id == "edge-st2" for c in clients)
        assert all(c.reconnects == 1 for c in clients)
        assert await _metric(near.http_url, "edge_connects_rejected_total") > 0
        # Connections accepted between two samples stay within the token bucket:
        # rate x span + burst (burst = rate), plus 100 for the skew between admission
        # (HTTP upgrade) and counting (after the handshake).  A count was read some
        # time between asking and answering (a busy edge answers late), so the span
        # is taken from the first sample's question to the second one's answer.
        # Without the limit all 1,000 would arrive within about a second.
        for i, (ask_i, _ans_i, vi) in enumerate(samples):
            for _ask_j, ans_j, vj in samples[i + 1:]:
                assert vj - vi <= rate * (ans_j - ask_i) + rate + 100
        assert samples[-1][2] - opened0 >= n
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def test_drain_leaves_no_client_silent_for_a_publish_interval(edge_factory,
                                                                    token) -> None:
    """The drain acceptance bar in time: with a publish every 200 ms, no member of the
    drained edge's room is silent longer than one publish interval plus the scheduling
    slack measured in the same run: the handover adds under a quarter interval (50 ms)
    to any silence.

    Measured against a control member on an edge that is not drained, in this process:
    each silence of a member (between two messages) is compared with the control's
    silence between the same two messages (the measured slack), so a late publish, a
    stall of this process or of the publisher's edge is in both and cancels out (a
    fixed bound of two intervals failed on a loaded 2-core host).  Measured: 0.6-1.7 ms
    of excess in three runs on the 2-core machine; a missed interval would show as an
    excess of 200 ms.  The demo and the bench measure the exact figures."""
    draining, n1 = edge_factory("edge-g1"), edge_factory("edge-g2")
    n2 = edge_factory("edge-g3")
    interval, n = 0.2, 30
    subs: list[Client] = []
    arrivals: list[list[tuple[int, float]]] = []  # (publish number, arrival time)

    def recorder(into: list[tuple[int, float]]) -> Callable[[ReceivedMessage], None]:
        return lambda m: into.append((_P.unpack_from(m.payload)[1], time.monotonic()))

    pub = await connect(n1.url, token("pub"))
    control = await connect(n2.url, token("control"))
    try:
        for i in range(8):
            c = await connect(draining.url, token(f"g{i}"))
            ts: list[tuple[int, float]] = []
            await c.join("gap1", on_message=recorder(ts))
            subs.append(c)
            arrivals.append(ts)
        ctl: list[tuple[int, float]] = []
        await control.join("gap1", on_message=recorder(ctl))
        await pub.join("gap1", echo=False)
        task = asyncio.create_task(_steady(pub, "gap1", n, interval))
        await asyncio.sleep(1.0)
        draining.signal(signal.SIGTERM)
        await task
        for ts in [ctl, *arrivals]:
            await _wait(lambda ts=ts: any(k == n for k, _t in ts), 10, "the last message")
        await _wait(lambda: not draining.alive(), 15, "the drained edge to exit")
        everything = list(range(1, n + 1))
        assert [k for k, _t in ctl] == everything
        at = dict(ctl)
        for c, ts in zip(subs, arrivals, strict=True):
            got = [k for k, _t in ts]
            assert got == everything, \
                f"lost, repeated or reordered messages: missing {set(everything) - set(got)}"
            assert c.handoffs == 1 and c.reconnects == 0
            t = dict(ts)
            excess = max((t[k] - t[k - 1]) - (at[k] - at[k - 1]) for k in range(2, n + 1))
            assert excess < interval / 4, \
                f"a member went {excess * 1000:.0f} ms longer without messages than the control"
    finally:
        for c in [pub, control, *subs]:
            await c.close()


async def test_failover_metrics_on_the_neighbour(edge_factory, token) -> None:
    """After a SIGKILL the neighbour reports how fast it detected the dead owner and the
    clients' resume attempts by outcome."""
    dead, near = edge_factory("edge-fm1"), edge_factory("edge-fm2")
    owner = await connect(dead.url, token("fm-owner"))
    watcher = await connect(near.url, token("fm-watcher"))
    c = await connect([dead.url, near.url], token("fm-c"), backoff_base=0.05)
    try:
        await owner.join("fm1")  # the dead edge owns the room
        rec = Recorder()
        await c.join("fm1", on_message=rec)
        await watcher.join("fm1", echo=False)
        await watcher.publish("fm1", _P.pack(3, 1))
        await _wait(lambda: rec.seen == [(3, 1)], 5, "first message")
        dead.kill()
        await watcher.publish("fm1", _P.pack(3, 2))
        await _wait(lambda: rec.seen == [(3, 1), (3, 2)], 15, "resume on the neighbour")
        assert await _metric(near.http_url, 'edge_resume_attempts_total{outcome="resumed"}') >= 1
        detected = await _metric(near.http_url, "edge_failover_detection_seconds_count")
        assert detected == 1  # once per dead edge, not per room
        total = await _metric(near.http_url, "edge_failover_detection_seconds_sum")
        assert 0.0 < total < 30.0
    finally:
        for x in (owner, watcher, c):
            await x.close()


async def test_check_alive_notices_a_silent_link_at_once(edge_factory, token) -> None:
    """An app back in the foreground: its socket looks open, nothing arrives, and the
    keepalive is slow (here: off).  ``check_alive`` probes with a short deadline,
    drops the dead link and the client resumes on a neighbour, nothing lost."""
    e1, e2 = edge_factory("edge-ca1"), edge_factory("edge-ca2")
    proxy = await FaultProxy("127.0.0.1", e1.port).start()
    watcher = await connect(e2.url, token("watcher"))
    c = await connect([proxy.url, e2.url], token("phone"), ping_interval=None,
                      ping_timeout=None, backoff_base=0.05, connect_timeout=1.0)
    try:
        assert await c.check_alive(0.5)  # a live link answers
        rec = Recorder()
        await c.join("ca1", on_message=rec)
        await watcher.join("ca1")
        proxy.blackhole()  # the phone's network changed: the socket still "open"
        for k in range(1, 4):
            await watcher.publish("ca1", _P.pack(3, k))
        t0 = time.monotonic()
        assert not await c.check_alive(0.5)
        assert time.monotonic() - t0 < 2.0  # the deadline, not a keepalive
        await c.wait_connected(10)
        assert c.edge_id == "edge-ca2" and await c.check_alive(1.0)
        await _wait(lambda: rec.seen == [(3, k) for k in range(1, 4)], 10, "replay")
    finally:
        await proxy.stop()
        await watcher.close()
        await c.close()
