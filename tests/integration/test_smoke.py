"""End-to-end: two edges, one room, messages and presence cross the edges."""

from __future__ import annotations

import asyncio

from client_sdk import connect


async def test_room_spans_two_edges(edge_factory, token) -> None:
    e1, e2 = edge_factory("edge-x"), edge_factory("edge-y")
    a = await connect(e1.url, token("a"))
    b = await connect(e2.url, token("b"))
    try:
        sa = await a.join("span", presence=True)
        sb = await b.join("span")
        pos = await a.publish("span", b"from-a")
        assert pos is not None and pos.seq == 1
        m = await sb.get(5)
        assert (m.payload, m.epoch, m.seq) == (b"from-a", pos.epoch, 1)
        pos_b = await b.publish("span", b"from-b")
        assert pos_b is not None and (pos_b.epoch, pos_b.seq) == (pos.epoch, 2)
        got = [await sa.get(5), await sa.get(5)]
        assert [x.payload for x in got] == [b"from-a", b"from-b"]
        assert (await sb.get(5)).payload == b"from-b"
        # Presence across edges is eventually consistent (members are recorded in
        # Redis in the background): poll briefly.
        members: set[str] = set()
        for _ in range(100):
            members = {m.subject for m in await a.presence("span")}
            if members == {"a", "b"}:
                break
            await asyncio.sleep(0.05)
        assert members == {"a", "b"}
    finally:
        await a.close()
        await b.close()


def test_cli_help_everywhere() -> None:
    """Every command answers --help with exit 0 (user-facing front door)."""
    import subprocess
    import sys

    for args in ([], ["edge"], ["up"], ["demo"], ["token"], ["cert"], ["bench"],
                 ["bench", "fanout"], ["bench", "connections"], ["bench", "compare"],
                 ["origin"], ["origin", "worker"], ["origin", "api"], ["origin", "run"],
                 ["origin", "stats"], ["origin", "forecast-eval"]):
        out = subprocess.run([sys.executable, "-m", "edge_node", *args, "--help"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (args, out.stderr)
        # The usage line names the command as the user typed it.
        assert out.stdout.startswith(f"usage: {' '.join(['edge-relay', *args])}"), \
            (args, out.stdout[:200])


def test_cli_user_errors_are_one_line() -> None:
    """A user mistake prints a clear message and exits 2, with no traceback."""
    import subprocess
    import sys

    for args in (["edge", "--port", "99999"], ["demo", "--players", "1"]):
        out = subprocess.run([sys.executable, "-m", "edge_node", *args],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, (args, out.stderr)
        assert "error:" in out.stderr and "Traceback" not in out.stderr
