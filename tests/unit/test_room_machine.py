"""The room machine, below the process: events in, commands out, a fake clock.

No Redis, no sockets: every continuity case (activation, fencing, takeover, handover,
duplicates, forwarding, timeouts, linger, replay) is one sequence of events.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest

from client_sdk.protocol import ErrorCode
from edge_node.rooms import events as ev
from edge_node.rooms.events import Record
from edge_node.rooms.machine import TRANSITIONS, RoomMachine, RoomSettings, RoomState
from edge_node.rooms.replay import History, needs_history, plan_resume

St = RoomState
ME, OTHER, THIRD = "edge-a", "edge-b", "edge-c"


@dataclass(frozen=True)
class Sess:
    """A stand-in for a client session: the machine only hands it back."""

    sid: str


def machine(cfg: RoomSettings | None = None, *, to_origin: bool = False
            ) -> tuple[RoomMachine[Sess], list[int]]:
    dups: list[int] = []
    m: RoomMachine[Sess] = RoomMachine("r", ME, cfg or RoomSettings(), to_origin=to_origin,
                                       count_duplicate=lambda: dups.append(1))
    return m, dups


def owned(cfg: RoomSettings | None = None, *, epoch: int = 1, last: tuple[int, int] = (0, 0),
          recent: tuple[Record, ...] = (), to_origin: bool = False
          ) -> tuple[RoomMachine[Sess], list[int]]:
    m, dups = machine(cfg, to_origin=to_origin)
    assert m.handle(ev.LeaseResult(ME, epoch, True, last), 0.0) == [ev.LoadRecent(2000)]
    assert m.state is St.SETTLING
    m.handle(ev.RecentLoaded(recent), 0.0)
    assert m.state is St.OWNED
    return m, dups


def mirror(epoch: int = 1, last: tuple[int, int] = (0, 0), owner: str = OTHER
           ) -> RoomMachine[Sess]:
    m, _ = machine()
    assert m.handle(ev.LeaseResult(owner, epoch, False, last), 0.0) == []
    assert m.state is St.MIRROR
    return m


def of(cmds: list[Any], kind: type[Any]) -> list[Any]:
    return [c for c in cmds if isinstance(c, kind)]


def body_pos(body: bytes) -> tuple[int, int]:
    frame = msgpack.unpackb(body)
    return frame[2], frame[3]


def rec(epoch: int, seq: int, sender: str = "s1", origin: str = OTHER, req_id: int = 0,
        idem: int = 0, payload: bytes = b"x") -> Record:
    return Record(epoch, seq, sender, payload, origin, req_id, idem)


# -- the table -------------------------------------------------------------------------


def test_every_state_has_a_row_and_every_target_is_a_state() -> None:
    assert set(TRANSITIONS) == set(RoomState)
    for row in TRANSITIONS.values():
        for targets in row.values():
            assert targets and all(isinstance(t, RoomState) for t in targets)


def test_an_event_not_in_the_row_is_ignored_and_counted() -> None:
    m, _ = owned()
    assert m.handle(ev.RemoteEntry(rec(1, 1)), 0.0) == []
    assert m.ignored == 1 and m.last == (1, 0)


def test_random_event_sequences_never_leave_the_table_and_positions_only_grow() -> None:
    """Whatever order events come in, every transition is one the table lists (handle
    asserts it), positions assigned here only grow, and no publish is acknowledged
    twice or before it is durable (a store-backed room)."""
    rng = random.Random(1234)
    for _ in range(300):
        m, _dups = machine(RoomSettings(ring_size=8, forward_timeout=1.0, room_linger=1.0))
        now = 0.0
        acked: set[int] = set()
        assigned: list[tuple[int, int]] = []
        # req: request ids; epoch: the store's epoch counter (a new lease: the next one)
        for step in range(60):
            req = epoch = step + 1
            now += rng.random() * 0.3
            mine = rng.random() < .5
            e = rng.choice([
                ev.LeaseResult(ME if mine else OTHER, epoch, mine,
                               (epoch - 1, rng.randint(0, 5))),
                ev.RecentLoaded(()), ev.LeaseLost(),
                ev.LeaseAcquired(epoch, (epoch - 1, rng.randint(0, 9))),
                ev.OwnerChanged(THIRD), ev.HandOverStart(THIRD), ev.HandOverDone(),
                ev.HandOverFailed(rng.random() < .5), ev.Durable((rng.randint(1, 4),
                                                                   rng.randint(0, 20))),
                ev.RemoteEntry(rec(rng.randint(1, 4), rng.randint(1, 20), origin=ME,
                                   req_id=rng.randint(1, req))),
                ev.ForwardedPublish("p", b"x", OTHER, req, rng.randint(0, 5)),
                ev.LocalPublish(Sess("s"), "s", b"x", req, rng.randint(0, 5)),
                ev.RemoteAck("s", rng.randint(1, req), (1, 1)), ev.Timer(),
                ev.Emptied(), ev.Occupied(),
            ])
            before = m.last
            state = m.state
            cmds = m.handle(e, now)
            for c in cmds:
                if isinstance(c, ev.Ack) and state is not St.LOCAL:
                    assert c.req_id not in acked, "acknowledged twice"
                    acked.add(c.req_id)
                if isinstance(c, ev.Append):
                    assigned.append((c.epoch, c.seq))
            if isinstance(e, ev.LocalPublish | ev.ForwardedPublish) and state is St.OWNED:
                assert m.last >= before
        assert assigned == sorted(assigned), "positions assigned here only grow"
        assert len(set(assigned)) == len(assigned), "no position assigned twice"


# -- activation, positions -------------------------------------------------------------


def test_owner_and_mirror_report_the_same_position_for_a_new_room() -> None:
    """Defect: JOINED on a non-owner edge said (0, 0) where the owner said (1, 0)."""
    own, _ = owned(epoch=1)
    assert own.position() == (1, 0)
    assert mirror(epoch=1, last=(0, 0)).position() == (1, 0)
    # Once messages exist, both report the last one.
    m = mirror(epoch=1, last=(1, 7))
    assert m.position() == (1, 7)
    m.handle(ev.RemoteEntry(rec(1, 8)), 0.0)
    assert m.position() == (1, 8)


def test_a_new_epoch_starts_at_zero_and_continues_after_queued_appends() -> None:
    m, _ = machine()
    m.handle(ev.LeaseResult(ME, 3, True, (2, 9), queued=None), 0.0)
    m.handle(ev.RecentLoaded(()), 0.0)
    assert m.last == (3, 0)
    # Same epoch, this edge still has appends queued past the stream's end.
    m2, _ = machine()
    m2.handle(ev.LeaseResult(ME, 3, True, (3, 4), queued=(3, 9)), 0.0)
    m2.handle(ev.RecentLoaded(()), 0.0)
    assert m2.last == (3, 9)


def test_local_room_acks_at_once_and_appends_nothing() -> None:
    m, _ = machine(to_origin=True)
    m.handle(ev.RunLocal(1), 0.0)
    assert m.state is St.LOCAL and m.mine
    s = Sess("s")
    cmds = m.handle(ev.LocalPublish(s, "s", b"hi", 7, 0), 0.0)
    assert [type(c) for c in cmds] == [ev.Fanout, ev.Uplink, ev.Ack]
    assert cmds[2] == ev.Ack(s, 7, (1, 1))
    assert not of(cmds, ev.Append)


# -- owning: assign, durability, duplicates ------------------------------------------------------


def test_owner_assigns_fans_out_appends_and_acks_only_once_durable() -> None:
    m, _ = owned(to_origin=True)
    s = Sess("s")
    c1 = m.handle(ev.LocalPublish(s, "s", b"a", 1, 11), 0.0)
    c2 = m.handle(ev.LocalPublish(s, "s", b"b", 2, 12), 0.0)
    assert body_pos(of(c1, ev.Fanout)[0].body) == (1, 1)
    assert of(c2, ev.Append)[0] == ev.Append(1, 2, "s", b"b", ME, 2, 12)
    assert not of(c1 + c2, ev.Ack) and not of(c1 + c2, ev.Uplink)
    d1 = m.handle(ev.Durable((1, 1)), 0.0)
    assert of(d1, ev.Ack) == [ev.Ack(s, 1, (1, 1))]
    assert of(d1, ev.Uplink) == [ev.Uplink((1, 1), "s", b"a")]
    d2 = m.handle(ev.Durable((1, 2)), 0.0)
    assert of(d2, ev.Ack) == [ev.Ack(s, 2, (1, 2))]
    assert m.handle(ev.Durable((1, 2)), 0.0) == []  # a repeated notice acks nothing


def test_a_resent_publish_is_not_fanned_out_again_but_acked_with_its_position() -> None:
    m, dups = owned()
    s = Sess("s")
    m.handle(ev.LocalPublish(s, "s", b"a", 1, 99), 0.0)
    m.handle(ev.Durable((1, 1)), 0.0)
    again = m.handle(ev.LocalPublish(s, "s", b"a", 5, 99), 0.0)
    assert again == [ev.Ack(s, 5, (1, 1))]
    assert dups == [1] and m.last == (1, 1)


def test_a_forwarded_duplicate_is_answered_to_the_sender_edge() -> None:
    m, _ = owned()
    m.handle(ev.ForwardedPublish("p", b"a", OTHER, 3, 42), 0.0)
    assert m.handle(ev.ForwardedPublish("p", b"a", OTHER, 4, 42), 0.0) == [
        ev.ForwardAck(OTHER, "p", 4, (1, 1))]


def test_a_new_owner_recognises_publishes_stored_by_the_previous_one() -> None:
    """Takeover: duplicate detection is rebuilt from the stream before the room is
    owned, so a publish re-sent after a failover is not stored twice."""
    stored = (rec(1, 5, sender="p", idem=77),)
    m, dups = owned(epoch=2, last=(1, 5), recent=stored)
    assert m.handle(ev.ForwardedPublish("p", b"a", OTHER, 9, 77), 0.0) == [
        ev.ForwardAck(OTHER, "p", 9, (1, 5))]
    assert dups == [1] and m.last == (2, 0)


# -- mirroring, forwarding, timeouts ---------------------------------------------------


def test_mirror_forwards_and_acks_when_its_own_publish_comes_back_from_the_stream() -> None:
    m = mirror()
    s = Sess("s")
    cmds = m.handle(ev.LocalPublish(s, "s", b"a", 4, 8), 10.0)
    assert cmds == [ev.Forward(OTHER, "s", b"a", ME, 4, 8)]
    back = m.handle(ev.RemoteEntry(rec(1, 1, sender="s", origin=ME, req_id=4, idem=8)), 10.1)
    assert of(back, ev.Ack) == [ev.Ack(s, 4, (1, 1))]
    assert body_pos(of(back, ev.Fanout)[0].body) == (1, 1)
    assert not m.forwarded
    assert m.handle(ev.RemoteEntry(rec(1, 1)), 10.2) == []  # read twice: delivered once


def test_the_owner_recognising_a_duplicate_answers_the_forwarded_publish() -> None:
    m = mirror()
    s = Sess("s")
    m.handle(ev.LocalPublish(s, "s", b"a", 4, 8), 0.0)
    assert m.handle(ev.RemoteAck("s", 4, (1, 3)), 0.1) == [ev.Ack(s, 4, (1, 3))]
    assert m.handle(ev.RemoteAck("s", 4, (1, 3)), 0.2) == []


def test_a_slow_owner_is_suspected_then_the_publish_times_out() -> None:
    cfg = RoomSettings(forward_timeout=5.0, suspect_after=0.4)
    m, _ = machine(cfg)
    m.handle(ev.LeaseResult(OTHER, 1, False, (0, 0)), 0.0)
    s = Sess("s")
    m.handle(ev.LocalPublish(s, "s", b"a", 4, 8), 100.0)
    assert m.next_deadline() == pytest.approx(100.4)
    assert m.handle(ev.Timer(), 100.2) == []
    assert m.handle(ev.Timer(), 100.5) == [ev.Suspect(OTHER)]
    out = m.handle(ev.Timer(), 105.0)
    assert of(out, ev.Refuse) == [ev.Refuse(s, 4, ErrorCode.PUBLISH_TIMEOUT, of(
        out, ev.Refuse)[0].text)]
    assert not m.forwarded and m.next_deadline() is None


def test_owner_change_resends_waiting_publishes_to_the_new_owner() -> None:
    m = mirror()
    s = Sess("s")
    m.handle(ev.LocalPublish(s, "s", b"a", 4, 8), 0.0)
    out = m.handle(ev.OwnerChanged(THIRD), 1.0)
    assert out == [ev.Forward(THIRD, "s", b"a", ME, 4, 8)]
    assert m.next_deadline() == pytest.approx(1.0 + 5.0 - 5.0 + 0.4)


# -- fencing ---------------------------------------------------------------------------


def test_fenced_owner_refuses_undurable_publishes_and_asks_again_once() -> None:
    m, _ = owned()
    s = Sess("s")
    m.handle(ev.LocalPublish(s, "s", b"a", 1, 1), 0.0)
    m.handle(ev.Durable((1, 1)), 0.0)
    m.handle(ev.LocalPublish(s, "s", b"b", 2, 2), 0.0)
    out = m.handle(ev.LeaseLost(), 0.0)
    assert m.state is St.FENCED
    assert [type(c) for c in out] == [ev.Refuse, ev.Activate]
    assert out[0].req_id == 2 and out[0].code == ErrorCode.PUBLISH_TIMEOUT
    assert out[1] == ev.Activate(since=(1, 1))
    # The append loop and the lease loop may both notice: the second is a no-op.
    assert m.handle(ev.LeaseLost(), 0.0) == []
    # A durable notice for the lost epoch acknowledges nothing now.
    assert m.handle(ev.Durable((1, 2)), 0.0) == []


def test_fenced_room_holds_publishes_then_mirrors_the_new_owner_from_its_durable_end() -> None:
    m, _ = owned()
    s = Sess("s")
    for i in (1, 2, 3):
        m.handle(ev.LocalPublish(s, "s", b"m%d" % i, i, i), 0.0)
    m.handle(ev.Durable((1, 2)), 0.0)
    m.handle(ev.LeaseLost(), 0.0)
    assert m.handle(ev.LocalPublish(s, "s", b"held", 9, 9), 0.1) == []  # held, not sent
    out = m.handle(ev.LeaseResult(OTHER, 2, False, (2, 4)), 0.2)
    assert m.state is St.MIRROR and m.owner == OTHER
    assert m.last == (1, 2), "members are replayed from the last stored position"
    assert out == [ev.Forward(OTHER, "s", b"held", ME, 9, 9)]
    # The new owner's messages are delivered from there on.
    assert of(m.handle(ev.RemoteEntry(rec(2, 1)), 0.3), ev.Fanout)


def test_fenced_room_taking_the_lease_again_assigns_held_publishes_here() -> None:
    m, _ = owned()
    s = Sess("s")
    m.handle(ev.LocalPublish(s, "s", b"a", 1, 1), 0.0)
    m.handle(ev.Durable((1, 1)), 0.0)
    m.handle(ev.LeaseLost(), 0.0)
    m.handle(ev.LocalPublish(s, "s", b"b", 2, 2), 0.0)
    assert m.handle(ev.LeaseResult(ME, 2, True, (1, 1)), 0.0) == [ev.LoadRecent(2000)]
    out = m.handle(ev.RecentLoaded((rec(1, 1, sender="s", idem=1, origin=ME),)), 0.0)
    assert m.state is St.OWNED and m.last == (2, 1)
    assert of(out, ev.Append) == [ev.Append(2, 1, "s", b"b", ME, 2, 2)]


# -- takeover, handover ----------------------------------------------------------------


def test_takeover_holds_forwarded_publishes_until_settled_then_handles_them_in_order() -> None:
    m = mirror(last=(1, 3))
    s = Sess("s")
    m.handle(ev.LocalPublish(s, "s", b"mine", 1, 1), 0.0)
    assert m.handle(ev.LeaseAcquired(2, (1, 3)), 0.1) == [ev.LoadRecent(2000)]
    assert m.handle(ev.ForwardedPublish("p", b"f1", OTHER, 5, 50), 0.1) == []
    assert m.handle(ev.ForwardedPublish("p", b"f2", OTHER, 6, 51), 0.1) == []
    out = m.handle(ev.RecentLoaded(()), 0.2)
    assert [(a.payload, a.epoch, a.seq) for a in of(out, ev.Append)] == [
        (b"f1", 2, 1), (b"f2", 2, 2), (b"mine", 2, 3)]
    assert not m.forwarded and m.state is St.OWNED


def test_handover_sends_publishes_to_the_new_owner_then_mirrors() -> None:
    m, _ = owned()
    s = Sess("s")
    m.handle(ev.LocalPublish(s, "s", b"a", 1, 1), 0.0)
    assert m.handle(ev.HandOverStart(THIRD), 0.0) == []
    assert m.state is St.HANDING_OVER and not m.mine
    assert m.handle(ev.LocalPublish(s, "s", b"b", 2, 2), 0.0) == [
        ev.Forward(THIRD, "s", b"b", ME, 2, 2)]
    assert m.handle(ev.ForwardedPublish("p", b"c", OTHER, 3, 3), 0.0) == [
        ev.Forward(THIRD, "p", b"c", OTHER, 3, 3)]
    # Appends flushed before the lease moved still acknowledge their publishers.
    assert of(m.handle(ev.Durable((1, 1)), 0.0), ev.Ack) == [ev.Ack(s, 1, (1, 1))]
    m.handle(ev.HandOverDone(), 0.0)
    assert m.state is St.MIRROR and m.owner == THIRD
    back = m.handle(ev.RemoteEntry(rec(1, 2, sender="s", origin=ME, req_id=2, idem=2)), 0.1)
    assert of(back, ev.Ack) == [ev.Ack(s, 2, (1, 2))]


def test_the_new_owners_records_read_before_the_handover_is_done_are_delivered() -> None:
    """The reader mirrors the room from the moment the lease has moved, before this
    edge hears that the handover is done: the new owner's first record can arrive in
    HANDING_OVER and must reach the members still here (it was dropped as an
    unexpected event: they missed it, and a resume after it does not replay it)."""
    m, _ = owned()
    s = Sess("s")
    m.handle(ev.LocalPublish(s, "s", b"a", 1, 1), 0.0)
    m.handle(ev.Durable((1, 1)), 0.0)
    m.handle(ev.HandOverStart(THIRD), 0.0)
    out = m.handle(ev.RemoteEntry(rec(1, 2, origin=THIRD)), 0.1)
    assert len(of(out, ev.Fanout)) == 1 and m.last == (1, 2)
    m.handle(ev.HandOverDone(), 0.2)
    assert m.state is St.MIRROR
    assert m.handle(ev.RemoteEntry(rec(1, 2, origin=THIRD)), 0.3) == []  # not twice
    assert of(m.handle(ev.RemoteEntry(rec(1, 3, origin=THIRD)), 0.3), ev.Fanout)


def test_a_failed_handover_keeps_the_room_and_assigns_what_was_forwarded_meanwhile() -> None:
    m, _ = owned()
    s = Sess("s")
    m.handle(ev.HandOverStart(THIRD), 0.0)
    m.handle(ev.LocalPublish(s, "s", b"b", 2, 2), 0.0)
    out = m.handle(ev.HandOverFailed(still_owner=True), 0.0)
    assert m.state is St.OWNED and m.owner == ME and m.handed_to is None
    assert of(out, ev.Append) == [ev.Append(1, 1, "s", b"b", ME, 2, 2)]


# -- linger, close ---------------------------------------------------------------------


def test_an_empty_room_lingers_then_closes_unless_someone_comes_back() -> None:
    m, _ = owned(RoomSettings(room_linger=5.0))
    m.handle(ev.Emptied(), 10.0)
    assert m.next_deadline() == 15.0
    m.handle(ev.Occupied(), 12.0)
    assert m.next_deadline() is None
    m.handle(ev.Emptied(), 20.0)
    assert m.handle(ev.Timer(), 24.9) == []
    assert m.handle(ev.Timer(), 25.0) == [ev.Release(None)]
    assert m.state is St.CLOSED


def test_draining_hands_an_emptied_room_to_where_its_member_went() -> None:
    m, _ = owned()
    s = Sess("s")
    m.handle(ev.LocalPublish(s, "s", b"a", 1, 1), 0.0)
    assert m.handle(ev.Emptied(draining=True, hand_to=THIRD), 0.0) == [ev.Release(THIRD)]
    assert m.state is St.CLOSED and m.pending_uplinks()
    # Closed, it still acknowledges what becomes durable and passes forwards on.
    assert m.handle(ev.Durable((1, 1)), 0.0) == [ev.Ack(s, 1, (1, 1))]
    assert m.handle(ev.ForwardedPublish("p", b"c", OTHER, 3, 3), 0.0) == [
        ev.Forward(THIRD, "p", b"c", OTHER, 3, 3)]
    assert m.handle(ev.LocalPublish(s, "s", b"x", 2, 2), 0.0) == []  # no members left


# -- replay ----------------------------------------------------------------------------


def _with_messages(n: int, cfg: RoomSettings | None = None) -> RoomMachine[Sess]:
    m, _ = owned(cfg)
    s = Sess("s")
    for i in range(1, n + 1):
        m.handle(ev.LocalPublish(s, "s", b"%d" % i, i, 0), 0.0)
    m.handle(ev.Durable((1, n)), 0.0)
    return m


def test_replay_from_the_ring_is_complete_and_in_order() -> None:
    m = _with_messages(10)
    assert not needs_history(m, (1, 4))
    r, bodies = plan_resume(m, "c", (1, 4), None)
    assert r.recovered and r.replayed == 6
    assert [body_pos(b) for b in bodies] == [(1, i) for i in range(5, 11)]


def test_max_replay_applies_to_replay_from_memory_too() -> None:
    """Defect: a client that missed 10 messages resuming on the same edge with
    max_replay 5 got recovered: true and 10 replayed."""
    m = _with_messages(10, RoomSettings(max_replay=5))
    r, bodies = plan_resume(m, "c", (1, 0), None)
    assert (r.recovered, r.reason, bodies) == (False, "too_many", [])
    assert r.info == {"max_replay": 5}
    r2, bodies2 = plan_resume(m, "c", (1, 5), None)
    assert r2.recovered and len(bodies2) == 5


def test_history_fills_what_the_ring_no_longer_holds() -> None:
    m = _with_messages(10, RoomSettings(ring_size=4))
    assert needs_history(m, (1, 2))
    r, _ = plan_resume(m, "c", (1, 2), None)
    assert (r.recovered, r.reason) == (False, "no_history")
    hist = History(tuple(rec(1, i, origin=ME) for i in range(3, 7)))
    r, bodies = plan_resume(m, "c", (1, 2), hist)
    assert r.recovered and [body_pos(b) for b in bodies] == [(1, i) for i in range(3, 11)]


@pytest.mark.parametrize(("history", "reason"), [
    (History(unavailable=True), "history_unavailable"),
    (History(gap=True, first=(1, 5)), "history_trimmed"),
    (History(tuple(rec(1, i) for i in range(3, 5))), "overflow"),  # ends before the ring
])
def test_replay_never_silently_skips(history: History, reason: str) -> None:
    m = _with_messages(10, RoomSettings(ring_size=4))
    r, bodies = plan_resume(m, "c", (1, 2), history)
    assert (r.recovered, r.reason, bodies) == (False, reason, [])


def test_overflow_is_found_even_when_history_has_nothing_after_the_position() -> None:
    """History ends exactly at the client's position but the ring starts later: the
    messages in between are in neither (before, this case said recovered: true)."""
    m = _with_messages(10, RoomSettings(ring_size=4))
    r, _ = plan_resume(m, "c", (1, 2), History(()))
    assert (r.recovered, r.reason) == (False, "overflow")


def test_a_mirror_does_not_push_again_what_a_resumed_member_was_replayed() -> None:
    m = mirror(last=(1, 2))
    m.handle(ev.RemoteEntry(rec(1, 3)), 0.0)
    assert needs_history(m, (1, 1))
    hist = History(tuple(rec(1, i) for i in (2, 3, 4, 5)))  # the stream is ahead
    r, bodies = plan_resume(m, "c", (1, 1), hist)
    assert r.recovered and len(bodies) == 4 and m.catchup == {"c": (1, 5)}
    f4 = of(m.handle(ev.RemoteEntry(rec(1, 4)), 0.0), ev.Fanout)[0]
    assert f4.skip == frozenset({"c"})
    f5 = of(m.handle(ev.RemoteEntry(rec(1, 5)), 0.0), ev.Fanout)[0]
    assert f5.skip == frozenset({"c"}) and not m.catchup
    f6 = of(m.handle(ev.RemoteEntry(rec(1, 6)), 0.0), ev.Fanout)[0]
    assert f6.skip is None
