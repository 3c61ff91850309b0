"""Start-up mistakes (a malformed or unreachable Redis, a port in use) end every command
with one clear line naming the cause and the fix, exit code 2 and no traceback; and
``up`` reports its children's own error instead of "not healthy after 15 s"."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_node.local.launch import spawn_edge

pytestmark = pytest.mark.timeout(120)

BAD_URLS = ["localhost:6379", "foo://bar"]
UNREACHABLE = "redis://127.0.0.1:1"  # nothing listens on port 1: refused at once


def _run(*args: str, redis_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return subprocess.run([sys.executable, "-m", "edge_node", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def _one_error_line(res: subprocess.CompletedProcess[str], *words: str) -> str:
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "warning:" not in ln]
    assert len(lines) == 1 and "error: " in lines[0], res.stderr[-2000:]
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.mark.parametrize("url", BAD_URLS)
def test_edge_with_a_malformed_redis_url(url: str) -> None:
    _one_error_line(_run("edge", "--port", "0", redis_url=url),
                    f"bad Redis URL {url!r}", "redis://HOST:PORT", "REDIS_URL")


def test_edge_with_unreachable_redis() -> None:
    _one_error_line(_run("edge", "--port", "0", redis_url=UNREACHABLE),
                    f"cannot reach Redis at {UNREACHABLE}", "REDIS_URL")


def test_edge_with_its_port_in_use(busy_port: int) -> None:
    _one_error_line(_run("edge", "--port", str(busy_port)),
                    f"cannot listen on 127.0.0.1:{busy_port}", "--port")


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("command", [["worker", "--consumer", "w"], ["run", "--port", "0"]])
def test_origin_with_a_malformed_redis_url(url: str, command: list[str]) -> None:
    _one_error_line(_run("origin", *command, redis_url=url),
                    f"bad Redis URL {url!r}", "REDIS_URL")


@pytest.mark.parametrize("command", [["worker", "--consumer", "w"], ["api", "--port", "0"],
                                     ["run", "--port", "0"], ["stats"]])
def test_origin_with_unreachable_redis_stops_at_once(command: list[str]) -> None:
    """Not a warning twice a second forever: the command ends."""
    _one_error_line(_run("origin", *command, redis_url=UNREACHABLE),
                    f"cannot reach Redis at {UNREACHABLE}", "REDIS_URL")


@pytest.mark.parametrize("url", BAD_URLS)
def test_up_with_a_malformed_redis_url(url: str) -> None:
    _one_error_line(_run("up", "--edges", "1", "--base-port", "0", redis_url=url),
                    f"bad Redis URL {url!r}", "REDIS_URL")


def test_up_with_unreachable_redis() -> None:
    _one_error_line(_run("up", "--edges", "1", "--base-port", "0", redis_url=UNREACHABLE),
                    f"cannot reach Redis at {UNREACHABLE}", "REDIS_URL")


def test_up_with_a_port_in_use(busy_port: int, redis_url: str) -> None:
    _one_error_line(_run("up", "--edges", "1", "--base-port", str(busy_port),
                         redis_url=redis_url),
                    f"port {busy_port} is in use", "--base-port")


def test_a_child_that_fails_to_start_reports_its_own_error(tmp_path: Path) -> None:
    """What ``up``, the demo and the tests see when an edge cannot start."""
    log = tmp_path / "edge.log"
    with pytest.raises(RuntimeError) as info:
        spawn_edge(redis_url=UNREACHABLE, edge_id="e-down", log_path=str(log), timeout=20)
    text = str(info.value)
    assert "edge e-down exited with code 2" in text
    assert f"cannot reach Redis at {UNREACHABLE}" in text and str(log) in text
