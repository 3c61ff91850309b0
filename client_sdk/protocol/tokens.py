"""Signed access tokens: JWT with HS256 (HMAC-SHA256), standard library only.

Claims:

``sub``   subject (player name, device id, service name), required
``kind``  ``player`` | ``device`` | ``service``, required
``rooms`` room-name patterns the holder may join (``fnmatch`` style, ``*``/``?``)
``pub``   patterns the holder may publish to (defaults to ``rooms``)
``metrics`` (kind ``device``) telemetry the device may send: a map
          ``metric -> [min, max]`` (declared range; ``null`` for an open end);
          absent = any metric, any finite value
``rpc``   patterns of the function names the holder may call (absent = none)
``info``  a JSON object the application puts in the token; functions see it
``exp``   expiry, Unix seconds, required
``iat``   issue time, Unix seconds (informational)

Any JWT HS256 library can mint these tokens; :func:`mint_token` is the
reference.  :func:`verify_token` takes ``now`` from the caller (sans-I/O).
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .errors import TokenError, TokenExpired

__all__ = ["Claims", "KINDS", "mint_token", "verify_token", "room_allowed"]

KINDS = ("player", "device", "service")
_HEADER = {"alg": "HS256", "typ": "JWT"}


@dataclass(frozen=True, slots=True)
class Claims:
    """Verified token claims."""

    subject: str
    kind: str
    rooms: tuple[str, ...]
    publish: tuple[str, ...]
    expires_at: float
    #: Allowed metrics with their declared ranges ``(name, lo, hi)``; None = any.
    metrics: tuple[tuple[str, float, float], ...] | None = None
    #: Patterns of the functions (RPC names) the holder may call; empty = none.
    rpc: tuple[str, ...] = ()
    #: The token's ``info`` object (application data for functions); None = absent.
    info: dict[str, Any] | None = field(default=None, compare=False)

    def may_join(self, room: str) -> bool:
        """True when ``room`` matches one of the ``rooms`` patterns."""
        return room_allowed(self.rooms, room)

    def may_publish(self, room: str) -> bool:
        """True when ``room`` matches one of the ``pub`` patterns."""
        return room_allowed(self.publish, room)

    def may_call(self, function: str) -> bool:
        """True when function ``function`` matches one of the ``rpc`` patterns."""
        return room_allowed(self.rpc, function)


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    pad = "=" * (-len(text) % 4)
    # Strict: only the unpadded URL-safe alphabet, and the canonical spelling
    # (re-encoding gives the same text), so one token has exactly one spelling.
    raw = base64.b64decode(text + pad, altchars=b"-_", validate=True)
    if _b64e(raw) != text:
        raise ValueError("non-canonical base64url")
    return raw


def mint_token(
    secret: bytes,
    subject: str,
    kind: str = "player",
    rooms: tuple[str, ...] | list[str] = ("*",),
    *,
    publish: tuple[str, ...] | list[str] | None = None,
    metrics: dict[str, tuple[float | None, float | None]] | None = None,
    rpc: tuple[str, ...] | list[str] | None = None,
    info: dict[str, Any] | None = None,
    now: float,
    ttl: float = 3600.0,
) -> str:
    """Return a signed token for ``subject`` valid for ``ttl`` seconds after ``now``.

    ``metrics`` (devices): allowed metric names with their declared ``(min, max)``
    range (``None`` for an open end).  ``rpc``: patterns of the functions the holder
    may call; ``info``: a JSON object handed to functions with the claims."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    if not subject:
        raise ValueError("subject must not be empty")
    claims: dict[str, object] = {
        "sub": subject,
        "kind": kind,
        "rooms": list(rooms),
        "exp": int(now + ttl),
        "iat": int(now),
    }
    if publish is not None:
        claims["pub"] = list(publish)
    if metrics is not None:
        claims["metrics"] = {k: [lo, hi] for k, (lo, hi) in metrics.items()}
    if rpc is not None:
        claims["rpc"] = list(rpc)
    if info is not None:
        claims["info"] = info
    head = _b64e(json.dumps(_HEADER, separators=(",", ":")).encode())
    body = _b64e(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{head}.{body}".encode("ascii")
    sig = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return f"{head}.{body}.{_b64e(sig)}"


def _str_list(v: object, what: str) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise TokenError(f"claim '{what}' must be a list of strings")
    return tuple(v)


def verify_token(token: str, secrets: list[bytes] | tuple[bytes, ...], *, now: float) -> Claims:
    """Verify ``token`` against any of ``secrets`` (key rotation) and return its claims.

    Raises :class:`TokenExpired` when ``exp <= now`` and :class:`TokenError`
    for anything else wrong (shape, encoding, signature, algorithm, claims).
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("token is not a JWT (expected three dot-separated parts)")
    head_b, body_b, sig_b = parts
    try:
        header = json.loads(_b64d(head_b))
        sig = _b64d(sig_b)
    except (ValueError, binascii.Error, RecursionError) as exc:
        raise TokenError("token is not valid base64url JSON") from exc
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise TokenError("token algorithm must be HS256")
    signing_input = f"{head_b}.{body_b}".encode("ascii", "replace")
    if not any(
        hmac.compare_digest(hmac.new(s, signing_input, hashlib.sha256).digest(), sig)
        for s in secrets
    ):
        raise TokenError("token signature does not verify")
    try:
        claims = json.loads(_b64d(body_b))
    except (ValueError, binascii.Error, RecursionError) as exc:
        raise TokenError("token claims are not valid JSON") from exc
    if not isinstance(claims, dict):
        raise TokenError("token claims must be a JSON object")
    sub, kind, exp = claims.get("sub"), claims.get("kind"), claims.get("exp")
    if not isinstance(sub, str) or not sub:
        raise TokenError("claim 'sub' is missing")
    if kind not in KINDS:
        raise TokenError(f"claim 'kind' must be one of {', '.join(KINDS)}")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool) or not math.isfinite(exp):
        raise TokenError("claim 'exp' is missing")
    if exp <= now:
        raise TokenExpired("token has expired")
    rooms = _str_list(claims.get("rooms", []), "rooms")
    pub = _str_list(claims["pub"], "pub") if "pub" in claims else rooms
    assert isinstance(kind, str)
    metrics = _metrics(claims["metrics"]) if "metrics" in claims else None
    rpc = _str_list(claims.get("rpc", []), "rpc")
    info = claims.get("info")
    if info is not None and not isinstance(info, dict):
        raise TokenError("claim 'info' must be a JSON object")
    return Claims(sub, kind, rooms, pub, float(exp), metrics, rpc, info)


def _bound(v: object, default: float) -> float:
    if v is None:
        return default
    if type(v) not in (int, float) or not math.isfinite(v):  # type: ignore[arg-type]
        raise TokenError("metric bounds must be finite numbers or null")
    return float(v)  # type: ignore[arg-type]


def _metrics(v: object) -> tuple[tuple[str, float, float], ...]:
    if not isinstance(v, dict):
        raise TokenError("claim 'metrics' must be a map metric -> [min, max]")
    out = []
    for name, rng in v.items():
        if not name or not isinstance(rng, list) or len(rng) != 2:
            raise TokenError("claim 'metrics' must be a map metric -> [min, max]")
        lo, hi = _bound(rng[0], -math.inf), _bound(rng[1], math.inf)
        if lo > hi:
            raise TokenError(f"metric {name!r}: min is greater than max")
        out.append((str(name), lo, hi))
    return tuple(out)


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


def room_allowed(patterns: tuple[str, ...], room: str) -> bool:
    """True when ``room`` matches any pattern (case-sensitive ``fnmatch``)."""
    return any(_compiled(p).match(room) is not None for p in patterns)
