"""What a player saw of a game room around an event, from its state frames."""

from __future__ import annotations

import pytest

from edge_node.local.timeline import around


def frames(start: float, end: float, tick0: int, step: float = 0.05) -> list[tuple[float, int]]:
    n = round((end - start) / step)
    return [(start + i * step, tick0 + i) for i in range(n)]


def test_a_restore_shows_as_a_silence_then_ticks_run_again() -> None:
    # Frames every 50 ms up to the kill at t=10.0 (the last at tick 199), nothing for
    # 0.85 s, then the room again from tick 196: ticks 196-199 run again.
    before = frames(9.0, 10.0, 180)  # ticks 180..199
    after = frames(10.8, 12.0, 196)
    gap, again, rerun = around(before + after, 10.0, 15.0) or (0, 0, 0)
    assert gap == pytest.approx(0.85) and again == pytest.approx(0.8) and rerun == 4


def test_a_live_move_shows_no_silence_and_a_later_silence_is_not_the_event() -> None:
    run = frames(9.0, 14.0, 100)
    late = [f for f in run if not 12.5 < f[0] < 13.0]  # a hiccup 2.5 s after: not it
    gap, again, rerun = around(late, 10.0, 15.0) or (0, 0, 0)
    assert again == pytest.approx(0.05) and rerun == 0
    assert gap == pytest.approx(0.5)  # the longest silence is still reported


def test_no_frames_no_figures() -> None:
    assert around([(1.0, 1)], 10.0, 15.0) is None
