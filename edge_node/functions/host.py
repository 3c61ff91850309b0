"""Runs an application's functions on one edge: RPCs from clients, handlers on events.

Every call is bounded: slots (:mod:`.limits`) refuse what is over the edge's and the
client's concurrency at once; the arguments and the result are bounded in bytes; a call
that passes its time limit is cancelled (``async def``) or abandoned (a thread cannot be
stopped: its result is dropped, and the pool's bound still holds) and its caller gets
4009.  A function that raises :class:`~.api.RpcError` answers with a typed application
error; any other exception is 4011 for the caller and one log record with the traceback
here.  Nothing a function does reaches another client except through the edge's own
paths (:mod:`.context`).
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import logging
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from client_sdk.protocol import Error, ErrorCode, Rpc, RpcResult, encode, unpack_value
from client_sdk.protocol.function_frames import pack_value
from edge_node.functions.api import EventSpec, Functions, RpcError, RpcSpec
from edge_node.functions.context import CallContext, Event, EventContext, FunctionSender
from edge_node.functions.limits import CallLimits, CallSlots
from edge_node.runtime.tasks import spawn

if TYPE_CHECKING:
    from edge_node.fanout.hub import Hub
    from edge_node.iot.service import IotService
    from edge_node.sessions.session import ClientSession

__all__ = ["FunctionHost"]

log = logging.getLogger("edge_node.functions")


class FunctionHost:
    """The edge's functions (``functions``) under ``limits``.  The server sets it on the
    hub and on each session; :meth:`call` takes an RPC frame, the ``on_*`` methods take
    events from the hub and the IoT service.  ``tally`` counts outcomes per
    ``(function, outcome)``; ``seconds`` sums durations per function (metrics)."""

    def __init__(self, functions: Functions, hub: Hub, limits: CallLimits) -> None:
        self.functions = functions
        self.hub = hub
        self.iot: IotService | None = None
        self.limits = limits
        self.slots = CallSlots(limits)
        self.tally: Counter[tuple[str, str]] = Counter()
        self.seconds: dict[str, float] = {}
        self.events_dropped = 0
        self._pool = ThreadPoolExecutor(limits.threads, thread_name_prefix="edge-fn")
        self._senders: dict[str, FunctionSender] = {}
        self._handlers: dict[str, list[tuple[re.Pattern[str], EventSpec]]] = {}
        for spec in functions.events:
            self._handlers.setdefault(spec.trigger, []).append(
                (re.compile(fnmatch.translate(spec.pattern)), spec))
        self._watch_cache: dict[str, bool] = {}

    def close(self) -> None:
        """Stop the thread pool (running threads finish on their own)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _sender(self, name: str) -> FunctionSender:
        s = self._senders.get(name)
        if s is None:
            s = self._senders[name] = FunctionSender(name)
        return s

    async def _run(self, fn: Any, threaded: bool, timeout: float, ctx: Any, arg: Any) -> Any:
        """``fn(ctx, arg)`` within ``timeout`` s (``TimeoutError`` after it).  An ``async
        def`` runs in the calling task (``asyncio.timeout``, no task of its own: one task
        per call, and the time measured is the function's); a plain ``def`` in the pool."""
        async with asyncio.timeout(timeout):
            if threaded:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._pool, functools.partial(fn, ctx, arg))
            return await fn(ctx, arg)

    # -- RPC ----------------------------------------------------------------------

    def call(self, session: ClientSession, f: Rpc) -> None:
        """An RPC frame from ``session``: refused at once, or run in the background (the
        session goes on with its next frame); the answer carries ``f.req_id``."""
        spec = self.functions.rpcs.get(f.name)
        if spec is None:
            self._refuse(session, f, "unknown", ErrorCode.UNKNOWN_FUNCTION,
                         f"no function {f.name!r} on this edge")
            return
        if not session.claims.may_call(f.name):
            self._refuse(session, f, "forbidden", ErrorCode.FORBIDDEN,
                         f"token does not allow calling {f.name!r}")
            return
        if len(f.args) > self.limits.max_bytes:
            self._refuse(session, f, "too_large", ErrorCode.FRAME_TOO_LARGE,
                         f"arguments of {len(f.args)} bytes exceed the limit of "
                         f"{self.limits.max_bytes}")
            return
        try:
            args = unpack_value(f.args)
        except ValueError:
            self._refuse(session, f, "bad_args", ErrorCode.BAD_REQUEST,
                         "arguments must be one msgpack value")
            return
        busy = self.slots.acquire(session.session_id)
        if busy is not None:
            self._refuse(session, f, "busy", ErrorCode.FUNCTION_BUSY, busy)
            return
        spawn(self._call(session, spec, f.req_id, args), name=f"rpc:{spec.name}")

    def _refuse(self, session: ClientSession, f: Rpc, outcome: str, code: int,
                text: str) -> None:
        known = f.name if f.name in self.functions.rpcs else "(unknown)"
        self.tally[(known, outcome)] += 1
        session.stats.errors[code] += 1
        session.send(encode(Error(f.req_id, code, text)))

    async def _call(self, session: ClientSession, spec: RpcSpec, req_id: int,
                    args: Any) -> None:
        ctx = CallContext(spec.name, self.hub, self.iot, self._sender(spec.name),
                          session.claims, session.session_id)
        timeout = spec.timeout or self.limits.timeout
        t0 = time.perf_counter()
        try:
            value = await self._run(spec.fn, spec.threaded, timeout, ctx, args)
            frame: RpcResult | Error = self._result(spec.name, req_id, value)
        except RpcError as exc:
            frame = self._app_error(spec.name, req_id, exc)
        except TimeoutError:
            self.tally[(spec.name, "timeout")] += 1
            frame = Error(req_id, ErrorCode.FUNCTION_TIMEOUT,
                          f"function {spec.name!r} did not return within {timeout:g} s")
        except asyncio.CancelledError:
            self.tally[(spec.name, "cancelled")] += 1
            raise
        except Exception as exc:
            log.exception("function failed", extra={"function": spec.name,
                                                    "subject": session.claims.subject})
            self.tally[(spec.name, "failed")] += 1
            frame = Error(req_id, ErrorCode.FUNCTION_FAILED,
                          f"function {spec.name!r} failed ({type(exc).__name__})")
        finally:
            self.slots.release(session.session_id)
            self.seconds[spec.name] = self.seconds.get(spec.name, 0.0) + (
                time.perf_counter() - t0)
        if isinstance(frame, Error):
            session.stats.errors[frame.code] += 1
        if not session.closed:
            session.send(encode(frame))

    def _result(self, name: str, req_id: int, value: Any) -> RpcResult | Error:
        try:
            data = pack_value(value)
        except (TypeError, ValueError, OverflowError) as exc:
            self.tally[(name, "failed")] += 1
            log.error("function returned a value msgpack cannot encode",
                      extra={"function": name, "error": str(exc)})
            return Error(req_id, ErrorCode.FUNCTION_FAILED,
                         f"function {name!r} returned a value that cannot be sent")
        if len(data) > self.limits.max_bytes:
            self.tally[(name, "failed")] += 1
            return Error(req_id, ErrorCode.FUNCTION_FAILED,
                         f"function {name!r} returned {len(data)} bytes, over the limit "
                         f"of {self.limits.max_bytes}")
        self.tally[(name, "ok")] += 1
        return RpcResult(req_id, "", data)

    def _app_error(self, name: str, req_id: int, exc: RpcError) -> RpcResult | Error:
        try:
            data = pack_value(exc.details)
        except (TypeError, ValueError, OverflowError):
            data = pack_value(None)
        if len(data) > self.limits.max_bytes:
            data = pack_value({"message": "details over the size limit"})
        self.tally[(name, "app_error")] += 1
        return RpcResult(req_id, exc.kind[:128], data)

    # -- events -------------------------------------------------------------------

    def watches(self, trigger: str, key: str) -> bool:
        """True when some handler wants ``trigger`` events for ``key``."""
        handlers = self._handlers.get(trigger)
        if not handlers:
            return False
        ck = f"{trigger}\0{key}"
        hit = self._watch_cache.get(ck)
        if hit is None:
            if len(self._watch_cache) > 100_000:
                self._watch_cache.clear()
            hit = self._watch_cache[ck] = any(rx.match(key) for rx, _s in handlers)
        return hit

    def emit(self, trigger: str, key: str, body: dict[str, Any]) -> None:
        """An event: each matching handler runs in the background (or the event is
        dropped and counted when the edge-wide bound of running handlers is reached)."""
        if not self.watches(trigger, key):
            return
        event = Event(trigger, key, body, time.time_ns() // 1_000_000)
        for rx, spec in self._handlers[trigger]:
            if rx.match(key):
                if not self.slots.acquire_event():
                    self.events_dropped += 1
                    self.tally[(spec.name, "dropped")] += 1
                    continue
                spawn(self._event(spec, event), name=f"fn:{spec.name}")

    async def _event(self, spec: EventSpec, event: Event) -> None:
        ctx = EventContext(spec.name, self.hub, self.iot, self._sender(spec.name), event)
        timeout = spec.timeout or self.limits.timeout
        t0 = time.perf_counter()
        try:
            await self._run(spec.fn, spec.threaded, timeout, ctx, event)
            self.tally[(spec.name, "ok")] += 1
        except TimeoutError:
            self.tally[(spec.name, "timeout")] += 1
            log.warning("event handler timed out", extra={"function": spec.name,
                                                          "key": event.key})
        except asyncio.CancelledError:
            self.tally[(spec.name, "cancelled")] += 1
            raise
        except Exception:
            self.tally[(spec.name, "failed")] += 1
            log.exception("event handler failed", extra={"function": spec.name,
                                                         "key": event.key})
        finally:
            self.slots.release_event()
            self.seconds[spec.name] = self.seconds.get(spec.name, 0.0) + (
                time.perf_counter() - t0)
