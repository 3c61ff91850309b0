"""API key scopes: parsing ``ORIGIN_API_KEYS`` entries and what each scope allows."""

from __future__ import annotations

from origin.scopes import SCOPES, allows, parse_key


def test_a_bare_key_may_do_everything_and_scopes_narrow_it() -> None:
    assert parse_key("s3cret") == ("s3cret", frozenset(SCOPES))
    key, scopes = parse_key("game-client:discover")
    assert key == "game-client" and scopes == {"discover"}
    assert parse_key("dash:read")[1] == {"read", "discover"}
    assert parse_key("svc:mint+read")[1] == {"mint", "read", "discover"}
    assert parse_key("ops:admin")[1] == frozenset(SCOPES)


def test_a_key_containing_colons_is_kept_whole_unless_the_suffix_is_scopes() -> None:
    assert parse_key("a:b:c") == ("a:b:c", frozenset(SCOPES))
    assert parse_key("a:b:read") == ("a:b", frozenset({"read", "discover"}))
    assert parse_key("k:read+bogus") == ("k:read+bogus", frozenset(SCOPES))
    assert parse_key(":read") == (":read", frozenset(SCOPES))


def test_allows() -> None:
    discover = parse_key("k:discover")[1]
    assert allows(discover, "discover") and not allows(discover, "read")
    assert not allows(discover, "mint") and not allows(discover, "admin")
    mint = parse_key("k:mint")[1]
    assert allows(mint, "mint") and not allows(mint, "discover")
