"""The edge Deployment's termination path, run as the kubelet runs it: the edge is PID 1
of its own PID namespace (as in a container), its preStop hook from deploy/k8s/edge.yaml
runs for real inside that namespace, then SIGTERM (if the edge is still there), all
within terminationGracePeriodSeconds.  The drain must hand every client to a neighbour
with nothing lost, and the edge must exit 0 in time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from client_sdk import Client, connect
from edge_node.local.launch import free_port, wait_healthy
from tests.helpers import SECRET, Recorder, uid, wait_until
from tests.integration.test_handover import _metric, _steady

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


def _k8s() -> tuple[list[str], float, dict[str, str]]:
    """(preStop command, grace period, edge ConfigMap) from the manifests."""
    docs = [d for p in ("edge.yaml", "configmap.yaml")
            for d in yaml.safe_load_all((ROOT / "deploy/k8s" / p).read_text()) if d]
    dep = next(d for d in docs if d["kind"] == "Deployment")
    cm = next(d for d in docs if d["kind"] == "ConfigMap"
              and d["metadata"]["name"] == "edge-relay-edge")
    spec = dep["spec"]["template"]["spec"]
    hook = spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    return hook, float(spec["terminationGracePeriodSeconds"]), cm["data"]


def _namespaces_available() -> str:
    if not sys.platform.startswith("linux"):
        return "needs Linux PID namespaces"
    if not (shutil.which("unshare") and shutil.which("nsenter")):
        return "needs unshare and nsenter (util-linux)"
    r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                       capture_output=True, timeout=10)
    if r.returncode != 0:
        return f"cannot create a PID namespace here: {r.stderr.decode().strip()}"
    return ""


class PodEdge:
    """An edge process that is PID 1 of a new PID namespace (like a container's)."""

    def __init__(self, redis_url: str, edge_id: str, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.http_url = f"http://127.0.0.1:{self.port}"
        cmd = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
               sys.executable, "-m", "edge_node", "edge", "--host", "127.0.0.1",
               "--port", str(self.port), "--edge-id", edge_id, "--redis-url", redis_url]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         env={**os.environ, **env,
                                              "EDGE_RELAY_SECRET": SECRET.decode()},
                                         start_new_session=True)
        wait_healthy(self.http_url, self.proc, 15)
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        self.init_pid = int(children.split()[0])  # PID 1 inside, this pid outside

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


async def test_prestop_hook_then_sigterm_drains_with_handover(
        edge_factory: Any, redis_url: str, token: Any, tmp_path: Path) -> None:
    why = _namespaces_available()
    if why:
        pytest.skip(why)
    hook, grace, cm = _k8s()
    drain_env = {k: v for k, v in cm.items() if k.startswith("EDGE_RELAY_DRAIN_")}
    nb1, nb2 = edge_factory("edge-k1"), edge_factory("edge-k2")
    pod = PodEdge(redis_url, "edge-pod-0", drain_env, tmp_path / "pod.log")
    room = uid("k8s")
    subs: list[Client] = []
    recs: list[Recorder] = []
    pub = await connect(nb1.url, token("k8s-pub"))
    try:
        for i in range(6):  # the first member makes the pod edge the room's owner
            c = await connect(pod.url, token(f"k8s-s{i}"))
            r = Recorder()
            await c.join(room, on_message=r)
            subs.append(c)
            recs.append(r)
        await pub.join(room)
        task = asyncio.create_task(_steady(pub, room, 150, 0.02))
        await asyncio.sleep(0.5)
        # The kubelet: run the preStop hook in the container, then SIGTERM PID 1,
        # then SIGKILL when the grace period is over.
        t0 = time.monotonic()
        hook_proc = await asyncio.create_subprocess_exec(
            "nsenter", "--target", str(pod.init_pid), "--pid", "--", *hook,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hook_proc.wait(), grace)
        # The hook waits for PID 1 to exit: it is gone when the hook is (an edge still
        # running here would mean the hook did not trigger the drain).
        await wait_until(lambda: pod.proc.poll() is not None, 2, "the hook's drain")
        if pod.proc.poll() is None:  # the kubelet's SIGTERM (not reached when it works)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pod.init_pid, signal.SIGTERM)
        left = grace - (time.monotonic() - t0)
        await wait_until(lambda: pod.proc.poll() is not None, max(left, 0.1),
                         "the edge to exit within terminationGracePeriodSeconds")
        took = time.monotonic() - t0
        assert pod.proc.returncode == 0, f"exit code {pod.proc.returncode}"
        assert took < grace
        await task
        expect = [(0, k) for k in range(1, 151)]
        for r in recs:
            await wait_until(lambda r=r: len(r.seen) >= len(expect), 10, "all messages")
        for c, r in zip(subs, recs, strict=True):
            assert r.seen == expect, "lost, repeated or reordered messages"
            assert c.handoffs == 1 and c.reconnects == 0, "the client was disconnected"
            assert c.edge_id in ("edge-k1", "edge-k2")
        # The neighbours measured each handover (edge_handoff_seconds).
        handed = sum([await _metric(nb.http_url, "edge_handoff_seconds_count")
                      for nb in (nb1, nb2)])
        assert handed >= len(subs)
    finally:
        for c in [pub, *subs]:
            await c.close()
        pod.stop()
