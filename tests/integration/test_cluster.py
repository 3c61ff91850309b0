"""The recovery, failover and origin-sync tests again, on a real 6-node Redis Cluster.

Fixture indirection, not copies: the tests are imported from their modules and
collected here a second time, with ``redis_url`` overridden to the session's
``redis+cluster://`` URL (see ``redis_cluster`` in tests/conftest.py).
"""

from __future__ import annotations

import pytest

from tests.integration.test_handover import (  # noqa: F401  (collected here again)
    test_drain_moves_every_client_before_closing,
)
from tests.integration.test_recovery import (  # noqa: F401  (collected here again)
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
