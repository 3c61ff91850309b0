"""The demo's verdict line agrees with its JSON ``ok``: IoT samples that never reached the
origin make it a PROBLEM too (it used to print OK with ``iot.lost`` 464)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from edge_node.local.demo import render_summary

SUMMARY: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "demo_summary.json").read_text())


def _verdict(s: dict[str, Any]) -> str:
    return [ln for ln in render_summary(s).splitlines()
            if ln.strip().startswith(("OK:", "PROBLEM:"))][-1].strip()


def test_iot_samples_that_did_not_reach_the_origin_are_a_problem() -> None:
    s = copy.deepcopy(SUMMARY)
    assert s["reliable"]["lost"] == 0 and s["iot"]["lost"] == 464
    v = _verdict(s)
    assert v.startswith("PROBLEM: 464 IoT samples did not reach the origin")
    assert "552 still unacknowledged" in v


def test_nothing_lost_anywhere_is_ok() -> None:
    s = copy.deepcopy(SUMMARY)
    s["iot"]["lost"] = 0
    assert _verdict(s) == "OK: nothing lost, nothing duplicated"


def test_lost_room_messages_are_a_problem_first() -> None:
    s = copy.deepcopy(SUMMARY)
    s["reliable"]["lost"] = 3
    assert _verdict(s) == "PROBLEM: messages lost or duplicated"
