"""The SDK's sans-I/O client core (:mod:`client_sdk.protocol.connection`): plain
bytes in and out, a fake clock (times are just numbers passed in)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from client_sdk.errors import (
    AuthError,
    ClientClosedError,
    ConnectionLostError,
    EdgeRelayError,
    ForbiddenError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
)
from client_sdk.protocol import (
    JOIN_NO_ECHO,
    Ack,
    Command,
    Error,
    Frame,
    Handoff,
    Hello,
    Join,
    Joined,
    Leave,
    Member,
    Message,
    Neighbours,
    Ping,
    Pong,
    PresenceJoin,
    PresenceList,
    PresenceMembers,
    Publish,
    ReportState,
    Resumed,
    Telemetry,
    TelemetryAck,
    Welcome,
    decode,
    encode,
)
from client_sdk.protocol.connection import ClientConnection, ConnState
from client_sdk.protocol.events import (
    FrameIgnored,
    FrameReceived,
    HandoffRequested,
    KeepaliveTimeout,
    NeighboursChanged,
    PingFailed,
    PongReceived,
    PresenceEvent,
    PublishAcked,
    PublishFailed,
    RecoveryEvent,
    RequestAnswered,
    RequestFailed,
    ServerNotice,
)

ME = "sess-me"
OTHER = "sess-other"


def welcome(core: ClientConnection, now: float = 0.0, **info: Any) -> None:
    info.setdefault("resume_token", "rt-1")
    core.connection_made(Welcome(ME, "edge-1", info), now)


def sent(core: ClientConnection) -> list[Frame]:
    """Frames the core wants written, decoded (reliable ones only)."""
    return [decode(data) for data, reliable in core.data_to_send() if reliable]


def joined(core: ClientConnection, room: str, flags: int = 0, at: float = 0.0,
           pos: tuple[int, int] = (1, 0)) -> None:
    core.track_room(room, flags)
    req = core.send_request(Join(0, room, flags), at, 10)
    core.data_to_send()
    core.receive_frame(encode(Joined(req, room, *pos)), at)
    assert core.events() == [RequestAnswered(req, Joined(req, room, *pos))]


def msg(room: str, epoch: int, seq: int, sender: str = OTHER, idem: int = 0) -> bytes:
    return encode(Message(room, epoch, seq, sender, b"p%d" % seq, idem))


@pytest.fixture
def core() -> ClientConnection:
    c = ClientConnection(retry_delay=0.5)
    welcome(c)
    return c


# -- requests ---------------------------------------------------------------------


def test_each_reply_answers_the_request_with_its_id(core: ClientConnection) -> None:
    core.track_room("a", 0)
    r1 = core.send_request(Join(0, "a"), 0.0, 10)
    r2 = core.send_request(PresenceList(0, "a"), 0.0, 10)
    assert r1 != r2
    assert sent(core) == [Join(r1, "a", 0), PresenceList(r2, "a")]
    members = (Member("s", "bob", "player"),)
    core.receive_frame(encode(PresenceMembers(r2, "a", members)), 0.1)
    core.receive_frame(encode(Joined(r1, "a", 3, 7)), 0.2)
    core.receive_frame(encode(Joined(999, "a", 9, 9)), 0.3)  # nobody asked: ignored
    assert core.events() == [RequestAnswered(r2, PresenceMembers(r2, "a", members)),
                             RequestAnswered(r1, Joined(r1, "a", 3, 7))]
    assert core.rooms["a"].position == (3, 7)  # JOINED sets where the room starts


def test_request_ids_are_never_reused_across_requests_and_publishes(
        core: ClientConnection) -> None:
    ids = {core.send_request(Leave(0, f"r{i}"), 0.0) for i in range(5)}
    core.send_publish("r", b"x", 0.0)
    pub = sent(core)[-1]
    assert isinstance(pub, Publish) and pub.req_id not in ids and len(ids) == 5


def test_only_request_frames_go_through_send_request(core: ClientConnection) -> None:
    with pytest.raises(TypeError):
        core.send_request(Publish(0, "r", b"x"), 0.0)
    with pytest.raises(TypeError):
        core.send_request(Ping(1), 0.0)
    rid = core.send_request(ReportState(0, 3, {"fw": "1"}), 0.0)
    assert sent(core) == [ReportState(rid, 3, {"fw": "1"})]
    core.receive_frame(encode(Ack(rid, 0, 3)), 0.1)
    assert core.events() == [RequestAnswered(rid, Ack(rid, 0, 3))]


def test_a_cancelled_request_ignores_its_late_reply(core: ClientConnection) -> None:
    rid = core.send_request(Leave(0, "a"), 0.0, 10)
    core.cancel_request(rid)
    core.receive_frame(encode(Ack(rid, 0, 0)), 0.1)
    assert core.events() == []
    assert core.next_deadline(0.1) is None


def test_sending_needs_a_link() -> None:
    c = ClientConnection()
    with pytest.raises(ConnectionLostError):
        c.send_request(Leave(0, "a"), 0.0)
    with pytest.raises(ConnectionLostError):
        c.send_ping(0.0)
    with pytest.raises(ConnectionLostError):
        c.send_frame(Telemetry(1, ()))
    assert c.data_to_send() == []


# -- the outbox -------------------------------------------------------------------


def test_an_ack_resolves_the_publish_it_answers(core: ClientConnection) -> None:
    idems = [core.send_publish("r", b"m%d" % i, 0.0) for i in range(3)]
    pubs = sent(core)
    assert [p.idem for p in pubs if isinstance(p, Publish)] == idems
    second = pubs[1]
    assert isinstance(second, Publish)
    core.receive_frame(encode(Ack(second.req_id, 4, 12)), 0.1)
    assert core.events() == [PublishAcked(idems[1], (4, 12))]
    assert [i.idem for i in core.outbox.pending()] == [idems[0], idems[2]]
    core.receive_frame(encode(Ack(second.req_id, 4, 12)), 0.2)  # a repeat: nothing
    assert core.events() == []


def test_publishes_are_resent_with_their_key_on_the_next_link(core: ClientConnection) -> None:
    idem = core.send_publish("r", b"m", 0.0)
    (first,) = sent(core)
    assert isinstance(first, Publish)
    core.connection_lost("cut")
    assert core.state is ConnState.DISCONNECTED
    later = core.send_publish("r", b"m2", 1.0)  # kept while away
    assert core.data_to_send() == []
    welcome(core, 2.0)
    again = sent(core)
    assert [(p.idem, p.payload) for p in again if isinstance(p, Publish)] == [
        (idem, b"m"), (later, b"m2")]
    assert isinstance(again[0], Publish) and again[0].req_id != first.req_id
    core.receive_frame(encode(Ack(first.req_id, 1, 1)), 2.1)  # an ACK from the old link
    assert core.events() == []
    core.receive_frame(encode(Ack(again[0].req_id, 1, 1)), 2.2)
    assert core.events() == [PublishAcked(idem, (1, 1))]
    assert len(core.outbox) == 1


def test_publish_timeout_takes_it_out_of_the_outbox(core: ClientConnection) -> None:
    idem = core.send_publish("r", b"m", 10.0, timeout=2.0)
    core.data_to_send()
    assert core.next_deadline(10.0) == 12.0
    core.handle_timer(11.9)
    assert core.events() == []
    core.handle_timer(12.0)
    (ev,) = core.events()
    assert isinstance(ev, PublishFailed) and ev.idem == idem
    assert isinstance(ev.error, RequestTimeoutError) and len(core.outbox) == 0
    assert core.next_deadline(12.0) is None


def test_outbox_full_and_oversized_publishes_are_refused_locally() -> None:
    c = ClientConnection(max_outbox=2)
    welcome(c, max_frame_bytes=200)
    c.send_publish("r", b"a", 0.0)
    c.send_publish("r", b"b", 0.0)
    with pytest.raises(EdgeRelayError, match="outbox full"):
        c.send_publish("r", b"c", 0.0)
    with pytest.raises(ServerError) as exc:
        c.send_publish("r", b"x" * 300, 0.0, reliable=False)
    assert exc.value.code == 4413


# -- errors ----------------------------------------------------------------------


@pytest.mark.parametrize(("code", "cls"), [(4401, AuthError), (4402, AuthError),
                                           (4403, ForbiddenError), (4003, RateLimitedError),
                                           (4404, ServerError)])
def test_an_error_reply_fails_its_request_with_the_code_class(
        core: ClientConnection, code: int, cls: type[ServerError]) -> None:
    rid = core.send_request(Join(0, "a"), 0.0, 10)
    core.receive_frame(encode(Error(rid, code, "no")), 0.1)
    (ev,) = core.events()
    assert isinstance(ev, RequestFailed) and ev.req_id == rid
    assert type(ev.error) is cls and ev.error.code == code  # type: ignore[attr-defined]


def test_a_final_publish_refusal_fails_that_publish(core: ClientConnection) -> None:
    keep = core.send_publish("r", b"ok", 0.0)
    idem = core.send_publish("r", b"no", 0.0)
    refused = sent(core)[1]
    assert isinstance(refused, Publish)
    core.receive_frame(encode(Error(refused.req_id, 4403, "forbidden")), 0.1)
    (ev,) = core.events()
    assert isinstance(ev, PublishFailed) and ev.idem == idem
    assert isinstance(ev.error, ForbiddenError)
    assert [i.idem for i in core.outbox.pending()] == [keep]


def test_a_transient_publish_refusal_is_retried_after_the_delay(core: ClientConnection) -> None:
    idem = core.send_publish("r", b"m", 0.0)
    (first,) = sent(core)
    assert isinstance(first, Publish)
    core.receive_frame(encode(Error(first.req_id, 4003, "rate limited")), 1.0)
    assert core.events() == [] and len(core.outbox) == 1
    assert core.next_deadline(1.0) == 1.5
    core.handle_timer(1.4)
    assert core.data_to_send() == []
    core.handle_timer(1.5)
    (retry,) = sent(core)
    assert isinstance(retry, Publish)
    assert (retry.idem, retry.payload) == (idem, b"m") and retry.req_id != first.req_id


def test_an_error_for_no_request_is_a_notice(core: ClientConnection) -> None:
    core.receive_frame(encode(Error(0, 4003, "slow down")), 0.0)
    core.receive_frame(encode(Error(77, 4400, "late")), 0.0)
    assert core.events() == [ServerNotice(4003, "slow down"), ServerNotice(4400, "late")]


def test_a_lost_link_fails_requests_and_pings_but_keeps_publishes(
        core: ClientConnection) -> None:
    rid = core.send_request(Leave(0, "a"), 0.0, 10)
    stamp = core.send_ping(0.0, 10)
    core.send_publish("r", b"m", 0.0)
    core.connection_lost("connection lost (None )")
    evs = core.events()
    assert [type(e) for e in evs] == [RequestFailed, PingFailed]
    assert isinstance(evs[0], RequestFailed) and evs[0].req_id == rid
    assert isinstance(evs[1], PingFailed) and evs[1].stamp == stamp
    assert all(isinstance(e.error, ConnectionLostError) for e in evs)  # type: ignore[union-attr]
    assert len(core.outbox) == 1 and core.next_deadline(0.0) is None


def test_a_handoff_switch_fails_the_requests_of_the_old_link(core: ClientConnection) -> None:
    rid = core.send_request(Leave(0, "a"), 0.0, 10)
    core.data_to_send()
    welcome(core, 1.0)  # a second WELCOME while connected: the new link takes over
    (ev,) = core.events()
    assert isinstance(ev, RequestFailed) and ev.req_id == rid
    assert isinstance(ev.error, ConnectionLostError) and "moved" in str(ev.error)


def test_close_fails_everything_with_the_close_reason(core: ClientConnection) -> None:
    rid = core.send_request(Leave(0, "a"), 0.0, 10)
    idem = core.send_publish("r", b"m", 0.0)
    why = ClientClosedError("closed by edge: 4401 bad token", 4401)
    core.close(why)
    assert core.events() == [RequestFailed(rid, why), PublishFailed(idem, why)]
    with pytest.raises(ClientClosedError):
        core.send_publish("r", b"m", 0.0)
    with pytest.raises(ClientClosedError):
        core.send_request(Leave(0, "a"), 0.0)
    core.receive_frame(msg("r", 1, 1), 0.0)
    assert core.events() == [] and core.next_deadline(0.0) is None


# -- deadlines -------------------------------------------------------------------


def test_request_timeout(core: ClientConnection) -> None:
    rid = core.send_request(Join(0, "a"), 100.0, 10)
    assert core.next_deadline(100.0) == 110.0
    assert core.next_deadline(111.0) == 111.0  # overdue: now
    core.handle_timer(109.999)
    assert core.events() == []
    core.handle_timer(110.0)
    (ev,) = core.events()
    assert isinstance(ev, RequestFailed) and ev.req_id == rid
    assert isinstance(ev.error, RequestTimeoutError)
    assert str(ev.error) == "no answer to Join in 10 s"
    core.receive_frame(encode(Joined(rid, "a", 1, 0)), 111.0)  # too late: ignored
    assert core.events() == []


def test_an_answered_request_leaves_no_deadline(core: ClientConnection) -> None:
    rid = core.send_request(Leave(0, "a"), 0.0, 10)
    other = core.send_request(Leave(0, "b"), 1.0, 10)
    core.receive_frame(encode(Ack(rid, 0, 0)), 0.5)
    core.events()
    assert core.next_deadline(0.5) == 11.0
    core.receive_frame(encode(Ack(other, 0, 0)), 0.6)
    assert core.next_deadline(0.6) is None


def test_timeouts_of_every_kind_come_out_in_deadline_order(core: ClientConnection) -> None:
    rid = core.send_request(Leave(0, "a"), 0.0, 3.0)
    stamp = core.send_ping(0.0, timeout=1.0)
    idem = core.send_publish("a", b"x", 0.0, timeout=2.0)
    core.data_to_send()
    assert core.next_deadline(0.0) == 1.0
    core.handle_timer(5.0)
    assert [type(e) for e in core.events()] == [PingFailed, PublishFailed, RequestFailed]
    assert core.next_deadline(5.0) is None and len(core.outbox) == 0
    assert (rid, stamp, idem) != (0, 0, 0)


def test_ping_round_trip_and_pong_timeout(core: ClientConnection) -> None:
    stamp = core.send_ping(5.0, timeout=2.0)
    assert sent(core) == [Ping(stamp)]
    core.receive_frame(encode(Pong(stamp)), 5.25)
    assert core.events() == [PongReceived(stamp, 0.25)]
    lost = core.send_ping(6.0, timeout=2.0)
    assert core.next_deadline(6.0) == 8.0
    core.handle_timer(8.0)
    (ev,) = core.events()
    assert isinstance(ev, PingFailed) and ev.stamp == lost
    assert isinstance(ev.error, RequestTimeoutError)


def test_keepalive_ping_is_due_after_silence_and_times_out() -> None:
    c = ClientConnection(ping_interval=2.0, ping_timeout=1.0)
    assert c.next_deadline(0.0) is None  # no link: nothing to keep alive
    welcome(c, 10.0)
    assert c.next_deadline(10.0) == 12.0
    c.receive_frame(msg("r", 1, 1), 11.0)  # traffic postpones the ping
    assert c.next_deadline(11.0) == 13.0
    c.handle_timer(12.5)
    assert c.data_to_send() == []
    c.handle_timer(13.0)
    (ping,) = sent(c)
    assert isinstance(ping, Ping)
    assert c.next_deadline(13.0) == 14.0
    c.receive_frame(encode(Pong(ping.stamp)), 13.2)  # answered: not an application PONG
    assert c.events() == [] and c.next_deadline(13.2) == 15.2
    c.handle_timer(15.2)
    (ping2,) = sent(c)
    assert isinstance(ping2, Ping)
    c.handle_timer(16.2)  # nothing at all came back
    (ev,) = c.events()
    assert isinstance(ev, KeepaliveTimeout) and ev.silent_for == pytest.approx(3.0)


def test_keepalive_any_frame_after_the_ping_proves_the_link_alive() -> None:
    c = ClientConnection(ping_interval=2.0, ping_timeout=1.0)
    welcome(c, 0.0)
    c.handle_timer(2.0)
    assert isinstance(sent(c)[0], Ping)
    c.receive_frame(encode(Error(0, 4003, "x")), 2.5)
    c.events()
    c.handle_timer(3.0)
    assert c.events() == []
    assert c.next_deadline(3.0) == 4.5


# -- messages, dedupe and the resume map ------------------------------------------------


def test_resume_map_follows_received_positions(core: ClientConnection) -> None:
    assert ClientConnection().resume_map() is None  # before any WELCOME: a new session
    joined(core, "a", pos=(2, 5))
    joined(core, "b", flags=JOIN_NO_ECHO, pos=(1, 0))
    core.receive_frame(msg("a", 2, 6), 1.0)
    core.receive_frame(msg("a", 3, 1), 1.1)
    core.receive_frame(msg("b", 0, 0), 1.2)  # unreliable: no position
    hello = decode(core.hello("tok", "me"))
    assert isinstance(hello, Hello) and hello.token == "tok"
    assert hello.resume == {"sid": ME, "rt": "rt-1", "att": 1,
                            "rooms": {"a": [0, 3, 1], "b": [JOIN_NO_ECHO, 1, 0]}}
    core.forget_room("b")
    again = decode(core.hello("tok"))
    assert isinstance(again, Hello) and again.resume is not None
    assert again.resume["att"] == 2 and again.resume["rooms"] == {"a": [0, 3, 1]}


def test_replay_after_resume_is_deduplicated(core: ClientConnection) -> None:
    joined(core, "a")
    for seq in (1, 2, 3):
        core.receive_frame(msg("a", 1, seq), 0.0)
    assert [m.seq for m in core.events()] == [1, 2, 3]  # type: ignore[union-attr]
    core.connection_lost("cut")
    welcome(core, 1.0)
    core.receive_frame(encode(Resumed("a", True, 1, 3, 2)), 1.0)
    for seq in (2, 3, 4, 5):  # the replay overlaps what was already delivered
        core.receive_frame(msg("a", 1, seq), 1.0)
    evs = core.events()
    assert evs[0] == RecoveryEvent("a", True, (1, 3), 2, "", {})
    assert [(m.epoch, m.seq) for m in evs[1:]] == [(1, 4), (1, 5)]  # type: ignore[union-attr]
    assert core.rooms["a"].duplicates == 2 and core.rooms["a"].position == (1, 5)


def test_a_republished_copy_is_dropped_by_sender_and_key(core: ClientConnection) -> None:
    joined(core, "a")
    core.receive_frame(msg("a", 1, 1, sender="pub", idem=7), 0.0)
    core.receive_frame(msg("a", 2, 1, sender="pub", idem=7), 0.0)  # re-sent after failover
    core.receive_frame(msg("a", 2, 2, sender="other", idem=7), 0.0)  # another sender's 7
    assert [(m.sender, m.seq) for m in core.events()] == [  # type: ignore[union-attr]
        ("pub", 1), ("other", 2)]
    assert core.rooms["a"].duplicates == 1


def test_messages_of_rooms_not_joined_are_dropped(core: ClientConnection) -> None:
    core.receive_frame(msg("nowhere", 1, 1), 0.0)
    core.receive_frame(encode(PresenceJoin("nowhere", Member("s", "x", "player"))), 0.0)
    assert core.events() == []


def test_echo_off_skips_own_publishes_replayed_after_a_resume(core: ClientConnection) -> None:
    """Defect: join with echo=False, publish twice, cut the link, resume: the replay
    from the room's history carried both own publishes to the application."""
    joined(core, "g", flags=JOIN_NO_ECHO, pos=(1, 0))
    for n in (1, 2):
        core.send_publish("g", b"own%d" % n, 0.0)
    for i, pub in enumerate(sent(core)):
        assert isinstance(pub, Publish)
        core.receive_frame(encode(Ack(pub.req_id, 1, i + 1)), 0.1)
    core.events()
    core.connection_lost("cut")
    welcome(core, 1.0)
    core.receive_frame(msg("g", 1, 1, sender=ME, idem=1), 1.0)  # replayed from history
    core.receive_frame(msg("g", 1, 2, sender=ME, idem=2), 1.0)
    core.receive_frame(msg("g", 1, 3, sender=OTHER, idem=1), 1.0)
    assert [(m.sender, m.seq) for m in core.events()] == [  # type: ignore[union-attr]
        (OTHER, 3)]
    assert core.rooms["g"].position == (1, 3)  # skipped, but not to be replayed again
    assert core.rooms["g"].own_skipped == 2


def test_echo_on_delivers_own_publishes(core: ClientConnection) -> None:
    joined(core, "g", flags=0)
    core.receive_frame(msg("g", 1, 1, sender=ME, idem=1), 0.0)
    assert len(core.events()) == 1


def test_unreliable_publish_is_dropped_and_counted_while_away(
        core: ClientConnection) -> None:
    """Defect: publish_nowait(reliable=False) raised ConnectionLostError while the
    client reconnected, where the contract is "dropped if not connected"."""
    assert core.send_publish("r", b"u", 0.0, reliable=False) == 0
    assert [(decode(d), r) for d, r in core.data_to_send()] == [
        (Publish(0, "r", b"u", False, 0), False)]
    core.connection_lost("cut")
    assert core.send_publish("r", b"u", 0.0, reliable=False) == 0
    assert core.send_publish("r", b"u", 0.0, reliable=False) == 0
    assert core.data_to_send() == [] and core.unreliable_dropped == 2
    core.close(ClientClosedError("closed"))
    with pytest.raises(ClientClosedError):  # closed is not "away": the caller must know
        core.send_publish("r", b"u", 0.0, reliable=False)


# -- control frames and the rest ------------------------------------------------------


def test_control_frames_become_events(core: ClientConnection) -> None:
    joined(core, "a")
    core.receive_frame(encode(Ping(42)), 0.0)
    assert sent(core) == [Pong(42)]
    core.receive_frame(encode(Handoff("ws://next:1", "drain", 3000)), 0.0)
    core.receive_frame(encode(Neighbours(("ws://n1", "ws://n2"))), 0.0)
    bob = Member("s2", "bob", "player")
    core.receive_frame(encode(PresenceJoin("a", bob)), 0.0)
    assert core.events() == [HandoffRequested("ws://next:1", "drain", 3000),
                             NeighboursChanged(("ws://n1", "ws://n2")),
                             PresenceEvent("a", True, bob)]
    assert core.neighbours == ["ws://n1", "ws://n2"]


def test_welcome_sets_the_session(core: ClientConnection) -> None:
    welcome(core, 0.0, neighbours=["ws://x", 3], max_frame_bytes=100, resume_token="rt-2")
    assert (core.session_id, core.edge_id, core.resume_token) == (ME, "edge-1", "rt-2")
    assert core.neighbours == ["ws://x"] and core.server_info["max_frame_bytes"] == 100


def test_frames_the_core_does_not_handle_come_out_whole(core: ClientConnection) -> None:
    core.receive_frame(encode(TelemetryAck(5, 3, 0)), 0.0)
    core.receive_frame(Command("c1", "reboot"), 0.0)  # already decoded frames too
    assert core.events() == [FrameReceived(TelemetryAck(5, 3, 0)),
                             FrameReceived(Command("c1", "reboot"))]
    assert core.handles(Message) and core.handles(Ack) and not core.handles(TelemetryAck)


def test_unknown_and_undecodable_frames_are_ignored(core: ClientConnection) -> None:
    rid = core.send_request(Leave(0, "a"), 0.0, 10)
    core.receive_frame(msgpack.packb([99, rid, "from the future"]), 0.0)
    core.receive_frame(b"\xc1 not msgpack", 0.0)
    core.receive_frame(msgpack.packb([8, "bad ack"]), 0.0)
    evs = core.events()
    assert [type(e) for e in evs] == [FrameIgnored] * 3
    assert isinstance(evs[0], FrameIgnored) and evs[0].type_id == 99
    core.receive_frame(encode(Ack(rid, 0, 0)), 0.1)  # the request is still pending
    assert core.events() == [RequestAnswered(rid, Ack(rid, 0, 0))]


def test_a_retiring_link_only_contributes_messages(core: ClientConnection) -> None:
    joined(core, "a")
    rid = core.send_request(Leave(0, "b"), 0.0, 10)
    core.data_to_send()
    core.receive_frame(encode(Ack(rid, 0, 0)), 0.0, retiring=True)
    core.receive_frame(encode(Ping(1)), 0.0, retiring=True)
    core.receive_frame(msg("a", 1, 1), 0.0, retiring=True)
    core.receive_frame(msg("a", 1, 1), 0.0)  # the same message on the new link: a copy
    assert [type(e) for e in core.events()] == [Message]
    assert core.data_to_send() == [] and core.rooms["a"].duplicates == 1


# -- the message fast path (receive) ------------------------------------------------


def test_receive_returns_a_new_message_and_leaves_nothing_else(core: ClientConnection) -> None:
    joined(core, "a")
    m = core.receive(msg("a", 1, 1), 0.5)
    assert m == Message("a", 1, 1, OTHER, b"p1")
    assert core.events() == [] and core.data_to_send() == [] and core.next_deadline(0.5) is None
    assert core.receive(msg("a", 1, 1), 0.6) is None  # a copy: dropped by the same dedupe
    assert core.receive(msg("nowhere", 1, 1), 0.6) is None
    assert core.rooms["a"].duplicates == 1 and core.rooms["a"].position == (1, 1)


def test_receive_queues_a_message_behind_pending_events(core: ClientConnection) -> None:
    joined(core, "a")
    core.receive_frame(encode(Error(0, 4000, "slow down")), 0.0)  # not drained yet
    assert core.receive(msg("a", 1, 1), 0.0) is None
    evs = core.events()
    assert [type(e) for e in evs] == [ServerNotice, Message]  # order kept
    assert core.receive(encode(Ping(3)), 0.0) is None  # other frames: as receive_frame
    assert sent(core) == [Pong(3)]
    assert core.receive(b"\xc1", 0.0) is None and [type(e) for e in core.events()] == [
        FrameIgnored]


def test_receive_moves_the_keepalive_later_only() -> None:
    core = ClientConnection(ping_interval=5.0, ping_timeout=2.0)
    welcome(core, 0.0)
    joined(core, "a", at=0.0)
    assert core.next_deadline(0.0) == 5.0
    assert core.receive(msg("a", 1, 1), 3.0) is not None
    assert core.next_deadline(3.0) == 8.0
