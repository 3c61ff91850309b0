"""Edge settings reach the edge from flags and from the environment variables that
docs/configuration.md names for them; the doc's table and the parser list the same flags."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from edge_node.cli import UserError, settings_from_args
from edge_node.config import EdgeSettings
from edge_node.local.launcher import build_parser

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

#: flag -> (a value that is not the default, the EdgeSettings field, the parsed value)
NEW = {
    "--uplink-spool-max": ("500", "uplink_spool_max", 500),
    "--uplink-overflow": ("reject_new", "uplink_overflow", "reject_new"),
    "--uplink-fsync": ("full", "uplink_fsync", "FULL"),
    "--iot-z-on": ("8.5", "iot_z_on", 8.5),
    "--quic-max-datagram": ("900", "quic_max_datagram", 900),
    "--quic-datagram-queue": ("16", "quic_datagram_queue", 16),
    "--quic-inbound-queue": ("1048576", "quic_inbound_queue", 1048576),
    "--redis-wait-replicas": ("2", "redis_wait_replicas", 2),
    "--function-timeout": ("2.5", "function_timeout", 2.5),
    "--function-client-concurrency": ("4", "function_client_concurrency", 4),
    "--function-max-bytes": ("4096", "function_max_bytes", 4096),
    "--presence-grace": ("2.5", "presence_grace", 2.5),
    "--room-delivery": ("arena-*=latest", "room_delivery", (("arena-*", "latest"),)),
}


def _edge_table() -> dict[str, str]:
    """flag -> environment variable, from the ``edge-relay edge`` table of the doc."""
    section = DOC.read_text().split("## `edge-relay edge`", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[0].startswith("`--"):
            continue
        flags = re.findall(r"`(--[a-z0-9-]+)`", cells[0])
        variables = re.findall(r"`([A-Z_]+)(?:=1)?`", cells[1])
        for i, flag in enumerate(flags):
            rows[flag] = variables[min(i, len(variables) - 1)] if variables else ""
    return rows


def _edge_flags() -> set[str]:
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return {o for a in sub.choices["edge"]._actions for o in a.option_strings
            if o.startswith("--") and o != "--help"}


def _settings(argv: list[str]) -> EdgeSettings:
    return settings_from_args(build_parser().parse_args(["edge", *argv]))


def test_the_doc_table_and_the_parser_list_the_same_flags() -> None:
    documented = set(_edge_table())
    parsed = _edge_flags()
    assert parsed - documented == set(), "flags missing from docs/configuration.md"
    assert documented - parsed == set(), "documented flags the edge does not have"


def test_defaults_are_the_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in _edge_table().values():
        monkeypatch.delenv(var, raising=False)
    s, d = _settings([]), EdgeSettings()
    for _, field, _ in NEW.values():
        assert getattr(s, field) == getattr(d, field), field


@pytest.mark.parametrize("flag", sorted(NEW))
def test_flag_reaches_the_settings(flag: str) -> None:
    value, field, parsed = NEW[flag]
    assert getattr(_settings([flag, value]), field) == parsed


@pytest.mark.parametrize("flag", sorted(NEW))
def test_documented_variable_reaches_the_settings(flag: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    value, field, parsed = NEW[flag]
    var = _edge_table()[flag]
    assert var, f"{flag} has no variable in docs/configuration.md"
    monkeypatch.setenv(var, value)
    assert getattr(_settings([]), field) == parsed


@pytest.mark.parametrize("argv, env, message", [
    (["--uplink-spool-max", "0"], {}, "--uplink-spool-max"),
    ([], {"EDGE_RELAY_UPLINK_OVERFLOW": "drop_newest"}, "EDGE_RELAY_UPLINK_OVERFLOW"),
    ([], {"EDGE_RELAY_UPLINK_FSYNC": "sometimes"}, "EDGE_RELAY_UPLINK_FSYNC"),
    (["--iot-z-on", "2"], {}, "--iot-z-on"),
    (["--quic-max-datagram", "1500"], {}, "--quic-max-datagram"),
    (["--quic-datagram-queue", "0"], {}, "--quic-datagram-queue"),
    (["--quic-inbound-queue", "100"], {}, "--quic-inbound-queue"),
    (["--redis-wait-replicas", "-1"], {}, "--redis-wait-replicas"),
    (["--send-queue-bytes", "100000"], {}, "--send-queue-bytes must be at least 131072"),
    (["--presence-grace", "-1"], {}, "--presence-grace"),
    (["--room-delivery", "arena-*=newest"], {}, "POLICY one of all, latest, drop"),
    ([], {"EDGE_RELAY_ROOM_DELIVERY": "nopattern"}, "--room-delivery takes PATTERN=POLICY"),
])
def test_bad_values_are_user_errors(argv: list[str], env: dict[str, str], message: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(UserError, match=re.escape(message)):
        _settings(argv)
