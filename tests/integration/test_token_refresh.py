"""Token refresh against real edges (docs/protocol.md 37 REFRESH, client_sdk.token_refresh).

- a session whose token is refreshed on the live connection outlives several tokens
  without a reconnect, nothing lost;
- without a refresh the edge closes the session with 4402 and the SDK client ends
  with that code;
- a client whose provider was down when the token expired gets a new token after the
  4402 close and resumes the session: nothing lost;
- a failover after the first token expired resumes on the neighbour with the
  current (refreshed) token;
- a bad refresh token gets a clear ERROR (4401, 4402, 4403) and the session goes on;
- a refreshed token with fewer rooms leaves the others: their subscriptions end with
  ForbiddenError, the other members see the leave.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from client_sdk import AuthError, ClientClosedError, ForbiddenError, connect
from client_sdk.protocol import Refresh, Refreshed, mint_token
from tests.helpers import PAIR as _P
from tests.helpers import SECRET, Recorder, http_get
from tests.helpers import wait_until as _wait

#: Every edge test here runs over WebSocket and over QUIC (see tests/conftest.py).
TRANSPORTS = ("ws", "quic")


class Provider:
    """Mints tokens for ``subject`` valid ``ttl`` s; ``down`` makes it fail."""

    def __init__(self, subject: str, ttl: float, rooms: list[str] | None = None) -> None:
        self.subject, self.ttl, self.rooms = subject, ttl, rooms or ["*"]
        self.calls = 0
        self.down = False

    async def __call__(self) -> str:
        self.calls += 1
        if self.down:
            raise RuntimeError("token service unavailable")
        return mint_token(SECRET, self.subject, rooms=self.rooms, now=time.time(),
                          ttl=self.ttl)


async def publish_steadily(pub: object, room: str, n: int, every: float) -> None:
    for i in range(1, n + 1):
        await pub.publish(room, _P.pack(1, i))  # type: ignore[attr-defined]
        await asyncio.sleep(every)


async def test_refresh_keeps_a_session_alive_past_its_tokens(edge, token) -> None:
    provider = Provider("sub", ttl=3)
    pub = await connect(edge.url, token("pub"))
    sub = await connect(edge.url, token_provider=provider)
    try:
        await pub.join("tr1")
        rec = Recorder()
        await sub.join("tr1", on_message=rec)
        first_exp = sub.tokens.expires_at if sub.tokens else None
        await publish_steadily(pub, "tr1", 40, 0.2)  # 8 s: several 2-3 s tokens
        await _wait(lambda: len(rec.seen) == 40, 5, "all 40 messages")
        assert rec.seen == [(1, n) for n in range(1, 41)]
        assert sub.connected and sub.reconnects == 0
        assert sub.tokens is not None and sub.tokens.refreshes >= 2
        assert first_exp is not None and sub.tokens.expires_at is not None
        assert sub.tokens.expires_at > first_exp > time.time() - 8
        _status, _ctype, body = await http_get(edge.http_url + "/metrics")
        ok = [ln for ln in body.decode().splitlines()
              if ln.startswith('edge_token_refreshes_total{outcome="ok"}')]
        assert ok and float(ok[0].split()[-1]) >= 2
    finally:
        await pub.close()
        await sub.close()


async def test_without_a_refresh_the_edge_closes_the_session_with_4402(edge, token) -> None:
    sub = await connect(edge.url, token("late", ttl=2))
    try:
        s = await sub.join("tr2")
        with pytest.raises(ClientClosedError) as info:
            await asyncio.wait_for(s.get(), 6)
        assert info.value.code == 4402
        assert "token expired" in str(info.value)
        with pytest.raises(ClientClosedError):
            await sub.publish("tr2", b"x")
    finally:
        await sub.close()


async def test_after_an_expiry_the_session_resumes_with_a_new_token(edge, token) -> None:
    provider = Provider("sub", ttl=2)
    pub = await connect(edge.url, token("pub"))
    sub = await connect(edge.url, token_provider=provider, backoff_base=0.05)
    try:
        await pub.join("tr3")
        rec = Recorder()
        s = await sub.join("tr3", on_message=rec)
        sid = sub.session_id
        provider.down = True  # no refresh: the edge closes the session with 4402
        await _wait(lambda: not sub.connected, 6, "the 4402 close")
        provider.down = False
        await publish_steadily(pub, "tr3", 20, 0.05)
        await _wait(lambda: sub.connected and len(rec.seen) == 20, 10, "resumed")
        assert sub.session_id == sid and sub.reconnects == 1
        ev = await s.next_recovery(5)
        assert ev.recovered, ev
        assert rec.seen == [(1, n) for n in range(1, 21)]
    finally:
        await pub.close()
        await sub.close()


async def test_failover_after_the_first_token_expired_uses_the_refreshed_one(
        edge_factory, token) -> None:
    e1, e2 = edge_factory("edge-t1"), edge_factory("edge-t2")
    provider = Provider("sub", ttl=3)
    pub = await connect(e1.url, token("pub"))
    sub = await connect([e2.url, e1.url], token_provider=provider, backoff_base=0.05)
    try:
        await pub.join("tr4")
        rec = Recorder()
        s = await sub.join("tr4", on_message=rec)
        first = sub.token
        await _wait(lambda: sub.tokens is not None and sub.tokens.refreshes >= 2, 8,
                    "two refreshes (the first token has expired)")
        assert sub.token != first
        sid = sub.session_id
        e2.kill()  # the subscriber's edge dies; it resumes on e1 with the current token
        await publish_steadily(pub, "tr4", 20, 0.05)
        await _wait(lambda: len(rec.seen) == 20, 10, "resume on e1")
        assert sub.edge_id == "edge-t1" and sub.session_id == sid
        ev = await s.next_recovery(5)
        assert ev.recovered, ev
        assert rec.seen == [(1, n) for n in range(1, 21)]
    finally:
        await pub.close()
        await sub.close()


@pytest.mark.ws_only
async def test_a_bad_refresh_token_gets_a_clear_error_and_the_session_goes_on(
        edge, token) -> None:
    c = await connect(edge.url, token("ada", rooms=["tr5"]))
    try:
        await c.join("tr5")
        cases = [
            ("garbage", AuthError, 4401),
            (mint_token(b"not-the-key", "ada", now=time.time(), ttl=60), AuthError, 4401),
            (mint_token(SECRET, "ada", now=time.time() - 120, ttl=60), AuthError, 4402),
            (mint_token(SECRET, "bob", now=time.time(), ttl=60), ForbiddenError, 4403),
        ]
        for bad, cls, code in cases:
            with pytest.raises(cls) as info:
                await c.request(Refresh(0, bad))
            assert info.value.code == code, info.value
        assert await c.publish("tr5", b"still here") is not None
        good = mint_token(SECRET, "ada", rooms=["tr5"], now=time.time(), ttl=600)
        reply = await c.request(Refresh(0, good))
        assert isinstance(reply, Refreshed) and reply.rooms_left == ()
        assert reply.expires_at >= int(time.time()) + 590
    finally:
        await c.close()


@pytest.mark.ws_only
async def test_a_refresh_with_fewer_rooms_leaves_the_others(edge, token) -> None:
    provider = Provider("ada", ttl=3, rooms=["lobby-*", "vip-*"])
    ada = await connect(edge.url, token_provider=provider)
    bob = await connect(edge.url, token("bob"))
    try:
        lobby = await ada.join("lobby-6")
        vip = await ada.join("vip-6")
        watch = await bob.join("vip-6", presence=True)
        await bob.join("lobby-6")
        provider.rooms = ["lobby-*"]  # the next token no longer allows vip-*
        with pytest.raises(ForbiddenError) as info:
            await asyncio.wait_for(vip.get(), 6)
        assert "vip-6" in str(info.value)
        assert ada.subscription("vip-6") is None
        ev = await watch.next_presence(3)
        assert not ev.joined and ev.member.subject == "ada"
        await bob.publish("lobby-6", b"hi")
        assert (await lobby.get(3)).payload == b"hi"
        with pytest.raises(ForbiddenError):
            await ada.join("vip-6")
    finally:
        await ada.close()
        await bob.close()


@pytest.mark.ws_only
async def test_sessions_moved_by_a_drain_keep_their_refreshed_tokens(edge_factory) -> None:
    """Eight clients on 3 s tokens are handed to the neighbour by a drain while they
    refresh: none is ever closed for an expired token (a refresh that completed on the
    old link during the move is sent again on the new one)."""
    draining, target = edge_factory("edge-td1"), edge_factory("edge-td2")
    subs = [await connect([draining.url, target.url], backoff_base=0.05,
                          token_provider=Provider(f"m{i}", ttl=3))
            for i in range(8)]
    try:
        for c in subs:
            await c.join("tr7")
        await asyncio.sleep(1.3)  # the first refreshes are near
        draining.signal(signal.SIGTERM)
        await _wait(lambda: all(c.handoffs == 1 for c in subs), 10, "every client moved")
        await asyncio.sleep(7.0)  # two more token lifetimes on the target
        assert all(c.connected and c.edge_id == "edge-td2" and c.reconnects == 0
                   for c in subs)
        assert all(c.tokens is not None and c.tokens.refreshes >= 3 for c in subs)
        _status, _ctype, body = await http_get(target.http_url + "/metrics")
        expired = [ln for ln in body.decode().splitlines()
                   if ln.startswith('edge_errors_total{code="4402"}')]
        assert not expired or float(expired[0].split()[-1]) == 0, expired
    finally:
        for c in subs:
            await c.close()
