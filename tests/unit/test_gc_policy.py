"""edge_node.gc_policy: start-up objects leave the collector's reach; a draining edge
stops collecting.  (The process-wide state is restored after each test.)"""

from __future__ import annotations

import gc

from edge_node.gc_policy import freeze_startup, stop_for_drain


def test_freeze_startup_moves_existing_objects_to_the_permanent_generation() -> None:
    try:
        freeze_startup()
        assert gc.get_freeze_count() > 1000
        assert sum(gc.get_count()) < 1000  # nothing left pending from before
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


def test_stop_for_drain_disables_collection() -> None:
    was = gc.isenabled()
    try:
        stop_for_drain()
        assert not gc.isenabled()
    finally:
        if was:
            gc.enable()
