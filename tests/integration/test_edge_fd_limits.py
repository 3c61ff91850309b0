"""An edge sizes its connection cap from its open-file limit (real edge processes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_node.local.launch import spawn_edge
from edge_node.runtime.fd_limits import default_max_connections
from tests.helpers import http_get


async def _health(url: str) -> dict[str, int]:
    status, _, body = await http_get(url + "/healthz")
    assert status == 200
    doc: dict[str, int] = json.loads(body)
    return doc


@pytest.mark.parametrize(("nofile", "expected"), [
    ((100, 4000), default_max_connections(4000)),  # soft limit raised to the hard one
    ((300, 300), 150),                              # cannot raise: half kept in reserve
])
async def test_max_connections_follows_the_open_file_limit(
        tmp_path: Path, nofile: tuple[int, int], expected: int) -> None:
    edge = spawn_edge(edge_id="edge-fd", nofile=nofile, log_path=str(tmp_path / "edge.log"))
    try:
        assert (await _health(edge.http_url))["max_connections"] == expected
    finally:
        edge.stop()


def test_default_max_connections_keeps_a_reserve() -> None:
    assert default_max_connections(20000) == 20000 - 256
    assert default_max_connections(1024) == 768
    assert default_max_connections(300) == 150
    assert default_max_connections(1) == 1
