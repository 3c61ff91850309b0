"""The demo's players hold short-lived tokens that the SDK refreshes on the live
connection (docs/sdk.md, Tokens that expire): what they are given and what the summary
says about it.

Each player connects with a ``token_provider`` minting a token valid
:func:`player_token_ttl` seconds (a third of the run, at least 6 s), so every player
refreshes its token a few times during the run, through the drain and the kill, and
an edge closes any session whose token expired (4402): the summary counts both.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from client_sdk import Client
from client_sdk.protocol import mint_token

__all__ = ["player_token_ttl", "provider", "token_lines", "token_summary", "tokens_ok"]


def player_token_ttl(duration: float) -> float:
    """Seconds a player's token is valid: a third of a ``duration``-second run, at
    least 6 s (the SDK refreshes it a fifth of that before it expires)."""
    return max(6.0, duration / 3.0)


def provider(secret: bytes, subject: str, rooms: list[str], rpc: Sequence[str],
             ttl: float) -> Callable[[], Awaitable[str]]:
    """A token provider as an application's backend would be: a new token each call."""
    async def get() -> str:
        return mint_token(secret, subject, "player", rooms, rpc=list(rpc), now=time.time(),
                          ttl=ttl)
    return get


def token_summary(clients: Sequence[Client], scrapes: Sequence[dict[str, float]],
                  ttl: float) -> dict[str, Any]:
    """``ttl_s``; ``refreshes`` (REFRESH answered on live connections, all players);
    ``players_refreshed``; ``valid_at_end`` (players whose token is still valid);
    ``expired_closes`` (sessions the surviving edges closed with 4402) and the edges'
    refused refreshes (``refused``)."""
    now = time.time()
    keepers = [c.tokens for c in clients if c.tokens is not None]
    refused = sum(v for m in scrapes for k, v in m.items()
                  if k.startswith("edge_token_refreshes_total{")
                  and 'outcome="ok"' not in k)
    return {
        "ttl_s": round(ttl, 1),
        "players": len(keepers),
        "refreshes": sum(k.refreshes for k in keepers),
        "players_refreshed": sum(1 for k in keepers if k.refreshes),
        "valid_at_end": sum(1 for k in keepers if (k.expires_at or 0.0) > now),
        "expired_closes": int(sum(m.get('edge_errors_total{code="4402"}', 0.0)
                                  for m in scrapes)),
        "refused": int(refused),
    }


def tokens_ok(t: dict[str, Any], duration: float) -> bool:
    """Nobody was cut by an expired token, every player still holds a valid one, and
    (in a run longer than the tokens last) every player refreshed."""
    return bool(t["expired_closes"] == 0 and t["refused"] == 0
            and t["valid_at_end"] == t["players"]
            and (duration <= t["ttl_s"] or t["players_refreshed"] == t["players"]))


def token_lines(t: dict[str, Any]) -> list[str]:
    """The summary's lines about the players' tokens."""
    if not t.get("players"):
        return []
    return ["", f"  tokens.refreshes           {t['refreshes']} on live connections "
            f"({t['players_refreshed']} of {t['players']} players; tokens valid "
            f"{t['ttl_s']:g} s, renewed by the SDK's token_provider before they expire)",
            f"  tokens.expired_closes      {t['expired_closes']} sessions closed for an "
            f"expired token (4402); {t['refused']} refreshes refused; "
            f"{t['valid_at_end']} players hold a valid token at the end"]
