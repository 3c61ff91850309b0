"""Load-generator processes and the parent's side of talking to them.

Each worker is a ``spawn``-ed process running one asyncio (uvloop) loop with a share
of the clients. Parent and worker exchange ``(kind, data)`` tuples over a pipe:
the worker says ``ready`` and ``result`` (or ``error`` with a traceback), the parent
says ``go`` and ``stop``. A shared counter per worker feeds the progress line.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import multiprocessing.sharedctypes
import os
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from bench.errors import BenchFailure
from bench.procstats import pin_self
from bench.targets import TargetSpec
from edge_node.runtime.fd_limits import raise_nofile_limit
from edge_node.runtime.gc_tuning import freeze_heap

Message = tuple[str, Any]


@dataclass(frozen=True)
class WorkerJob:
    """What one load process does: ``entry(ctx)`` with this job in ``ctx.job``."""

    index: int
    entry: Callable[[WorkerContext], Awaitable[dict[str, Any]]]
    spec: TargetSpec
    params: Any
    pin_cpus: frozenset[int] | None = None


class WorkerContext:
    """The worker's side of the pipe, used from inside its event loop."""

    def __init__(
        self,
        job: WorkerJob,
        conn: multiprocessing.connection.Connection,
        counter: Any,
    ) -> None:
        self.job = job
        self._conn = conn
        self._counter = counter

    def send(self, kind: str, data: Any = None) -> None:
        # uvloop's add_reader (in recv) leaves the pipe non-blocking: a result larger
        # than the pipe buffer would then be written in part and corrupt the stream.
        os.set_blocking(self._conn.fileno(), True)
        self._conn.send((kind, data))

    def ready(self, data: Any = None) -> None:
        """Tell the parent this worker's clients are connected.

        Everything alive now (the clients, their buffers) lives to the end of the
        run: it is moved out of the garbage collector's way first (``gc.freeze``),
        so collections during the measured window stay short and do not show up
        as latency.
        """
        freeze_heap()
        self.send("ready", data)

    async def recv(self) -> Message:
        """Wait for the parent's next message without blocking the loop."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Message] = loop.create_future()
        fd = self._conn.fileno()

        def readable() -> None:
            if not fut.done() and self._conn.poll():
                loop.remove_reader(fd)
                try:
                    fut.set_result(self._conn.recv())
                except EOFError as exc:
                    fut.set_exception(exc)

        loop.add_reader(fd, readable)
        try:
            return await fut
        finally:
            loop.remove_reader(fd)

    def progress(self, value: int) -> None:
        """Publish a running count (deliveries, connections) for the progress line."""
        self._counter.value = value


def _worker_main(
    job: WorkerJob, conn: multiprocessing.connection.Connection, counter: Any
) -> None:
    if job.pin_cpus:
        pin_self(set(job.pin_cpus))
    raise_nofile_limit()
    ctx = WorkerContext(job, conn, counter)

    async def run() -> None:
        result = await job.entry(ctx)
        ctx.send("result", result)

    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover
            asyncio.run(run())
        else:
            uvloop.run(run())
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


class WorkerPool:
    """The parent's handle on the load processes."""

    def __init__(self, jobs: list[WorkerJob]) -> None:
        mp = multiprocessing.get_context("spawn")
        self._conns: list[multiprocessing.connection.Connection] = []
        self._counters: list[Any] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self._child_ends: list[multiprocessing.connection.Connection] = []
        for job in jobs:
            parent_end, child_end = mp.Pipe()
            counter = mp.RawValue("q", 0)
            proc = mp.Process(
                target=_worker_main,
                args=(job, child_end, counter),
                name=f"bench-load-{job.index}",
                daemon=True,
            )
            self._conns.append(parent_end)
            self._counters.append(counter)
            self._procs.append(proc)
            self._child_ends.append(child_end)

    def start(self) -> None:
        for proc in self._procs:
            proc.start()
        # The parent's copies of the child ends must go, or a dead worker never reads EOF.
        for end in self._child_ends:
            end.close()
        self._child_ends.clear()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def send_all(self, kind: str, data: Any = None) -> None:
        for conn in self._conns:
            conn.send((kind, data))

    def send_to(self, index: int, kind: str, data: Any = None) -> None:
        """Send one worker (``index``: its job's position in the pool) a message."""
        self._conns[index].send((kind, data))

    def recv_all(
        self, kind: str, timeout: float, on_wait: Callable[[], None] | None = None
    ) -> list[Any]:
        """Wait for message ``kind`` from every worker; fail on an error or a dead worker."""
        results: list[Any] = [None] * len(self._conns)
        pending = set(range(len(self._conns)))
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise BenchFailure(
                    f"load process(es) {sorted(pending)} did not report {kind!r} "
                    f"within {timeout:.0f} s"
                )
            ready = multiprocessing.connection.wait(
                [self._conns[i] for i in pending], timeout=0.25
            )
            for obj in ready:
                conn = cast(multiprocessing.connection.Connection, obj)
                i = self._conns.index(conn)
                try:
                    got_kind, data = conn.recv()
                except (EOFError, OSError) as exc:
                    self._procs[i].join(1.0)
                    raise BenchFailure(f"load process {i} exited unexpectedly "
                                       f"(exit code {self._procs[i].exitcode})") from exc
                if got_kind == "error":
                    tail = "\n".join(str(data).rstrip().splitlines()[-12:])
                    raise BenchFailure(f"load process {i} failed:\n{tail}")
                if got_kind != kind:
                    raise BenchFailure(f"load process {i} sent {got_kind!r}, expected {kind!r}")
                results[i] = data
                pending.discard(i)
            for i in list(pending):
                if not self._procs[i].is_alive() and not self._conns[i].poll():
                    raise BenchFailure(
                        f"load process {i} died (exit code {self._procs[i].exitcode})"
                    )
            if on_wait is not None:
                on_wait()
        return results

    def progress(self) -> int:
        return sum(int(c.value) for c in self._counters)

    def close(self) -> None:
        """Wait briefly for the workers to exit, then kill what is left."""
        deadline = time.monotonic() + 5.0
        for proc in self._procs:
            if proc.pid is None:
                continue
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(2.0)
        for conn in self._conns:
            conn.close()
