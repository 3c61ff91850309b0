"""One place that turns a Redis URL into a client: a single server or a Redis Cluster.

URLs:

- ``redis://host:port/db``, ``rediss://…``, ``unix://…``: one server (redis-py's
  :class:`redis.asyncio.Redis`);
- ``redis+cluster://[user:password@]host:port[,host:port…]``: a Redis Cluster, reached
  through redis-py's :class:`redis.asyncio.RedisCluster` (slot map, ``MOVED``/``ASK``,
  failover re-discovery).  The listed nodes are only the seeds; the client learns the
  rest.  ``rediss+cluster://`` adds TLS.

Contract: :func:`connect` returns an object with redis-py's command API.  It is typed as
``redis.asyncio.Redis`` so callers keep one type; on a cluster it is a ``RedisCluster``,
which has the same command methods but routes each command by its key's slot, so every
multi-key command and script must touch one slot (every key of this project carries a
hash tag: see :mod:`edge_node.redis_io.keys`).  Callers that must know (blocking reads over
several streams, which span slots) ask :func:`is_cluster`.

Blocking reads (``XREAD``/``XREADGROUP`` with ``BLOCK``) need a client without a short
socket timeout (see PITFALLS): :func:`connect` with ``socket_timeout=None``.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

__all__ = ["is_cluster", "cluster_seeds", "connect", "check_url", "ping", "RedisURLError",
           "ClusterURLError", "CLUSTER_SCHEMES"]

#: URL schemes that mean "Redis Cluster".
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
#: Every URL scheme :func:`connect` takes.
SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)
_URL_FORMS = ("redis://HOST:PORT[/DB], rediss://HOST:PORT (TLS), unix:///PATH or "
              "redis+cluster://HOST:PORT[,HOST:PORT...]")


class RedisURLError(ValueError):
    """A Redis URL that cannot be used; the message names the problem and the forms."""


class ClusterURLError(RedisURLError):
    """A ``redis+cluster://`` URL that cannot be parsed (names the problem)."""


def check_url(url: str) -> None:
    """Raise :class:`RedisURLError` unless :func:`connect` can use ``url`` (no I/O)."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        hint = f" (did you mean 'redis://{url}'?)" if not sep and url else ""
        raise RedisURLError(f"bad Redis URL {url!r}{hint}: it must look like {_URL_FORMS}")
    if is_cluster(url):
        try:
            cluster_seeds(url)
        except ClusterURLError as exc:
            raise ClusterURLError(f"bad Redis URL {url!r}: {exc}") from None
        return
    from redis.connection import parse_url

    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError) as exc:
        raise RedisURLError(f"bad Redis URL {url!r}: {exc}; it must look like "
                            f"{_URL_FORMS}") from None


async def ping(url: str, timeout: float = 3.0) -> None:
    """One PING to ``url`` within about ``timeout`` seconds; redis-py's error (or
    ``OSError``/``TimeoutError``) when the server cannot be reached."""
    import asyncio

    client = connect(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        await asyncio.wait_for(client.ping(), timeout + 1.0)
    finally:
        await client.aclose()


def is_cluster(url: str) -> bool:
    """True when ``url`` names a Redis Cluster (``redis+cluster://…``)."""
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def cluster_seeds(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """Seed nodes ``[(host, port), …]`` and client options (username, password, ssl)
    of a ``redis+cluster://`` URL; :class:`ClusterURLError` if it is malformed."""
    u = urlsplit(url)
    if u.scheme.lower() not in CLUSTER_SCHEMES:
        raise ClusterURLError(f"not a cluster URL: {url!r}")
    netloc = u.netloc
    opts: dict[str, Any] = {}
    if "@" in netloc:
        cred, netloc = netloc.rsplit("@", 1)
        user, sep, pw = cred.partition(":")
        if sep:
            opts["password"] = unquote(pw)
            if user:
                opts["username"] = unquote(user)
        elif user:
            opts["password"] = unquote(user)
    if u.path not in ("", "/", "/0"):
        raise ClusterURLError("Redis Cluster has only database 0; drop the /db part")
    seeds: list[tuple[str, int]] = []
    for part in netloc.split(","):
        part = part.strip()
        if not part:
            continue
        host, sep, port_s = part.rpartition(":")
        if not sep:
            host, port_s = part, "6379"
        try:
            port = int(port_s)
        except ValueError:
            raise ClusterURLError(f"bad port in cluster URL: {part!r}") from None
        if not host or not 0 < port < 65536:
            raise ClusterURLError(f"bad node in cluster URL: {part!r}")
        seeds.append((host.strip("[]"), port))
    if not seeds:
        raise ClusterURLError("a cluster URL needs at least one host:port")
    if u.scheme.lower().startswith("rediss"):
        opts["ssl"] = True
    return seeds, opts


def connect(url: str, *, socket_timeout: float | None = 5.0,
            socket_connect_timeout: float | None = 2.0, max_connections: int | None = None,
            blocking_pool: bool = False, **kw: Any) -> aioredis.Redis:
    """A client for ``url`` (see the module docstring).

    ``max_connections`` bounds the pool (per node on a cluster; default: redis-py's).
    ``blocking_pool``
    (single server only) makes callers wait for a free connection instead of failing,
    which a reconnect storm needs; a cluster client waits in its own retry loop.
    Extra keyword arguments go to the client (e.g. ``retry``).
    """
    if is_cluster(url):
        seeds, opts = cluster_seeds(url)
        # A full-coverage check would make every slot unavailable while one
        # shard fails over; the client only needs the slots it uses.
        client = RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in seeds],
            socket_timeout=socket_timeout, socket_connect_timeout=socket_connect_timeout,
            max_connections=max(max_connections or 0, 256), require_full_coverage=False,
            **opts, **kw)
        return cast(aioredis.Redis, client)
    if blocking_pool:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections or 64, timeout=10,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout, health_check_interval=0)
        return aioredis.Redis(connection_pool=pool, **kw)
    if max_connections is not None:
        kw["max_connections"] = max_connections
    return aioredis.Redis.from_url(url, socket_timeout=socket_timeout,
                                   socket_connect_timeout=socket_connect_timeout, **kw)


async def rediscover(client: aioredis.Redis) -> None:
    """After a connection error: make a cluster client re-read the slot map on its next
    call (no-op for a single server).

    redis-py's cluster pipeline re-reads the map only inside its own retry loop, so a
    client built with ``Retry(…, 0)`` (fail fast, e.g. behind a circuit breaker) would
    keep using the dead primary after a failover.  Closing the client's connections
    marks it for re-initialisation; it stays usable.
    """
    if isinstance(client, RedisCluster):
        await client.aclose()
