"""``origin run``'s worker supervision below the process: fake processes, a fake clock."""

from __future__ import annotations

import subprocess
from typing import Any

from origin.supervise import WorkerSupervisor


class FakeProc:
    n = 0

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        FakeProc.n += 1
        self.pid = 1000 + FakeProc.n
        self.cmd, self.code = cmd, None
        self.terminated = self.killed = False
        self.stubborn = False

    def poll(self) -> int | None:
        return self.code

    def terminate(self) -> None:
        self.terminated = True
        if not self.stubborn:
            self.code = -15

    def kill(self) -> None:
        self.killed, self.code = True, -9

    def wait(self, timeout: float | None = None) -> int:
        if self.code is None:
            raise subprocess.TimeoutExpired(self.cmd, timeout or 0)
        return self.code


def supervisor(n: int = 2) -> tuple[WorkerSupervisor, list[FakeProc]]:
    made: list[FakeProc] = []

    def spawn(cmd: list[str], env: Any = None) -> FakeProc:
        made.append(FakeProc(cmd, env))
        return made[-1]

    sup = WorkerSupervisor([["w", str(i)] for i in range(n)], {}, spawn=spawn,
                           clock=lambda: 0.0)
    sup.start(watch=False)
    return sup, made


def test_a_worker_that_exits_is_restarted_after_a_growing_backoff() -> None:
    sup, made = supervisor()
    assert sup.status().running == 2 and len(made) == 2
    made[0].code = 1  # crashed 10 s after its start: a quick failure
    sup.check(10.0)
    st = sup.status()
    assert (st.running, st.expected, st.restarts, st.last_exit) == (1, 2, 0, 1)
    sup.check(10.5)
    assert len(made) == 2  # the 1 s backoff is not over
    sup.check(11.0)
    assert len(made) == 3 and made[2].cmd == ["w", "0"] and sup.status().running == 2
    made[2].code = 1  # dies again quickly: 2 s this time
    sup.check(12.0)
    sup.check(13.5)
    assert len(made) == 3
    sup.check(14.0)
    assert len(made) == 4 and sup.status().restarts == 2
    # One that ran past healthy_after (60 s) restarts after 1 s again.
    made[3].code = 3
    sup.check(100.0)
    sup.check(101.0)
    assert len(made) == 5 and sup.status().last_exit == 3


def test_the_backoff_is_capped() -> None:
    sup, made = supervisor(1)
    now = 0.0
    waits = []
    for _ in range(8):
        made[-1].code = 1
        sup.check(now)
        before = len(made)
        t = now
        while len(made) == before:
            t += 0.5
            sup.check(t)
        waits.append(round(t - now, 3))
        now = t + 0.1
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_stop_terminates_kills_the_stubborn_and_restarts_nothing() -> None:
    sup, made = supervisor()
    made[1].stubborn = True
    sup.stop(timeout=0.01)
    assert made[0].terminated and not made[0].killed
    assert made[1].terminated and made[1].killed
    made[0].code = 1
    sup.check(50.0)
    assert len(made) == 2  # stopping: no restart
