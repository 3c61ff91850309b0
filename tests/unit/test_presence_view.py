"""client_sdk.presence.PresenceView: a member list without repeats or flaps (fake clock)."""

from __future__ import annotations

import pytest

from client_sdk.presence import PresenceView
from client_sdk.protocol import Member
from client_sdk.protocol.events import PresenceEvent

A, B, C = (Member(f"s-{n}", n, "player") for n in ("ada", "bo", "cy"))


def ev(joined: bool, m: Member, lost: bool = False) -> PresenceEvent:
    return PresenceEvent("r", joined, m, lost)


def test_the_first_load_sets_the_list_without_events() -> None:
    v = PresenceView("r", grace=2.0)
    assert v.load([B, A], now=0.0) == [] and v.members == [A, B]


def test_repeated_joins_and_leaves_of_unknown_members_are_dropped() -> None:
    v = PresenceView("r", grace=0.0)
    v.load([A], 0.0)
    assert v.joined(A, 1.0) == []
    assert v.left(B, 1.0) == []
    assert v.joined(B, 1.0) == [ev(True, B)]
    assert v.left(B, 2.0) == [ev(False, B, lost=True)] and v.members == [A]


def test_a_leave_is_held_for_the_grace_and_cancelled_by_a_return() -> None:
    v = PresenceView("r", grace=2.0)
    v.load([A, B], 0.0)
    assert v.left(B, 1.0) == []
    assert v.reconnecting == [B] and v.members == [A, B] and v.next_deadline() == 3.0
    assert v.expire(2.9) == []
    assert v.joined(B, 2.5) == []  # back within the grace: it never left
    assert v.reconnecting == [] and v.next_deadline() is None and v.expire(10.0) == []


def test_a_member_that_does_not_return_leaves_at_the_end_of_the_grace() -> None:
    v = PresenceView("r", grace=2.0)
    v.load([A, B], 0.0)
    v.left(B, 1.0)
    assert v.left(B, 1.5) == [] and v.next_deadline() == 3.0  # a repeat: not pushed back
    assert v.expire(3.0) == [ev(False, B, lost=True)]
    assert v.members == [A] and v.reconnecting == []
    assert v.joined(B, 4.0) == [ev(True, B)]  # a later return is a new join


def test_a_reload_after_a_resume_reports_the_difference() -> None:
    v = PresenceView("r", grace=1.0)
    v.load([A, B], 0.0)
    assert v.load([A, C], 5.0) == [ev(True, C)]  # B missing: held for the grace
    assert v.reconnecting == [B]
    assert v.expire(6.0) == [ev(False, B, lost=True)] and v.members == [A, C]


def test_a_negative_grace_is_refused() -> None:
    with pytest.raises(ValueError):
        PresenceView("r", grace=-1.0)


def test_a_leave_on_purpose_is_reported_at_once_and_ends_a_held_one() -> None:
    v = PresenceView("r", grace=5.0)
    v.load([A, B], 0.0)
    assert v.left(A, 1.0, lost=False) == [ev(False, A)]
    v.left(B, 1.0)  # lost: held
    assert v.left(B, 2.0, lost=False) == [ev(False, B)]  # then it left on purpose
    assert v.members == [] and v.next_deadline() is None
