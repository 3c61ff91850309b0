"""Benchmark target plumbing: the NATS protocol parser (sans-I/O: any chunking gives the
same events) and the edge options of a fanout run."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.nats_client import NatsError, NatsParser

STREAM = (
    b'INFO {"server_id":"x","max_payload":1048576}\r\n'
    b"+OK\r\n"
    b"MSG room 1 5\r\nhello\r\n"
    b"PING\r\n"
    b"MSG room 1 reply.to 4\r\na\r\nb\r\n"  # payload holds CRLF; reply subject present
    b"MSG room 1 0\r\n\r\n"
    b"PONG\r\n"
    b"-ERR 'Slow Consumer Detected'\r\n"
)
EVENTS = [
    ("INFO", b'{"server_id":"x","max_payload":1048576}'),
    ("MSG", b"hello"),
    ("PING", b""),
    ("MSG", b"a\r\nb"),
    ("MSG", b""),
    ("PONG", b""),
    ("ERR", b"'Slow Consumer Detected'"),
]


def test_whole_stream() -> None:
    assert NatsParser().feed(STREAM) == EVENTS


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=12))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    parser = NatsParser()
    events: list[tuple[str, bytes]] = []
    bounds = [0, *sorted(set(cuts)), len(STREAM)]
    for a, b in itertools.pairwise(bounds):
        events += parser.feed(STREAM[a:b])
    assert events == EVENTS


def test_partial_message_waits_for_its_payload() -> None:
    parser = NatsParser()
    assert parser.feed(b"MSG room 1 10\r\n12345") == []
    assert parser.feed(b"67890\r") == []
    assert parser.feed(b"\n") == [("MSG", b"1234567890")]


@pytest.mark.parametrize("line", [b"HELLO\r\n", b"MSG room 1 x\r\n"])
def test_unknown_or_malformed_lines_raise(line: bytes) -> None:
    with pytest.raises(NatsError):
        NatsParser().feed(line)


def test_fanout_edge_write_delay_reaches_the_edge_command_line() -> None:
    from bench.cli import _options, build_parser

    args = build_parser().parse_args(["fanout", "--edge-write-delay-ms", "1.5"])
    assert _options(args, 1).edge_args == ("--write-delay-ms", "1.5")
    args = build_parser().parse_args(["fanout"])
    assert _options(args, 1).edge_args == ()
    args = build_parser().parse_args(["fanout", "--edge-write-interval-ms", "2"])
    assert _options(args, 1).edge_args == ("--write-interval-ms", "2")
