"""The recovery, failover and origin-sync tests again, on a real 6-node Redis Cluster,
and a primary killed mid-run.

Fixture indirection, not copies: the tests are imported from their modules and
collected here a second time, with ``redis_url`` (edges, clients) and ``server``/``r``
(origin sync) overridden to the session's ``redis+cluster://`` cluster (see
``redis_cluster`` in tests/conftest.py).  The primary-kill tests are in
tests/integration/test_cluster_failover.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from edge_node.local.redis_server import RedisClusterServer
from edge_node.redis_io import conn as redis_conn
from tests.integration.test_handover import (  # noqa: F401  (collected here again)
    test_drain_hands_rooms_to_the_neighbour_that_mirrors_them,
    test_drain_moves_every_client_before_closing,
)
from tests.integration.test_origin_sync import (  # noqa: F401
    test_exactly_once_with_duplicate_batches,
    test_redis_paused_spools_then_drains_in_order,
    test_restart_with_non_empty_spool_drains,
    test_worker_sigkilled_mid_batch_others_claim,
)
from tests.integration.test_recovery import (  # noqa: F401
    test_dead_owner_rooms_move_before_the_lease_lapses,
    test_frozen_owner_is_fenced,
    test_gap_outside_history_is_reported,
    test_leases_survive_a_script_cache_flush,
    test_owner_killed_under_steady_publishing,
    test_resume_on_another_edge,
    test_resume_same_edge_replays_missed,
    test_resume_window_expires,
    test_stale_owner_cannot_write,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def redis_url(redis_cluster_url: str) -> str:
    """Every edge and client of this module talks to the cluster."""
    return redis_cluster_url


@pytest.fixture
def server(redis_cluster: RedisClusterServer) -> Iterator[RedisClusterServer]:
    """The origin-sync tests' "own server": the session cluster, emptied first (their
    counters are global), with ``url``, ``pause()`` and ``resume()`` like a RedisServer."""
    redis_cluster.wait_ok()
    for port in redis_cluster.ports:
        if redis_cluster.info(port, "replication").get("role") == "master":
            redis_cluster.flush(port)
    yield redis_cluster
    redis_cluster.resume()


@pytest.fixture
async def r(server: RedisClusterServer) -> AsyncIterator[aioredis.Redis]:
    c = redis_conn.connect(server.url, socket_timeout=5.0)
    yield c
    await c.aclose()
