"""Keeping a client's token valid for as long as the client lives.

``connect(urls, token_provider=get_token)``: ``get_token`` is a callable (async or
not) that returns a fresh token string, typically by asking the application's
backend.  With it the client

- **refreshes before expiry on the live connection**: at ``exp - lead`` (``lead`` =
  a fifth of the token's lifetime when the client got it, between 1 s and 60 s) it
  gets a new token and sends REFRESH; the edge answers REFRESHED and the session
  goes on with the new claims (docs/protocol.md, 37 REFRESH).  Rooms the new token
  no longer allows were left by the edge: their subscriptions end with
  :class:`~client_sdk.errors.ForbiddenError`.  A refused refresh or a provider that
  fails is retried (1 s, doubling, capped at a quarter of the time left) until
  expiry;
- **uses a fresh token for every HELLO** (reconnect, failover, handoff) when the one
  it holds expires within ``lead``;
- **recovers from an expiry it did not prevent**: when the edge closes the session
  with 4402 (the token expired: say the provider was down) or refuses a HELLO's
  token as expired, the client asks the provider again (with backoff, for as long as
  it fails) and resumes the session with the new token, nothing lost.  Only when the
  provider hands out tokens the edge refuses as expired three times in a row does
  the client end, with the edge's error.

Without a provider the token is used as it is: when it expires the edge closes the
session with 4402 and the client ends (:class:`~client_sdk.errors.ClientClosedError`
with ``code`` 4402).

Expiry times are read from the token's ``exp`` claim *without verifying it* (the
client does not hold the edge's key) and compared with this machine's clock: a clock
far off the edges' shifts the refresh by as much.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .errors import ClientClosedError, ConnectionLostError, EdgeRelayError, ForbiddenError
from .protocol import ErrorCode, Refresh, Refreshed

if TYPE_CHECKING:
    from .client import Client

__all__ = ["TokenProvider", "TokenKeeper", "token_expiry", "refresh_lead"]

log = logging.getLogger("client_sdk.tokens")

#: Returns a fresh token (a string), awaitable or not.
TokenProvider = Callable[[], "Awaitable[str] | str"]

#: A provider's tokens refused this many times in a row end the client.
MAX_REFUSED = 3


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of ``token`` (Unix seconds), read without verifying the
    signature; None when the token has no readable ``exp``."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        body = parts[1]
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, (int, float)) or not math.isfinite(exp):
        return None
    return float(exp)


def refresh_lead(lifetime: float) -> float:
    """How long before its expiry a token with ``lifetime`` seconds left when it was
    received is refreshed: a fifth of it, at least 1 s and at most 60 s."""
    return min(60.0, max(1.0, lifetime / 5.0))


class TokenKeeper:
    """One client's token: when to refresh it, getting a new one, sending REFRESH.

    ``wall`` is the wall clock (Unix seconds), replaceable in tests."""

    def __init__(self, client: Client, provider: TokenProvider, *,
                 wall: Callable[[], float] = time.time) -> None:
        self.client = client
        self.provider = provider
        self.wall = wall
        self.refreshes = 0
        self._refused = 0
        self._lead = 1.0
        self._expires: float | None = None
        self._changed = asyncio.Event()
        self._resend = False
        self.adopt(client.token)

    @property
    def expires_at(self) -> float | None:
        """When the current token expires (its ``exp``), None when it has none."""
        return self._expires

    def adopt(self, token: str) -> None:
        """Make ``token`` the client's: the next HELLO presents it."""
        self.client.token = token
        self._expires = token_expiry(token)
        if self._expires is not None:
            self._lead = refresh_lead(self._expires - self.wall())
        self._changed.set()

    def due_at(self) -> float | None:
        """Wall-clock time of the next refresh; None for a token without ``exp``."""
        return None if self._expires is None else self._expires - self._lead

    async def fetch(self) -> str:
        """A new token from the provider (within the client's request timeout).
        Raises what the provider raised, :class:`TimeoutError`, or :class:`TypeError`
        for something that is not a non-empty string."""
        async with asyncio.timeout(self.client.request_timeout):
            got = self.provider()
            token = await got if inspect.isawaitable(got) else got
        if not isinstance(token, str) or not token:
            raise TypeError(f"token_provider returned {type(token).__name__}, not a token")
        return token

    async def fresh_for_hello(self) -> None:
        """Before a HELLO: replace a token that expires within the refresh lead.  A
        provider that fails leaves the old token (the edge says whether it is still
        good)."""
        due = self.due_at()
        if due is None or self.wall() < due:
            return
        try:
            self.adopt(await self.fetch())
        except Exception as exc:
            log.warning("token_provider failed before a reconnect: %r", exc)

    async def renew_after_refusal(self, exc: EdgeRelayError) -> bool:
        """The edge closed the session or refused a HELLO with 4402 (expired): get a
        new token, asking the provider again (0.5 s, doubling up to 30 s) for as long
        as it fails, as a reconnect would.  False (the client should end) when the
        provider's tokens were refused :data:`MAX_REFUSED` times in a row, or the
        client was closed meanwhile."""
        self._refused += 1
        if self._refused > MAX_REFUSED:
            log.error("tokens from token_provider refused %d times: %s", MAX_REFUSED, exc)
            return False
        delay = 0.5
        while self.client._core.closed is None:
            try:
                self.adopt(await self.fetch())
                return True
            except Exception as fail:
                log.warning("token_provider failed after the token expired; asking again "
                            "in %.1f s: %r", delay, fail)
            await asyncio.sleep(delay)
            delay = min(delay * 2.0, 30.0)
        return False

    def accepted(self) -> None:
        """A HELLO with the current token was welcomed."""
        self._refused = 0

    def resend(self) -> None:
        """A new link was opened with an older token than the current one (a refresh
        completed on the old link during a handoff or reconnect): send the current
        one on the new link at once, or that edge would close the session when the
        older token expires."""
        self._resend = True
        self._changed.set()

    async def run(self) -> None:
        """Refresh the token before each expiry, for as long as the client lives."""
        client = self.client
        retry = 1.0
        while client._core.closed is None:
            if self._resend:
                self._resend = False
                await self._hand_over(client.token)
                continue
            due = self.due_at()
            if due is None:
                return
            self._changed.clear()
            wait = due - self.wall()
            if wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await self._changed.wait()  # a reconnect took a new token: re-plan
                    continue
                except TimeoutError:
                    pass
            if await self._refresh_once():
                retry = 1.0
                continue
            # Retry, sooner as expiry nears; once expired the edge closes the session
            # with 4402 and the client renews the token then (renew_after_refusal).
            left = (self._expires or 0.0) - self.wall()
            await asyncio.sleep(max(0.1, min(retry, left / 4.0)) if left > 0 else retry)
            retry = min(retry * 2.0, 30.0)

    async def _refresh_once(self) -> bool:
        """Get a token and hand it to the edge; True when the session has it."""
        try:
            token = await self.fetch()
        except Exception as exc:
            log.warning("token_provider failed; retrying before the token expires: %r", exc)
            return False
        return await self._hand_over(token)

    async def _hand_over(self, token: str) -> bool:
        """Send ``token`` in a REFRESH (or keep it for the next HELLO when not
        connected); True when the session has it."""
        client = self.client
        if not client._connected.is_set():
            self.adopt(token)  # between links: the next HELLO presents it
            return True
        try:
            reply = await client.request(Refresh(0, token))
        except (ConnectionLostError, TimeoutError):
            # The link dropped (or moved: a handoff) before the answer: the next HELLO
            # presents the token, and it is sent again on whatever link there is then,
            # in case that HELLO had gone out with the older one.
            self.adopt(token)
            self._resend = True
            return True
        except ClientClosedError:
            return True
        except EdgeRelayError as exc:
            log.warning("the edge refused the refreshed token; retrying: %s", exc)
            return False
        assert isinstance(reply, Refreshed)
        self.adopt(token)
        self.refreshes += 1
        for room in reply.rooms_left:
            client._end_room(room, ForbiddenError(
                ErrorCode.FORBIDDEN, f"the refreshed token does not allow {room!r}: left"))
        return True
