"""Access tokens: JWT HS256 minting, verification, key rotation, room patterns."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest

from client_sdk.protocol import (
    KINDS,
    Claims,
    ErrorCode,
    ProtocolError,
    TokenError,
    TokenExpired,
    mint_token,
    room_allowed,
    verify_token,
)

SECRET = b"edge-secret-1"
OLD_SECRET = b"edge-secret-0"
NOW = 1_700_000_000.0


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(header: Any, claims: Any, secret: bytes = SECRET, *, raw_claims: bytes | None = None,
          raw_header: bytes | None = None) -> str:
    """An independent HS256 JWT builder, to craft tokens the reference minter would not."""
    head = _b64(raw_header if raw_header is not None else json.dumps(header).encode())
    body = _b64(raw_claims if raw_claims is not None else json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


_HS256 = {"alg": "HS256", "typ": "JWT"}
_DROP = object()  # marks a claim to leave out


def _claims(**over: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"sub": "alice", "kind": "player", "rooms": ["lobby-*"],
                         "exp": int(NOW) + 60, "iat": int(NOW)}
    c.update(over)
    return {k: v for k, v in c.items() if v is not _DROP}


# -- round trip -------------------------------------------------------------------


def test_mint_verify_round_trip() -> None:
    token = mint_token(SECRET, "alice", "player", ["lobby-*", "match-?"], now=NOW, ttl=600)
    claims = verify_token(token, [SECRET], now=NOW + 1)
    assert claims == Claims(
        subject="alice",
        kind="player",
        rooms=("lobby-*", "match-?"),
        publish=("lobby-*", "match-?"),
        expires_at=NOW + 600,
    )
    assert isinstance(claims.expires_at, float)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_round_trips(kind: str) -> None:
    token = mint_token(SECRET, f"{kind}-1", kind, now=NOW)
    claims = verify_token(token, (SECRET,), now=NOW)
    assert (claims.subject, claims.kind, claims.rooms) == (f"{kind}-1", kind, ("*",))


def test_minted_token_is_a_standard_hs256_jwt() -> None:
    token = mint_token(SECRET, "dev-9", "device", ["telemetry/dev-9"], publish=["up/*"],
                       now=NOW, ttl=30)
    head, body, sig = token.split(".")
    assert "=" not in token  # unpadded base64url
    assert json.loads(_unb64(head)) == {"alg": "HS256", "typ": "JWT"}
    assert json.loads(_unb64(body)) == {
        "sub": "dev-9",
        "kind": "device",
        "rooms": ["telemetry/dev-9"],
        "exp": int(NOW) + 30,
        "iat": int(NOW),
        "pub": ["up/*"],
    }
    expected = hmac.new(SECRET, f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert _unb64(sig) == expected


def test_token_from_another_jwt_library_verifies() -> None:
    token = _sign(_HS256, _claims(pub=["chat"]))
    claims = verify_token(token, [SECRET], now=NOW)
    assert claims.subject == "alice"
    assert claims.publish == ("chat",)


def test_mint_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        mint_token(SECRET, "alice", "admin", now=NOW)
    with pytest.raises(ValueError):
        mint_token(SECRET, "", "player", now=NOW)


# -- signatures and key rotation ------------------------------------------------------


def test_tampered_signature() -> None:
    token = mint_token(SECRET, "alice", now=NOW)
    head, body, sig = token.split(".")
    raw = bytearray(_unb64(sig))
    raw[0] ^= 0x01
    with pytest.raises(TokenError) as info:
        verify_token(f"{head}.{body}.{_b64(bytes(raw))}", [SECRET], now=NOW)
    assert type(info.value) is TokenError
    with pytest.raises(TokenError):
        verify_token(f"{head}.{body}.", [SECRET], now=NOW)


def test_tampered_claims() -> None:
    token = mint_token(SECRET, "alice", rooms=["lobby"], now=NOW)
    head, _, sig = token.split(".")
    forged = _b64(json.dumps(_claims(rooms=["*"])).encode())
    with pytest.raises(TokenError):
        verify_token(f"{head}.{forged}.{sig}", [SECRET], now=NOW)


def test_wrong_secret() -> None:
    token = mint_token(b"someone-else", "alice", now=NOW)
    with pytest.raises(TokenError) as info:
        verify_token(token, [SECRET], now=NOW)
    assert type(info.value) is TokenError
    assert info.value.code is ErrorCode.UNAUTHORIZED
    assert int(info.value.code) == 4401


def test_key_rotation() -> None:
    old = mint_token(OLD_SECRET, "alice", now=NOW)
    new = mint_token(SECRET, "bob", now=NOW)
    # During rotation the edge accepts both keys, in either order.
    assert verify_token(old, [SECRET, OLD_SECRET], now=NOW).subject == "alice"
    assert verify_token(new, [SECRET, OLD_SECRET], now=NOW).subject == "bob"
    assert verify_token(old, (OLD_SECRET, SECRET), now=NOW).subject == "alice"
    # Once the old key is retired, its tokens stop verifying.
    with pytest.raises(TokenError):
        verify_token(old, [SECRET], now=NOW)
    with pytest.raises(TokenError):
        verify_token(new, [], now=NOW)


# -- expiry ---------------------------------------------------------------------------


def test_expired() -> None:
    token = mint_token(SECRET, "alice", now=NOW, ttl=60)
    assert verify_token(token, [SECRET], now=NOW + 59.999).subject == "alice"
    for later in (NOW + 60, NOW + 61, NOW + 10**9):  # exp <= now is expired
        with pytest.raises(TokenExpired) as info:
            verify_token(token, [SECRET], now=later)
        assert info.value.code is ErrorCode.TOKEN_EXPIRED
        assert int(info.value.code) == 4402
        assert isinstance(info.value, TokenError)
        assert isinstance(info.value, ProtocolError)


def test_expired_token_with_bad_signature_is_a_signature_error() -> None:
    token = mint_token(b"someone-else", "alice", now=NOW, ttl=1)
    with pytest.raises(TokenError) as info:
        verify_token(token, [SECRET], now=NOW + 100)
    assert type(info.value) is TokenError


def test_float_exp_is_accepted() -> None:
    token = _sign(_HS256, _claims(exp=NOW + 0.5))
    assert verify_token(token, [SECRET], now=NOW).expires_at == NOW + 0.5
    with pytest.raises(TokenExpired):
        verify_token(token, [SECRET], now=NOW + 0.5)


# -- malformed tokens -------------------------------------------------------------------


_GOOD = mint_token(SECRET, "alice", now=NOW)
_GOOD_HEAD, _GOOD_BODY, _GOOD_SIG = _GOOD.split(".")
_NOT_UTF8 = _b64(b"\xff\xfe")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        f"{_GOOD}.extra",
        f"{_GOOD_HEAD}.{_GOOD_BODY}",
        "...",
    ],
    ids=["empty", "one-part", "two-parts", "four-parts", "no-signature-part", "dots-only"],
)
def test_not_three_parts(token: str) -> None:
    with pytest.raises(TokenError):
        verify_token(token, [SECRET], now=NOW)


@pytest.mark.parametrize(
    "token",
    [
        f"{_GOOD_HEAD}x.{_GOOD_BODY}.{_GOOD_SIG}",  # header length not valid base64
        f"{_b64(b'not json')}.{_GOOD_BODY}.{_GOOD_SIG}",
        f"{_b64(b'{')}.{_GOOD_BODY}.{_GOOD_SIG}",
        f"é{_GOOD_HEAD}.{_GOOD_BODY}.{_GOOD_SIG}",  # non-ASCII
        f"{_GOOD_HEAD}.{_GOOD_BODY}.{_GOOD_SIG}é",
        f"{_GOOD_HEAD}.é{_GOOD_BODY}.{_GOOD_SIG}",
        f"{_NOT_UTF8}.{_GOOD_BODY}.{_GOOD_SIG}",
        f"{_b64(b'[' * 3000)}.{_GOOD_BODY}.{_GOOD_SIG}",  # hostile nesting
    ],
    ids=["bad-b64-header", "header-not-json", "header-truncated", "non-ascii-header",
         "non-ascii-sig", "non-ascii-body", "header-not-utf8", "deeply-nested-header"],
)
def test_bad_encoding(token: str) -> None:
    with pytest.raises(TokenError):
        verify_token(token, [SECRET], now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "none", "typ": "JWT"},
        {"alg": "HS512", "typ": "JWT"},
        {"alg": "RS256", "typ": "JWT"},
        {"typ": "JWT"},
        ["HS256"],
        "HS256",
        None,
    ],
    ids=["none", "hs512", "rs256", "missing", "list", "string", "null"],
)
def test_algorithm_must_be_hs256(header: Any) -> None:
    with pytest.raises(TokenError):
        verify_token(_sign(header, _claims()), [SECRET], now=NOW)
    # The classic "alg: none" attack: no signature at all.
    unsigned = f"{_b64(json.dumps(header).encode())}.{_GOOD_BODY}."
    with pytest.raises(TokenError):
        verify_token(unsigned, [SECRET], now=NOW)


@pytest.mark.parametrize(
    "raw_claims",
    [b"[1, 2]", b'"alice"', b"42", b"null", b"not json", b"\xff", b"[" * 3000],
    ids=["array", "string", "number", "null", "not-json", "not-utf8", "deep"],
)
def test_signed_but_non_object_claims(raw_claims: bytes) -> None:
    with pytest.raises(TokenError) as info:
        verify_token(_sign(_HS256, None, raw_claims=raw_claims), [SECRET], now=NOW)
    assert type(info.value) is TokenError


@pytest.mark.parametrize(
    "claims",
    [
        _claims(sub=_DROP),
        _claims(sub=""),
        _claims(sub=42),
        _claims(kind=_DROP),
        _claims(kind="admin"),
        _claims(kind="Player"),
        _claims(kind=["player"]),
        _claims(exp=_DROP),
        _claims(exp="1700000060"),
        _claims(exp=True),
        _claims(exp=None),
        _claims(exp=float("nan")),
        _claims(exp=float("inf")),
        _claims(exp=float("-inf")),
        _claims(rooms="lobby"),
        _claims(rooms=["lobby", 3]),
        _claims(rooms={"lobby": 1}),
        _claims(pub="chat"),
        _claims(pub=[None]),
        _claims(pub=None),
    ],
    ids=["no-sub", "empty-sub", "int-sub", "no-kind", "bad-kind", "kind-case", "list-kind",
         "no-exp", "str-exp", "bool-exp", "null-exp", "nan-exp", "inf-exp", "neg-inf-exp",
         "rooms-str", "rooms-int-item",
         "rooms-map", "pub-str", "pub-null-item", "pub-null"],
)
def test_bad_claims(claims: dict[str, Any]) -> None:
    with pytest.raises(TokenError) as info:
        verify_token(_sign(_HS256, claims), [SECRET], now=NOW)
    assert type(info.value) is TokenError


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_exp_must_be_finite(literal: str) -> None:
    """Python's json accepts NaN and the infinities.  A NaN ``exp`` would make
    ``exp <= now`` always false (a token that never expires), ``Infinity`` too;
    both are refused as a bad claim (4401), and so is ``-Infinity`` (not 4402)."""
    raw = b'{"sub": "alice", "kind": "player", "rooms": ["*"], "exp": ' + literal.encode() + b"}"
    with pytest.raises(TokenError) as info:
        verify_token(_sign(_HS256, None, raw_claims=raw), [SECRET], now=NOW)
    assert type(info.value) is TokenError
    assert info.value.code is ErrorCode.UNAUTHORIZED


def test_large_finite_exp_is_accepted() -> None:
    claims = verify_token(_sign(_HS256, _claims(exp=1e300)), [SECRET], now=NOW)
    assert claims.expires_at == 1e300


def test_missing_rooms_means_no_rooms() -> None:
    claims = verify_token(_sign(_HS256, _claims(rooms=_DROP)), [SECRET], now=NOW)
    assert claims.rooms == () == claims.publish
    assert not claims.may_join("lobby")
    assert not claims.may_publish("lobby")


def test_unknown_claims_are_ignored() -> None:
    token = _sign(_HS256, _claims(aud="game", nbf=0, extra={"x": 1}))
    assert verify_token(token, [SECRET], now=NOW).subject == "alice"


# -- strict base64url -----------------------------------------------------------------


def _sign_text(head: str, body: str, secret: bytes = SECRET) -> str:
    """A token whose header and claims segments are exactly ``head`` and ``body``
    (whatever their spelling), with a valid signature over that text: only the
    strictness of the base64url decoder can refuse it."""
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def _insert(segment: str, junk: str) -> str:
    return segment[:4] + junk + segment[4:]


_JUNK = [" ", "\n", "\t", "!", "*", "~", "\x00", "=", "=="]
_JUNK_IDS = ["space", "newline", "tab", "bang", "star", "tilde", "nul", "inner-pad", "inner-pad2"]


@pytest.mark.parametrize("junk", _JUNK, ids=_JUNK_IDS)
def test_characters_outside_base64url_are_rejected(junk: str) -> None:
    """The decoder does not skip characters outside the alphabet (a lenient
    decoder drops them, so the same token would have many spellings)."""
    assert verify_token(_sign_text(_GOOD_HEAD, _GOOD_BODY), [SECRET], now=NOW).subject == "alice"
    with pytest.raises(TokenError):
        verify_token(f"{_GOOD_HEAD}.{_GOOD_BODY}.{_insert(_GOOD_SIG, junk)}", [SECRET], now=NOW)
    for head, body in ((_insert(_GOOD_HEAD, junk), _GOOD_BODY),
                       (_GOOD_HEAD, _insert(_GOOD_BODY, junk))):
        with pytest.raises(TokenError) as info:
            verify_token(_sign_text(head, body), [SECRET], now=NOW)
        assert type(info.value) is TokenError


def test_base64url_segments_without_padding_decode() -> None:
    # Every length a base64url segment can have without padding (len % 4 != 1).
    for n in range(1, 40):
        sub = "x" * n
        token = _sign(_HS256, _claims(sub=sub))
        assert verify_token(token, [SECRET], now=NOW).subject == sub


def _std_alphabet_token() -> tuple[str, str]:
    """A valid token whose claims segment contains ``-`` or ``_``, and the same
    token spelled with the standard alphabet (``+``, ``/``) and re-signed."""
    for i in range(1000):
        body = _b64(json.dumps(_claims(sub=f"alice-{i}?>")).encode())
        if "-" in body or "_" in body:
            std = body.replace("-", "+").replace("_", "/")
            return _sign_text(_GOOD_HEAD, body), _sign_text(_GOOD_HEAD, std)
    raise AssertionError("no claims segment with - or _")


def test_url_safe_alphabet_spelling_verifies() -> None:
    url_safe, _ = _std_alphabet_token()
    assert verify_token(url_safe, [SECRET], now=NOW).subject.startswith("alice-")


def _std_sig(token: str) -> str:
    head, body, sig = token.split(".")
    assert "-" in sig or "_" in sig
    return f"{head}.{body}.{sig.replace('-', '+').replace('_', '/')}"


def _token_with_url_safe_sig() -> str:
    for i in range(1000):
        token = mint_token(SECRET, f"alice-{i}", now=NOW)
        if "-" in token.split(".")[2] or "_" in token.split(".")[2]:
            return token
    raise AssertionError("no signature with - or _")


def _padded_claims_token() -> str:
    """Claims segment of a length divisible by 4 followed by ``==``, signed as spelled."""
    for i in range(100):
        body = _b64(json.dumps(_claims(sub="a" * i)).encode())
        if len(body) % 4 == 0:
            return _sign_text(_GOOD_HEAD, body + "==")
    raise AssertionError("no claims segment of length 4k")


def _non_canonical_last_char(token: str) -> str:
    """Flip the unused low bits of the signature's last character: a 32-byte
    signature is 43 characters, the last one carries 4 bits and 2 unused ones."""
    head, body, sig = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(sig[-1]) ^ 0b01]
    return f"{head}.{body}.{sig[:-1]}{last}"


@pytest.mark.parametrize(
    "spelling",
    [
        "std-alphabet-claims",
        "std-alphabet-signature",
        "padded-signature",
        "padded-claims",
        "non-canonical-signature",
    ],
)
def test_token_has_one_spelling(spelling: str) -> None:
    """Strict base64url: only ``A-Z a-z 0-9 - _``, no padding, canonical.

    The signature segment is not covered by the HMAC, so every other spelling
    of it is a different token string that would verify."""
    if spelling == "std-alphabet-claims":
        token = _std_alphabet_token()[1]
    elif spelling == "std-alphabet-signature":
        token = _std_sig(_token_with_url_safe_sig())
    elif spelling == "padded-signature":
        token = _GOOD + "="
    elif spelling == "padded-claims":
        token = _padded_claims_token()
    else:
        token = _non_canonical_last_char(_GOOD)
    assert token != _GOOD
    with pytest.raises(TokenError):
        verify_token(token, [SECRET], now=NOW)


# -- room patterns -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "room", "allowed"),
    [
        (("*",), "lobby", True),
        (("*",), "a/b/c", True),  # '*' also crosses '/' (fnmatch, not glob paths)
        (("lobby-*",), "lobby-1", True),
        (("lobby-*",), "lobby-", True),
        (("lobby-*",), "lobby", False),
        (("lobby-*",), "xlobby-1", False),  # anchored at the start
        (("lobby-*",), "Lobby-1", False),  # case-sensitive
        (("lobby",), "lobby", True),
        (("lobby",), "lobby-2", False),  # anchored at the end
        (("match-?",), "match-7", True),
        (("match-?",), "match-", False),
        (("match-?",), "match-17", False),
        (("match-??",), "match-17", True),
        (("room-[12]",), "room-2", True),
        (("room-[12]",), "room-3", False),
        (("chat", "lobby-*"), "lobby-9", True),
        (("chat", "lobby-*"), "chat", True),
        (("chat", "lobby-*"), "match-1", False),
        ((), "lobby", False),
    ],
)
def test_room_allowed(patterns: tuple[str, ...], room: str, allowed: bool) -> None:
    assert room_allowed(patterns, room) is allowed


def test_publish_defaults_to_rooms() -> None:
    token = mint_token(SECRET, "alice", rooms=["lobby-*"], now=NOW)
    claims = verify_token(token, [SECRET], now=NOW)
    assert claims.publish == claims.rooms == ("lobby-*",)
    assert claims.may_join("lobby-1") and claims.may_publish("lobby-1")
    assert not claims.may_join("match-1") and not claims.may_publish("match-1")


def test_publish_narrower_than_rooms() -> None:
    token = mint_token(SECRET, "alice", rooms=["lobby-*", "news"], publish=["lobby-*"], now=NOW)
    claims = verify_token(token, [SECRET], now=NOW)
    assert claims.may_join("news") and not claims.may_publish("news")
    assert claims.may_publish("lobby-3")


def test_empty_publish_list_is_read_only() -> None:
    token = mint_token(SECRET, "viewer", rooms=["*"], publish=[], now=NOW)
    claims = verify_token(token, [SECRET], now=NOW)
    assert claims.publish == ()
    assert claims.may_join("anything")
    assert not claims.may_publish("anything")
