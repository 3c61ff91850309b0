"""Session checkpoints in Redis and the resume tokens that unlock them.

A checkpoint (``er:{sess:ID}``, msgpack) holds the session's identity, its
rooms with join flags and last delivered positions, and the edge serving it.
It is written when the session starts, on every join/leave, and every
``interval`` seconds while connected, each time with a TTL equal to the
resume window: a session whose checkpoint has expired can no longer resume.

Resume tokens are ``HMAC-SHA256(secret, session_id "|" subject)``: any edge
sharing the signing secret verifies them without a lookup.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import time
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError

__all__ = ["SessionStore", "CheckpointUnavailable", "resume_token", "verify_resume_token",
           "checkpoint_key"]


class CheckpointUnavailable(RuntimeError):
    """Redis could not be asked: whether a checkpoint exists is unknown."""

log = logging.getLogger("edge_node.sessions")


def checkpoint_key(session_id: str) -> str:
    """Redis key of a session checkpoint."""
    return f"er:{{sess:{session_id}}}"


def resume_token(secret: bytes, session_id: str, subject: str) -> str:
    """Token that lets the holder of ``session_id`` resume it."""
    return hmac.new(secret, f"{session_id}|{subject}".encode(), hashlib.sha256).hexdigest()


def verify_resume_token(secrets: tuple[bytes, ...], session_id: str, subject: str,
                        token: str) -> bool:
    """True when ``token`` was issued for this session and subject by any key."""
    return any(hmac.compare_digest(resume_token(s, session_id, subject), token)
               for s in secrets)


#: KEYS: checkpoint; ARGV: holder tag, data, px, force, attempt.  Writes the
#: checkpoint unless another connection holds it.  ``force`` = "1" takes it
#: over (a new or resumed connection) unless the holder is a *newer* attempt of
#: the same client.  1 when written, 0 when this writer is stale.
_SAVE = """
local cur = redis.call('HGET', KEYS[1], 'o')
if cur and cur ~= ARGV[1] then
  if ARGV[4] ~= '1' then return 0 end
  local att = tonumber(redis.call('HGET', KEYS[1], 'a') or '0')
  if att > tonumber(ARGV[5]) then return 0 end
end
redis.call('HSET', KEYS[1], 'o', ARGV[1], 'd', ARGV[2], 'a', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class SessionStore:
    """Reads and writes checkpoints; every call is best effort when Redis is down.

    Each write names its *holder* (one connection of the session).  Only the
    holder keeps writing; a connection that lost the session to a newer one
    (the client resumed elsewhere while this link was half-open) is told so
    and must not speak for the session any more.
    """

    def __init__(self, r: aioredis.Redis, window: float) -> None:
        self.r = r
        self.window_ms = int(window * 1000)

    async def save_many(self, items: list[tuple[str, str, int, dict[str, Any]]],
                        force: bool = False) -> tuple[int, list[str]] | None:
        """Write ``(session id, holder, attempt, data)`` checkpoints in one pipeline.

        Returns how many were written and the session ids whose holder is stale,
        or ``None`` when Redis could not be reached (nothing is known).
        """
        if not items:
            return 0, []
        pipe = self.r.pipeline(transaction=False)
        now = time.time()
        for sid, holder, attempt, data in items:
            data["ts"] = now
            pipe.eval(_SAVE, 1, checkpoint_key(sid), holder, msgpack.packb(data),
                      self.window_ms, "1" if force else "0", attempt)
        try:
            res = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("checkpoint write failed", extra={"error": str(exc)})
            return None
        stale = [sid for (sid, _h, _a, _d), ok in zip(items, res, strict=True) if not ok]
        return len(items) - len(stale), stale

    async def load(self, session_id: str) -> dict[str, Any] | None:
        """The checkpoint, or ``None`` if it expired.

        Raises :class:`CheckpointUnavailable` when Redis cannot be asked.
        """
        try:
            raw: Any = await self.r.hget(checkpoint_key(session_id), "d")
        except (RedisError, OSError) as exc:
            log.warning("checkpoint read failed", extra={"error": str(exc)})
            raise CheckpointUnavailable(str(exc)) from exc
        if raw is None:
            return None
        data: dict[str, Any] = msgpack.unpackb(raw, raw=False)
        return data

    async def delete(self, session_id: str) -> None:
        """Forget a session that ended cleanly."""
        with contextlib.suppress(RedisError, OSError):
            await self.r.delete(checkpoint_key(session_id))
