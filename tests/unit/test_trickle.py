"""The trickle watch below the process: fake sessions and connections, a fake clock."""

from __future__ import annotations

from dataclasses import dataclass

from edge_node.sessions.trickle import TrickleWatch


@dataclass
class Conn:
    partial: int = 0

    def partial_bytes(self) -> int:
        return self.partial


@dataclass
class Session:
    messages_in: int = 0


def test_a_message_that_never_completes_is_due_after_the_timeout() -> None:
    w = TrickleWatch(10.0)
    s, c = Session(), Conn(partial=1)
    assert w.due([("a", s, c)], 0.0) == []
    c.partial = 50  # bytes keep coming, the message does not complete
    assert w.due([("a", s, c)], 9.9) == []
    assert w.due([("a", s, c)], 10.1) == ["a"]


def test_completed_messages_restart_the_watch_and_idle_is_fine() -> None:
    w = TrickleWatch(10.0)
    busy, c = Session(), Conn(partial=1000)
    idle, quiet = Session(), Conn(partial=0)
    for t in range(0, 60, 5):  # always a big message in flight, but each completes
        busy.messages_in += 3
        assert w.due([("busy", busy, c), ("idle", idle, quiet)], float(t)) == []


def test_a_pause_between_messages_resets_and_gone_sessions_are_forgotten() -> None:
    w = TrickleWatch(2.0)
    s, c = Session(), Conn(partial=1)
    w.due([("a", s, c)], 0.0)
    c.partial = 0
    w.due([("a", s, c)], 1.0)  # the message completed or was dropped: nothing pending
    c.partial = 1
    assert w.due([("a", s, c)], 2.5) == []  # a new partial message: watched from 2.5
    assert w.due([("a", s, c)], 4.0) == []
    assert w.due([("a", s, c)], 4.6) == ["a"]
    assert w.due([], 5.0) == [] and w._since == {}
