"""The hooks stream: what the apply script queues for origin functions and webhooks
(sans-I/O: key names, the queued record, decoding it back).

For every uplink entry whose kind has a function or a webhook, the apply script
(:mod:`origin.apply`) also runs :func:`hook_op`: an ``XADD`` to ``er:{up:N}:hooks``, in
the same atomic step as the entry's effects, its idempotency bit and the XACK of the
uplink stream entry.  So each event is queued exactly once (a re-sent or re-delivered
uplink entry finds its bit set) and never lost between apply and hooks.  Fields of a
hooks stream entry: ``id`` (``EDGE:SEQ``, the event id), ``edge``, ``seq``, ``kind``,
``key``, ``ts`` (edge submit time, Unix ms), ``body`` (JSON text).

Other keys, all with the shard's hash tag (one Redis Cluster slot per shard):

- ``er:{up:N}:hooks:done:EVENT``: hash ``target -> ok|dead`` of the jobs finished for
  that event (so a redelivered event does not run them again); expires after the
  deduplication window;
- ``er:{up:N}:hooks:dead``: the dead-letter stream (see :func:`dead_fields`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edge_node.contract import Entry, stream_key
from origin.effects import to_json

__all__ = ["HOOKS_GROUP", "STATS_KEY", "BREAKERS_KEY", "hooks_stream", "dead_stream",
           "done_key", "hook_op", "attach_hook", "OriginEvent", "EventDecodeError",
           "dead_fields"]

#: The consumer group of the hooks streams (one consumer per origin worker).
HOOKS_GROUP = "hooks"
#: Counters of functions and webhooks (hash; see origin.hooks.stats).
STATS_KEY = "er:hooks:stats"
#: Breaker state per webhook URL and worker (hash ``URL|consumer -> state|unix_ms``).
BREAKERS_KEY = "er:hooks:breakers"


def _tag(shard: int) -> str:
    # The uplink stream's hash tag: "er:{up:N}:stream" -> "er:{up:N}:".
    return stream_key(shard)[: -len("stream")]


def hooks_stream(shard: int) -> str:
    """``er:{up:N}:hooks``: events waiting for their functions and webhooks."""
    return _tag(shard) + "hooks"


def dead_stream(shard: int) -> str:
    """``er:{up:N}:hooks:dead``: jobs that exhausted their retries."""
    return _tag(shard) + "hooks:dead"


def done_key(shard: int, event_id: str) -> str:
    """``er:{up:N}:hooks:done:EVENT``: the event's finished targets."""
    return f"{_tag(shard)}hooks:done:{event_id}"


def hook_op(shard: int, maxlen: int, edge: str, e: Entry) -> list[str]:
    """The ``XADD`` that queues ``e`` (from ``edge``) for its hooks (approximate cap
    ``maxlen`` entries per shard)."""
    return ["XADD", hooks_stream(shard), "MAXLEN", "~", str(maxlen), "*",
            "id", f"{edge}:{e.seq}", "edge", edge, "seq", str(e.seq), "kind", e.kind,
            "key", e.key, "ts", str(e.ts_ms), "body", to_json(e.body)]


def attach_hook(ops: list[list[Any]], hook: list[str]) -> None:
    """Add ``hook`` to an entry's ops so it runs exactly when the entry's effects do:
    inside a lone ``ONCE`` (a device alert raised again for the same sample is
    queued once, as it is recorded once), else at the end."""
    if len(ops) == 1 and ops[0] and ops[0][0] == "ONCE":
        ops[0].append(hook)
    else:
        ops.append(hook)


class EventDecodeError(ValueError):
    """A hooks stream entry that is not a well-formed event."""


def _s(b: bytes | str) -> str:
    return b.decode() if isinstance(b, bytes) else b


@dataclass(frozen=True, slots=True)
class OriginEvent:
    """One uplink event, as functions and webhooks get it.

    ``id`` is stable across retries and redeliveries (``EDGE:SEQ``): the key to
    deduplicate on.  ``body`` is the entry's body decoded from JSON (bytes arrive as
    ``{"$b64": ...}``).  ``ts_ms``: the edge's submit time (Unix ms)."""

    id: str
    kind: str
    key: str
    edge: str
    seq: int
    ts_ms: int
    body: Any
    #: Where it was queued: the shard and the hooks stream entry id.
    shard: int = 0
    stream_id: str = ""

    @classmethod
    def from_fields(cls, shard: int, stream_id: str, fields: dict[bytes, bytes]
                    ) -> OriginEvent:
        """Decode a hooks stream entry; :class:`EventDecodeError` if malformed."""
        try:
            f = {_s(k): _s(v) for k, v in fields.items()}
            return cls(f["id"], f["kind"], f["key"], f["edge"], int(f["seq"]),
                       int(f["ts"]), json.loads(f["body"]), shard, stream_id)
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            raise EventDecodeError(f"hooks entry {stream_id}: {exc!r}") from exc

    def to_json_bytes(self) -> bytes:
        """The webhook body: ``{"id", "kind", "key", "edge", "seq", "ts", "body"}``."""
        return to_json({"id": self.id, "kind": self.kind, "key": self.key,
                        "edge": self.edge, "seq": self.seq, "ts": self.ts_ms,
                        "body": self.body}).encode()


def dead_fields(ev: OriginEvent, target: str, attempts: int, reason: str, error: str,
                first_ms: int, now_ms: int) -> dict[str, str]:
    """One dead-letter entry: ``event`` (id), ``kind``, ``key``, ``edge``, ``ts``,
    ``target`` (``fn:NAME`` or ``url:URL``), ``attempts``, ``reason`` (``attempts``,
    ``elapsed``, ``permanent``), ``error`` (the last one), ``first_attempt_ms``,
    ``dead_ms``, ``body`` (the event's JSON body)."""
    return {"event": ev.id, "kind": ev.kind, "key": ev.key, "edge": ev.edge,
            "ts": str(ev.ts_ms), "target": target, "attempts": str(attempts),
            "reason": reason, "error": error[:1000], "first_attempt_ms": str(first_ms),
            "dead_ms": str(now_ms), "body": to_json(ev.body)}
