"""client_sdk.token_refresh: reading a token's expiry and when to refresh it."""

from __future__ import annotations

import base64

import pytest

from client_sdk.protocol import mint_token
from client_sdk.token_refresh import refresh_lead, token_expiry


def _with_body(body: bytes) -> str:
    return "e30." + base64.urlsafe_b64encode(body).rstrip(b"=").decode() + ".c2ln"


def test_token_expiry_reads_exp_without_the_key() -> None:
    assert token_expiry(mint_token(b"any", "ada", now=1000.0, ttl=60)) == 1060.0
    assert token_expiry(_with_body(b'{"exp": 12.5}')) == 12.5


@pytest.mark.parametrize("token", [
    "", "a.b", "a.b.c.d", "e30.!!!.c2ln", _with_body(b"[1]"), _with_body(b'{"exp": "5"}'),
    _with_body(b'{"exp": true}'), _with_body(b'{"sub": "x"}'), _with_body(b"not json"),
    _with_body(b'{"exp": 1e999}'),
])
def test_token_expiry_is_none_when_unreadable(token: str) -> None:
    assert token_expiry(token) is None


@pytest.mark.parametrize(("lifetime", "lead"), [
    (0.5, 1.0), (3.0, 1.0), (10.0, 2.0), (120.0, 24.0), (3600.0, 60.0), (-5.0, 1.0),
])
def test_refresh_lead_is_a_fifth_of_the_lifetime_within_1_and_60_s(
        lifetime: float, lead: float) -> None:
    assert refresh_lead(lifetime) == lead
