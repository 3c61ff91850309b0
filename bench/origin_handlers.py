"""The origin functions ``bench origin-functions`` runs on its origin workers
(``--functions bench.origin_handlers:functions``).

One handler, ``bench.work``, for ``room_event`` events.  The event's body says how
much work it is, so the handler keeps no state of its own (docs/webhooks.md):

- ``body["us"]`` (int, 0..``MAX_BODY_US``): spin that many µs of the calling thread's
  CPU time first (it blocks the worker's event loop for that long, like any CPU-bound
  handler);
- ``body["sleep_ms"]`` (int or float, 0..``MAX_SLEEP_MS``): then ``await
  asyncio.sleep`` that long (an I/O-bound handler: a call to another service);
- then record the effect, idempotently on the event id, in one round trip
  (:data:`RECORD_SCRIPT`): ``SET obench:seen:<event id> 1 NX``; if it was set,
  ``INCR obench:done``, else ``INCR obench:dups`` (the handler ran twice for one
  event: a second effect, which the bench reports and must be 0).

A body that is not a dict, or values out of range, raise
:class:`~origin.functions.DeadLetter` (dead-lettered at once, never retried): the
bench counts dead letters.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from origin.functions import DeadLetter, FunctionContext, OriginEvent, OriginFunctions

__all__ = ["functions", "KIND", "HANDLER", "DONE_KEY", "DUPS_KEY", "SEEN_PREFIX",
           "MAX_BODY_US", "MAX_SLEEP_MS", "RECORD_SCRIPT"]

#: The event kind the handler runs for, and its name (in done records, stats).
KIND = "room_event"
HANDLER = "bench.work"
#: Effects recorded: once per event (``DONE_KEY``), again (``DUPS_KEY``).
DONE_KEY = "obench:done"
DUPS_KEY = "obench:dups"
SEEN_PREFIX = "obench:seen:"
#: Bounds of one event's work (far below the default function timeout, 30 s).
MAX_BODY_US = 100_000
MAX_SLEEP_MS = 1_000.0

#: KEYS[1] the event's seen key, KEYS[2] the done counter, KEYS[3] the duplicates
#: counter; returns 1 for a first effect, 0 for a duplicate.
RECORD_SCRIPT = """
if redis.call('SET', KEYS[1], '1', 'NX') then
  redis.call('INCR', KEYS[2])
  return 1
end
redis.call('INCR', KEYS[3])
return 0
"""

functions = OriginFunctions()


def spin(us: int) -> None:
    """Busy-wait ``us`` µs of this thread's CPU time."""
    clock = time.thread_time_ns
    end = clock() + us * 1000
    while clock() < end:
        pass


def _work(body: Any) -> tuple[int, float]:
    """``(us, sleep_ms)`` from an event body; :class:`DeadLetter` if malformed."""
    if not isinstance(body, dict):
        raise DeadLetter("the body must be a dict with 'us' and 'sleep_ms'")
    us, sleep_ms = body.get("us", 0), body.get("sleep_ms", 0)
    if type(us) is not int or not 0 <= us <= MAX_BODY_US:
        raise DeadLetter(f"body['us'] must be an integer in 0..{MAX_BODY_US}")
    if type(sleep_ms) not in (int, float) or not 0 <= sleep_ms <= MAX_SLEEP_MS:
        raise DeadLetter(f"body['sleep_ms'] must be a number in 0..{MAX_SLEEP_MS:g}")
    return us, float(sleep_ms)


@functions.on(KIND, name=HANDLER)
async def work(ctx: FunctionContext, event: OriginEvent) -> None:
    """Spin, sleep, then record the effect once per event id (see the module)."""
    us, sleep_ms = _work(event.body)
    if us:
        spin(us)
    if sleep_ms:
        await asyncio.sleep(sleep_ms / 1000.0)
    await ctx.redis.eval(RECORD_SCRIPT, 3, SEEN_PREFIX + event.id, DONE_KEY, DUPS_KEY)
