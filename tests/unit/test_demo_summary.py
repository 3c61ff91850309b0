"""The demo's verdict line agrees with its JSON ``ok``: IoT samples that never reached the
origin make it a PROBLEM too (it used to print OK with ``iot.lost`` 464)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from edge_node.local.demo_report import render_summary

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


def test_room_machine_changes_are_summed_over_edges_and_shown() -> None:
    from edge_node.local.demo import _room_machines

    a = {'edge_room_transitions_total{from="ACTIVATING",to="MIRROR"}': 4.0,
         'edge_room_transitions_total{from="MIRROR",to="SETTLING"}': 2.0,
         'edge_rooms_by_state{state="OWNED"}': 3.0, "edge_connections": 9.0}
    b = {'edge_room_transitions_total{from="MIRROR",to="SETTLING"}': 1.0,
         'edge_rooms_by_state{state="OWNED"}': 2.0, 'edge_rooms_by_state{state="MIRROR"}': 5.0}
    rm = _room_machines([a, b])
    assert rm == {"edges": 2, "transitions": {"ACTIVATING->MIRROR": 4, "MIRROR->SETTLING": 3},
                  "by_state": {"MIRROR": 5, "OWNED": 5}}
    s = copy.deepcopy(SUMMARY)
    s["room_machines"] = rm
    text = render_summary(s)
    assert "room machines on the 2 edges still up: 5 MIRROR, 5 OWNED now" in text
    assert any(ln.split() == ["MIRROR->SETTLING", "3"] for ln in text.splitlines())
