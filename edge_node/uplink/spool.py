"""The uplink's bounded on-disk spool: an SQLite table used as a FIFO queue.

Blocking (plain :mod:`sqlite3`): :class:`~edge_node.uplink.uplink.Uplink` runs every
call on one dedicated thread, which also serialises them.  Rows are
``(id, shard, data)`` with ``id`` increasing, so reading by id returns entries in
submit order.  The file is in WAL mode; ``synchronous`` is the fsync policy:

- ``FULL``: fsync on every commit (survives power loss; slowest),
- ``NORMAL``: fsync at WAL checkpoints (survives a process crash; the default),
- ``OFF``: no fsync (survives a process crash only if the OS does not crash).

The spool also stores the edge's idempotency counter reservation (``seq_hi``) so
that a restarted edge never reuses an idempotency id.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

__all__ = ["Spool", "AppendResult", "OVERFLOW_POLICIES", "SYNC_MODES"]

OVERFLOW_POLICIES = ("reject_new", "drop_oldest")
SYNC_MODES = ("FULL", "NORMAL", "OFF")


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What :meth:`Spool.append` did: rows stored, oldest rows dropped, new rows rejected."""

    stored: int
    dropped_oldest: int
    rejected: int


class Spool:
    """A FIFO of ``(shard, packed entry)`` rows bounded to ``max_entries``.

    ``path`` ``":memory:"`` gives a volatile spool (tests, or an edge that accepts
    losing spooled data on a crash).  Not thread-safe: call from one thread at a time.
    """

    def __init__(self, path: str, *, max_entries: int = 1_000_000,
                 overflow: str = "drop_oldest", synchronous: str = "NORMAL") -> None:
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, not {overflow!r}")
        if synchronous.upper() not in SYNC_MODES:
            raise ValueError(f"synchronous must be one of {SYNC_MODES}, not {synchronous!r}")
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.path = path
        self.max_entries = max_entries
        self.overflow = overflow
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self.db.execute("CREATE TABLE IF NOT EXISTS spool ("
                        "id INTEGER PRIMARY KEY AUTOINCREMENT, shard INTEGER NOT NULL, "
                        "data BLOB NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER)")
        row = self.db.execute("SELECT COUNT(*) FROM spool").fetchone()
        #: Rows in the spool (kept in memory, exact).
        self.count: int = int(row[0])

    def append(self, rows: list[tuple[int, bytes]]) -> AppendResult:
        """Store rows at the tail in one transaction, applying the overflow policy."""
        if not rows:
            return AppendResult(0, 0, 0)
        room = self.max_entries - self.count
        rejected = dropped = 0
        if len(rows) > room:
            if self.overflow == "reject_new":
                rejected = len(rows) - max(room, 0)
                rows = rows[:max(room, 0)]
            else:
                dropped = len(rows) - room
        old = 0
        if dropped:
            # The oldest rows go first; when more arrive than fit at all, the oldest new ones.
            old = min(dropped, self.count)
            rows = rows[dropped - old:]
        with self._tx():
            if old:
                self.db.execute("DELETE FROM spool WHERE id IN "
                                "(SELECT id FROM spool ORDER BY id LIMIT ?)", (old,))
            if rows:
                self.db.executemany("INSERT INTO spool (shard, data) VALUES (?, ?)", rows)
        self.count += len(rows) - old
        return AppendResult(len(rows), dropped, rejected)

    def peek(self, limit: int) -> list[tuple[int, int, bytes]]:
        """Up to ``limit`` oldest rows as ``(id, shard, data)``, oldest first."""
        cur = self.db.execute("SELECT id, shard, data FROM spool ORDER BY id LIMIT ?", (limit,))
        return [(int(i), int(s), bytes(d)) for i, s, d in cur.fetchall()]

    def delete_upto(self, last_id: int) -> int:
        """Remove every row with ``id <= last_id`` (after they reached Redis)."""
        with self._tx():
            n = self.db.execute("DELETE FROM spool WHERE id <= ?", (last_id,)).rowcount
        self.count = max(self.count - n, 0)
        return int(n)

    def reserve_seq(self, floor: int, block: int) -> tuple[int, int]:
        """Reserve idempotency ids: returns ``(start, hi)`` with ``start >= floor`` and above
        every earlier reservation; ids in ``[start, hi)`` are this caller's."""
        with self._tx():
            row = self.db.execute("SELECT v FROM meta WHERE k = 'seq_hi'").fetchone()
            start = max(floor, int(row[0]) if row else 0)
            hi = start + block
            self.db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('seq_hi', ?)", (hi,))
        return start, hi

    def close(self) -> None:
        """Close the database (rows stay on disk)."""
        self.db.close()

    def _tx(self) -> _Tx:
        return _Tx(self.db)


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, et: object, e: object, tb: object) -> None:
        self.db.execute("COMMIT" if et is None else "ROLLBACK")
