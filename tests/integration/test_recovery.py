"""Nothing lost: resume on the same or another edge, owner crash, outbox, gaps, fencing."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from client_sdk import Client, ClientClosedError, connect
from edge_node.local.launch import spawn_edge
from edge_node.redis_io import conn as redis_conn
from edge_node.redis_io import keys as redis_keys
from edge_node.store import lua_scripts
from tests.helpers import PAIR as _P
from tests.helpers import SECRET, Recorder, http_get
from tests.helpers import wait_until as _wait

#: Every edge test here runs over WebSocket and over QUIC (see tests/conftest.py).
TRANSPORTS = ("ws", "quic")


def _drop_connection(c: Client) -> None:
    """Cut the client's TCP connection without a close handshake (like a network drop)."""
    assert c._link is not None
    c._link.abort()


async def test_resume_same_edge_replays_missed(edge_factory, token) -> None:
    e = edge_factory("edge-r1")
    pub = await connect(e.url, token("pub"))
    sub = await connect(e.url, token("sub"), backoff_base=0.05)
    try:
        await pub.join("rs1")
        rec = Recorder()
        s = await sub.join("rs1", on_message=rec)
        for n in range(1, 11):
            await pub.publish("rs1", _P.pack(1, n))
        await _wait(lambda: len(rec.seen) == 10, 5, "first 10")
        _drop_connection(sub)
        for n in range(11, 31):  # published while the subscriber is away
            await pub.publish("rs1", _P.pack(1, n))
        await _wait(lambda: sub.reconnects == 1 and len(rec.seen) == 30, 10, "replay")
        ev = await s.next_recovery(5)
        assert ev.recovered and ev.reason == ""
        assert rec.seen == [(1, n) for n in range(1, 31)]
        assert s.duplicates == 0
    finally:
        await pub.close()
        await sub.close()


async def test_echo_off_skips_own_publishes_replayed_after_resume(edge_factory, token) -> None:
    """echo=False: the replay after a resume comes from the room's history, where the
    client's own publishes are too; the application must not see them (docs/sdk.md)."""
    e = edge_factory("edge-echo")
    me = await connect(e.url, token("me"), backoff_base=0.05)
    other = await connect(e.url, token("other"))
    try:
        seen: list[bytes] = []
        s = await me.join("echo1", echo=False, on_message=lambda m: seen.append(m.payload))
        await other.join("echo1")
        await me.publish("echo1", b"own-1")
        await me.publish("echo1", b"own-2")
        _drop_connection(me)
        await _wait(lambda: me.reconnects == 1, 10, "resume")
        ev = await s.next_recovery(5)
        assert ev.recovered and ev.replayed == 2, ev  # our own two, from history
        await other.publish("echo1", b"theirs")  # delivered after the replay, in order
        await _wait(lambda: bool(seen), 5, "the other client's message")
        assert seen == [b"theirs"]
        assert s.position[1] == 3 and s.duplicates == 0 and s.own_skipped == 2
    finally:
        await me.close()
        await other.close()


async def test_unreliable_publish_while_reconnecting_is_dropped(edge_factory, token) -> None:
    """``publish_nowait(..., reliable=False)`` and ``await publish(..., reliable=False)``
    both drop (and count) an update while the client reconnects; neither raises."""
    e = edge_factory("edge-unrel")
    c = await connect(e.url, token("u"))
    try:
        await c.join("unrel1")
        assert c.publish_nowait("unrel1", b"u0", reliable=False) is None
        c._backoff.base = 2.0
        c._backoff.attempt = 3  # the first retry waits up to 16 s: we stay away
        _drop_connection(c)
        await _wait(lambda: not c.connected, 5, "the link to drop")
        assert c.publish_nowait("unrel1", b"u1", reliable=False) is None
        assert await c.publish("unrel1", b"u2", reliable=False) is None
        assert c.unreliable_dropped == 2
    finally:
        await c.close()
    with pytest.raises(ClientClosedError):  # closed for good is not "away"
        c.publish_nowait("unrel1", b"u3", reliable=False)


async def test_resume_on_another_edge(edge_factory, token) -> None:
    e1, e2 = edge_factory("edge-r2a"), edge_factory("edge-r2b")
    pub = await connect(e1.url, token("pub"))
    sub = await connect([e2.url, e1.url], token("sub"), backoff_base=0.05)
    try:
        await pub.join("rs2")
        rec = Recorder()
        s = await sub.join("rs2", on_message=rec)
        for n in range(1, 6):
            await pub.publish("rs2", _P.pack(1, n))
        await _wait(lambda: len(rec.seen) == 5, 5, "first 5")
        sid = sub.session_id
        e2.kill()  # the subscriber's edge dies; it resumes on e1
        for n in range(6, 26):
            await pub.publish("rs2", _P.pack(1, n))
        await _wait(lambda: len(rec.seen) >= 25, 10, "resume on e1")
        assert sub.edge_id == "edge-r2a" and sub.session_id == sid
        ev = await s.next_recovery(5)
        assert ev.recovered, ev
        await asyncio.sleep(0.2)
        assert rec.seen == [(1, n) for n in range(1, 26)]
    finally:
        await pub.close()
        await sub.close()


async def test_owner_killed_under_steady_publishing(edge_factory, token) -> None:
    """SIGKILL the room owner while 2 publishers keep publishing: every subscriber's
    application-level sequence equals each publisher's sequence, no gap, no repeat."""
    owner, e2, e3 = edge_factory("edge-o1"), edge_factory("edge-o2"), edge_factory("edge-o3")
    urls = [owner.url, e2.url, e3.url]
    first = await connect(owner.url, token("first"))
    await first.join("rs3")  # makes edge-o1 the owner
    pubs = [await connect([owner.url, e2.url], token("pa"), backoff_base=0.05),
            await connect([e2.url, e3.url], token("pb"), backoff_base=0.05)]
    subs, recs = [], []
    for i, url in enumerate(urls):
        c = await connect([url, *[u for u in urls if u != url]], token(f"s{i}"),
                          backoff_base=0.05)
        rec = Recorder()
        await c.join("rs3", on_message=rec)
        subs.append(c)
        recs.append(rec)
    for p in pubs:
        await p.join("rs3")
    per_pub = 150
    try:
        async def run(idx: int, p: Client) -> None:
            futs = []
            for n in range(1, per_pub + 1):
                futs.append(p.publish_nowait("rs3", _P.pack(idx, n)))
                await asyncio.sleep(0.01)
            await asyncio.wait_for(asyncio.gather(*futs), 30)

        tasks = [asyncio.create_task(run(i, p)) for i, p in enumerate(pubs)]
        await asyncio.sleep(0.6)
        owner.kill()
        await asyncio.gather(*tasks)
        expect = {(i, n) for i in range(len(pubs)) for n in range(1, per_pub + 1)}
        for rec in recs:
            await _wait(lambda r=rec: set(r.seen) >= expect, 15, "all messages")
        await asyncio.sleep(0.3)
        for rec in recs:
            assert len(rec.seen) == len(set(rec.seen)), "duplicates delivered"
            assert set(rec.seen) == expect
            for i in range(len(pubs)):
                mine = [n for (p, n) in rec.seen if p == i]
                assert mine == sorted(mine), "per-publisher order broken"
        for c in subs[1:]:
            for ev in c.recoveries:
                assert ev.recovered, ev
        assert subs[0].reconnects >= 1  # the owner's own subscriber moved
    finally:
        for c in [first, *pubs, *subs]:
            await c.close()


async def test_gap_outside_history_is_reported(edge_factory, token, redis_url) -> None:
    e = edge_factory("edge-g1", "--stream-maxlen", "50")
    pub = await connect(e.url, token("pub", kind="service"))
    sub = await connect(e.url, token("sub"), backoff_base=0.05)
    try:
        await pub.join("rs4")
        s = await sub.join("rs4", on_message=lambda m: None)
        await pub.publish("rs4", b"x" * 8)
        await _wait(lambda: s.position[1] == 1, 5, "first message")
        # Stop the subscriber's reconnects while many messages go by.
        sub.reconnect = True
        sub._backoff.base = 2.0
        sub._backoff.attempt = 3  # first retry waits up to 16 s: we resume by hand below
        _drop_connection(sub)
        for _ in range(6000):  # >> ring (4096) and >> stream cap (50, approximate)
            pub.publish_nowait("rs4", b"y" * 8)
        await _wait(lambda: pub.outbox_size == 0, 20, "publishes durable")
        r = redis_conn.connect(redis_url)
        info = await r.xinfo_stream(redis_keys.room_log("rs4"))
        await r.aclose()
        assert info["length"] < 6000
        sub._backoff.reset()
        sub._backoff.base = 0.05
        task = sub._runner
        assert task is not None
        await _wait(lambda: bool(sub.recoveries), 25, "recovery event")
        ev = sub.recoveries[-1]
        assert not ev.recovered and ev.reason == "history_trimmed"
        assert ev.info["first_available"] is not None
    finally:
        await pub.close()
        await sub.close()


async def test_stale_owner_cannot_write(redis_url) -> None:
    """Fencing is checked in Redis: an append under an old lease token is refused."""
    r = redis_conn.connect(redis_url)
    room = f"fence-{os.getpid()}"
    try:
        acquire = r.register_script(lua_scripts.ACQUIRE)
        append = r.register_script(lua_scripts.APPEND)
        ok, tok1 = await acquire(keys=[redis_keys.room_owner(room), redis_keys.room_epoch(room)],
                                 args=["edge-old", 200])
        assert ok == 1
        assert await append(keys=[redis_keys.room_owner(room), redis_keys.room_log(room)],
                            args=[tok1, 100, 1, 1, b"a"]) == 1
        await asyncio.sleep(0.3)  # the old owner freezes; its lease lapses
        ok, tok2 = await acquire(keys=[redis_keys.room_owner(room), redis_keys.room_epoch(room)],
                                 args=["edge-new", 5000])
        assert ok == 1 and tok2 != tok1
        with pytest.raises(Exception, match="FENCED"):
            await append(keys=[redis_keys.room_owner(room), redis_keys.room_log(room)],
                         args=[tok1, 100, 1, 2, b"stale"])
        assert await append(keys=[redis_keys.room_owner(room), redis_keys.room_log(room)],
                            args=[tok2, 100, 2, 1, b"b"]) == 1
        # A retried batch is idempotent: nothing appended twice.
        assert await append(keys=[redis_keys.room_owner(room), redis_keys.room_log(room)],
                            args=[tok2, 100, 2, 1, b"b"]) == 0
        # Contiguous within an epoch: a batch after a missing one is refused.
        with pytest.raises(Exception, match="GAP"):
            await append(keys=[redis_keys.room_owner(room), redis_keys.room_log(room)],
                         args=[tok2, 100, 2, 3, b"skipped-2"])
        ids = [eid for eid, _ in await r.xrange(redis_keys.room_log(room))]
        assert ids == [b"1-1", b"2-1"]
    finally:
        await r.aclose()


async def test_frozen_owner_is_fenced(edge_factory, token) -> None:
    """SIGSTOP the owner past its lease: another edge takes over; the woken owner is fenced."""
    owner, other = edge_factory("edge-f1"), edge_factory("edge-f2")
    a = await connect(owner.url, token("a"))
    b = await connect(other.url, token("b"), backoff_base=0.05)
    try:
        await a.join("rs5")
        rec = Recorder()
        await b.join("rs5", on_message=rec)
        await b.publish("rs5", _P.pack(9, 1))
        owner.signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(3.0)  # lease 2 s: edge-f2 takes the room over
            pos = await b.publish("rs5", _P.pack(9, 2), timeout=10)
            assert pos is not None and pos.epoch >= 2
        finally:
            owner.signal(signal.SIGCONT)
        await _wait(lambda: (9, 2) in rec.seen, 5, "message under the new epoch")
        await asyncio.sleep(1.0)
        assert rec.seen == [(9, 1), (9, 2)]
    finally:
        await a.close()
        await b.close()


async def test_resume_window_expires(edge_factory, token, redis_url, tmp_path,
                                     quic_cert) -> None:
    e = edge_factory("edge-w1", "--resume-window", "1")
    sub = await connect(e.url, token("sub"), backoff_base=0.05, backoff_cap=0.2)
    replacement = None
    try:
        s = await sub.join("rs6", on_message=lambda m: None)
        sid = sub.session_id
        e.kill()  # no more checkpoints: the 1 s window starts running out
        await asyncio.sleep(2.0)
        replacement = spawn_edge(port=e.port, redis_url=redis_url, secret=SECRET,
                                 edge_id="edge-w1b", extra_args=["--resume-window", "1"],
                                 log_path=str(tmp_path / "w1b.log"),
                                 quic=e.quic_port is not None, quic_port=e.quic_port or 0,
                                 quic_cert=quic_cert[0], quic_key=quic_cert[1])
        ev = await s.next_recovery(15)
        assert not ev.recovered and ev.reason == "session_expired"
        assert sub.session_id == sid  # the same identity, but no replay promised
        pub = await connect(replacement.quic_url or replacement.url, token("pub"))
        await pub.join("rs6")
        pos = await pub.publish("rs6", b"after")
        assert pos is not None
        await _wait(lambda: s.position == (pos.epoch, pos.seq), 5, "live after expiry")
        await pub.close()
    finally:
        await sub.close()
        if replacement is not None:
            replacement.stop()


async def test_dead_owner_rooms_move_before_the_lease_lapses(edge_factory, token) -> None:
    """With a 30 s lease only the probe path can move the room within the test:
    the mirror edge probes the silent owner, finds it dead and steals its lease."""
    owner = edge_factory("edge-s1", "--lease-ms", "30000")
    other = edge_factory("edge-s2", "--lease-ms", "30000")
    a = await connect(owner.url, token("a"))
    b = await connect(other.url, token("b"), backoff_base=0.05)
    try:
        await a.join("rs7")
        rec = Recorder()
        await b.join("rs7", on_message=rec)
        first = await b.publish("rs7", _P.pack(7, 1))
        assert first is not None
        owner.kill()
        pos = await b.publish("rs7", _P.pack(7, 2), timeout=10)
        assert pos is not None and pos.epoch > first.epoch
        await _wait(lambda: rec.seen == [(7, 1), (7, 2)], 5, "both messages")
        status, _, body = await http_get(other.http_url + "/metrics")
        assert status == 200
        steals = [ln for ln in body.decode().splitlines()
                  if ln.startswith("edge_lease_steals_total ")]
        assert steals and float(steals[0].split()[1]) >= 1
    finally:
        await a.close()
        await b.close()


async def test_leases_survive_a_script_cache_flush(edge_factory, token, redis_url) -> None:
    """After SCRIPT FLUSH (a Redis restart or failover does the same) the owner reloads
    its scripts: its lease keeps being renewed and publishes stay durable."""
    e = edge_factory("edge-sf1")
    a = await connect(e.url, token("a"))
    r = redis_conn.connect(redis_url)
    try:
        await a.join("rs8")
        first = await a.publish("rs8", b"before")
        assert first is not None
        await r.script_flush()
        await asyncio.sleep(3.0)  # longer than the 2 s lease: renewals must have worked
        after = await a.publish("rs8", b"after", timeout=10)
        assert after is not None and after.epoch == first.epoch and after.seq == 2
        owner = await r.get(redis_keys.room_owner("rs8"))
        assert owner is not None and owner.decode().startswith("edge-sf1:")
    finally:
        await r.aclose()
        await a.close()
