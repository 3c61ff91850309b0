"""API key scopes: what each origin API key may do.

``ORIGIN_API_KEYS`` lists keys separated by commas.  A key alone may do everything
(``admin``).  ``KEY:SCOPES`` limits it to the scopes named, joined by ``+``:

| scope | allows |
|---|---|
| ``discover`` | ``GET /v1/edges`` (edge discovery: safe to ship in a game or device) |
| ``read`` | every ``GET`` (stats, metrics, forecast, rooms, devices, alerts, edges) |
| ``mint`` | ``POST /v1/tokens`` |
| ``admin`` | everything (drain, desired state, commands, and all of the above) |

A suffix is read as scopes only when every part of it is a scope name; otherwise
the whole entry is the key (so a key may itself contain ``:``).
"""

from __future__ import annotations

__all__ = ["SCOPES", "parse_key", "allows"]

SCOPES = ("discover", "read", "mint", "admin")
#: What each scope implies.
_IMPLIES = {"admin": frozenset(SCOPES), "read": frozenset({"read", "discover"}),
            "mint": frozenset({"mint"}), "discover": frozenset({"discover"})}


def parse_key(entry: str) -> tuple[str, frozenset[str]]:
    """``(key, scopes)`` of one ``ORIGIN_API_KEYS`` entry (scopes expanded)."""
    key, sep, suffix = entry.rpartition(":")
    parts = suffix.split("+") if sep else []
    if key and parts and all(p in _IMPLIES for p in parts):
        return key, frozenset().union(*(_IMPLIES[p] for p in parts))
    return entry, _IMPLIES["admin"]


def allows(scopes: frozenset[str], needed: str) -> bool:
    """True if a key with ``scopes`` may do what needs ``needed``."""
    return needed in scopes
