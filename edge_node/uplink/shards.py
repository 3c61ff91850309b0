"""One shard count for the whole deployment: edges and origin workers must agree.

Edges hash each uplink entry to one of ``shards`` streams; origin workers read
``shards`` streams.  With different counts, entries on the streams the origin does not
read would wait forever, unnoticed.  Whoever starts first records its count in Redis
(``er:origin:config`` field ``shards``); everyone after it checks theirs against it and
refuses to start on a mismatch.  To change the count on purpose, stop everything, let
the streams drain, and delete that field.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CONFIG_KEY", "ShardCountMismatch", "claim_shard_count"]

#: Hash of deployment-wide settings (field ``shards``).
CONFIG_KEY = "er:origin:config"


class ShardCountMismatch(ValueError):
    """This process's shard count differs from the one the deployment recorded."""


async def claim_shard_count(r: Any, shards: int, who: str) -> None:
    """Record ``shards`` if no count is recorded yet, else check it matches.

    ``r`` is a redis-py asyncio client; ``who`` names the setting in the error message
    (e.g. ``"--uplink-shards"``).  Raises :class:`ShardCountMismatch`; Redis errors
    propagate.
    """
    await r.hsetnx(CONFIG_KEY, "shards", str(shards))
    recorded = await r.hget(CONFIG_KEY, "shards")
    try:
        current = int(recorded)
    except (TypeError, ValueError):
        return  # deleted in between, or not a number: nothing to compare with
    if current != shards:
        raise ShardCountMismatch(
            f"{who} is {shards} but this deployment uses {current} uplink streams "
            f"(Redis {CONFIG_KEY} field 'shards'): use {current}, or drain the uplink "
            "streams and delete that field to change it")
