"""``python -m edge_node.local.redis_server cluster``: a local cluster for a command, then gone."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_node.local.redis_server", *args],
                          capture_output=True, text=True, timeout=50, check=False)


def test_runs_a_command_against_a_fresh_cluster_and_kills_it() -> None:
    probe = ("import os, redis; u = os.environ['REDIS_URL']; "
             "h, p = u.split('//')[1].split(',')[0].split(':'); "
             "print(redis.Redis(host=h, port=int(p)).execute_command('CLUSTER', 'INFO')"
             ".decode().split()[0]); print(p)")
    res = _run("cluster", "--primaries", "1", "--replicas", "0", "--", sys.executable, "-c",
               probe)
    assert res.returncode == 0, res.stderr
    url, state, port = res.stdout.split()
    assert url.startswith("redis+cluster://127.0.0.1:")
    assert state == "cluster_state:ok"
    with pytest.raises(OSError):  # the node is gone with the command
        socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()


@pytest.mark.parametrize("args, why", [
    (["cluster", "--primaries", "0"], "--primaries must be 1..16"),
    (["cluster", "--replicas", "9"], "--replicas 0..4"),
    (["bogus"], "invalid choice"),
])
def test_bad_arguments_are_one_line_errors(args: list[str], why: str) -> None:
    res = _run(*args)
    assert res.returncode == 2 and why in res.stderr and "Traceback" not in res.stderr


def test_a_command_that_does_not_exist() -> None:
    res = _run("cluster", "--primaries", "1", "--replicas", "0", "--", "no-such-command-x")
    assert res.returncode == 2
    assert "cannot run 'no-such-command-x'" in res.stderr and "Traceback" not in res.stderr
