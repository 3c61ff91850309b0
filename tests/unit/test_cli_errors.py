"""User mistakes at the ``edge-relay`` front door: one line on stderr, exit 2, no traceback.

These run :func:`edge_node.local.launcher.main` in-process (no edge, no Redis is started).
"""

from __future__ import annotations

import pytest

from client_sdk.protocol import verify_token
from edge_node.config import DEV_SECRET
from edge_node.local.launcher import main


def _one_line_error(capsys: pytest.CaptureFixture[str], rc: int, *words: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("edge-relay: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.mark.parametrize("ttl", ["-1", "0", "nan", "-inf"])
def test_token_refuses_a_ttl_that_is_not_positive(capsys: pytest.CaptureFixture[str],
                                                 ttl: str) -> None:
    rc = main(["token", "alice", f"--ttl={ttl}"])
    _one_line_error(capsys, rc, "--ttl must be a positive number of seconds")
    assert capsys.readouterr().out == ""  # no token printed


def test_token_with_a_positive_ttl(capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_RELAY_SECRET", raising=False)
    assert main(["token", "alice", "--ttl", "60"]) == 0
    tok = capsys.readouterr().out.strip()
    import time

    claims = verify_token(tok, (DEV_SECRET,), now=time.time())
    assert claims.subject == "alice"


def test_token_for_a_device_with_metric_ranges(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``--metric NAME=MIN:MAX`` (either bound may be empty) ends up in the claims the
    edge validates samples against."""
    import time

    monkeypatch.delenv("EDGE_RELAY_SECRET", raising=False)
    assert main(["token", "sensor-1", "--kind", "device", "--metric", "temp=-40:125",
                 "--metric", "hum=0:"]) == 0
    claims = verify_token(capsys.readouterr().out.strip(), (DEV_SECRET,), now=time.time())
    assert claims.kind == "device"
    assert sorted(claims.metrics or ()) == [("hum", 0.0, float("inf")),
                                            ("temp", -40.0, 125.0)]


@pytest.mark.parametrize(("args", "words"), [
    (["--kind", "device", "--metric", "temp"], ("expected NAME=MIN:MAX",)),
    (["--kind", "device", "--metric", "temp=hot:cold"], ("must be numbers",)),
    (["--kind", "device", "--metric", "temp=10:0"], ("MIN <= MAX",)),
    (["--kind", "device", "--metric", "temp=0:inf"], ("finite",)),
    (["--metric", "temp=0:1"], ("--metric is for device tokens",)),
])
def test_token_refuses_bad_metric_ranges(capsys: pytest.CaptureFixture[str], args: list[str],
                                         words: tuple[str, ...]) -> None:
    rc = main(["token", "sensor-1", *args])
    _one_line_error(capsys, rc, *words)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(("var", "value", "words"), [
    ("EDGE_RELAY_PORT", "abc", ("EDGE_RELAY_PORT='abc'", "is not an integer")),
    ("EDGE_RELAY_PORT", "87.5", ("EDGE_RELAY_PORT='87.5'", "is not an integer")),
    ("EDGE_RELAY_PING_INTERVAL", "soon", ("EDGE_RELAY_PING_INTERVAL='soon'", "not a number")),
    ("EDGE_RELAY_MAX_CONNECTIONS", "", ("EDGE_RELAY_MAX_CONNECTIONS=''",)),
])
def test_a_numeric_environment_variable_that_is_not_a_number(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, var: str,
        value: str, words: tuple[str, ...]) -> None:
    monkeypatch.setenv(var, value)
    for argv in (["edge"], ["token", "alice"], ["up", "--help"]):
        _one_line_error(capsys, main(argv), *words)


def test_a_numeric_environment_variable_that_is_a_number_is_the_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_node.local.launcher import build_parser

    monkeypatch.setenv("EDGE_RELAY_PORT", "9123")
    monkeypatch.setenv("EDGE_RELAY_PING_INTERVAL", "2.5")
    args = build_parser().parse_args(["edge"])
    assert (args.port, args.ping_interval) == (9123, 2.5)
