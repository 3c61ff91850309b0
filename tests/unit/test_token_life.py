"""edge_node.sessions.token_life: REFRESH on a live session and the expiry sweep, with
a fake session (the real one is driven end to end in tests/integration/test_token_refresh.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from client_sdk.protocol import (
    Claims,
    Error,
    ErrorCode,
    Refresh,
    Refreshed,
    decode,
    mint_token,
    verify_token,
)
from edge_node.sessions import token_life

SECRET = b"k1"
NOW = 1_800_000_000.0


@dataclass
class FakeSession:
    claims: Claims
    rooms: set[str] = field(default_factory=set)
    sent: list[object] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    def refuse(self, req_id: int, code: int, message: str) -> None:
        self.sent.append(Error(req_id, code, message))

    def send(self, data: bytes) -> None:
        self.sent.append(decode(data))

    def replace_claims(self, claims: Claims) -> None:
        self.claims = claims

    def leave_room(self, room: str) -> bool:
        self.rooms.discard(room)
        self.left.append(room)
        return True


def session(rooms: tuple[str, ...] = ("*",), joined: tuple[str, ...] = ()) -> FakeSession:
    claims = verify_token(mint_token(SECRET, "ada", rooms=rooms, now=NOW, ttl=60),
                          (SECRET,), now=NOW)
    return FakeSession(claims, set(joined))


def refresh(s: FakeSession, token: str, now: float = NOW + 30) -> str:
    return token_life.refresh(s, Refresh(7, token), (SECRET, b"k0"), now)  # type: ignore[arg-type]


def test_a_valid_token_replaces_the_claims_and_keeps_allowed_rooms() -> None:
    s = session(joined=("lobby", "arena-1"))
    token = mint_token(SECRET, "ada", rooms=["lobby", "arena-*"], now=NOW + 30, ttl=300)
    assert refresh(s, token) == "ok"
    assert s.sent == [Refreshed(7, int(NOW + 330), ())]
    assert s.claims.expires_at == NOW + 330
    assert s.rooms == {"lobby", "arena-1"} and s.left == []


def test_rooms_the_new_token_does_not_allow_are_left_and_listed() -> None:
    s = session(joined=("vip-lounge", "lobby", "arena-7"))
    token = mint_token(SECRET, "ada", rooms=["lobby"], now=NOW + 30, ttl=300)
    assert refresh(s, token) == "ok"
    assert s.sent == [Refreshed(7, int(NOW + 330), ("arena-7", "vip-lounge"))]
    assert s.left == ["arena-7", "vip-lounge"] and s.rooms == {"lobby"}
    assert not s.claims.may_join("vip-lounge")


@pytest.mark.parametrize(("token", "code", "outcome"), [
    ("not-a-jwt", ErrorCode.UNAUTHORIZED, "unauthorized"),
    (mint_token(b"other-key", "ada", now=NOW, ttl=300), ErrorCode.UNAUTHORIZED,
     "unauthorized"),
    (mint_token(SECRET, "ada", now=NOW, ttl=10), ErrorCode.TOKEN_EXPIRED, "expired"),
    (mint_token(SECRET, "bob", now=NOW, ttl=300), ErrorCode.FORBIDDEN, "forbidden"),
    (mint_token(SECRET, "ada", "device", now=NOW, ttl=300), ErrorCode.FORBIDDEN,
     "forbidden"),
])
def test_a_refused_refresh_answers_an_error_and_keeps_the_old_token(
        token: str, code: int, outcome: str) -> None:
    s = session(rooms=("lobby",), joined=("lobby",))
    before = s.claims
    assert refresh(s, token) == outcome
    (err,) = s.sent
    assert isinstance(err, Error) and (err.req_id, err.code) == (7, code)
    assert s.claims is before and s.rooms == {"lobby"} and s.left == []


def test_a_token_signed_with_an_older_configured_key_is_accepted() -> None:
    s = session()
    assert refresh(s, mint_token(b"k0", "ada", now=NOW, ttl=300)) == "ok"


def test_expired_lists_sessions_whose_exp_is_at_or_before_now() -> None:
    a, b = session(), session()
    b.claims = verify_token(mint_token(SECRET, "bob", now=NOW, ttl=120), (SECRET,), now=NOW)
    items = [("a", a), ("b", b)]
    assert token_life.expired(items, NOW + 59.9) == []
    assert token_life.expired(items, NOW + 60) == ["a"]
    assert token_life.expired(items, NOW + 500) == ["a", "b"]


class _Conn:
    def __init__(self, partial: int = 0) -> None:
        self.partial = partial

    def partial_bytes(self) -> int:
        return self.partial


def test_the_sweep_closes_an_expired_session_once_and_a_trickler_with_4008() -> None:
    from edge_node.sessions.sweep import SessionSweep

    sweep = SessionSweep(message_timeout=5.0)
    ada, bob = session(), session()
    ada.messages_in = bob.messages_in = 0  # type: ignore[attr-defined]
    sessions = {"ada": (ada, _Conn()), "bob": (bob, _Conn(partial=10))}
    assert sweep.due(sessions, now=0.0, wall=NOW) == []  # bob's partial message: noted
    assert sweep.due(sessions, now=0.5, wall=NOW + 61) == []  # within the interval
    assert sweep.due(sessions, now=1.0, wall=NOW + 61) == [
        ("ada", 4402, token_life.EXPIRED_REASON), ("bob", 4402, token_life.EXPIRED_REASON)]
    sessions["bob"] = (session(), _Conn(partial=10))
    sessions["bob"][0].messages_in = 0  # type: ignore[attr-defined]
    assert sweep.due(sessions, now=2.0, wall=NOW + 1) == []  # ada: told once already
    got = sweep.due(sessions, now=8.0, wall=NOW + 2)
    assert got == [("bob", 4008, "a message was not completed within 5 s")]
    del sessions["ada"]
    sessions["ada"] = (session(), _Conn())  # a new connection of the same session id
    assert ("ada", 4402, token_life.EXPIRED_REASON) in sweep.due(sessions, now=9.0,
                                                                 wall=NOW + 61)
