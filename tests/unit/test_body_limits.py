"""The origin's request-body bounds: JSON depth scan (the HTTP behaviour is tested in
``tests/integration/test_origin_api.py``)."""

from __future__ import annotations

import pytest

from origin.body_limits import json_depth_exceeds


@pytest.mark.parametrize(("body", "limit", "over"), [
    (b"{}", 1, False),
    (b"[[]]", 1, True),
    (b"[[]]", 2, False),
    (b'{"a": [1, {"b": 2}]}', 3, False),
    (b'{"a": [1, {"b": 2}]}', 2, True),
    (b'{"s": "[[[[[[[[{{{{{{{{"}', 1, False),        # brackets in a string
    (b'{"s": "\\"[[[["}', 1, False),                  # an escaped quote does not end it
    (b'{"s": "\\\\", "t": [[[]]]}', 4, False),        # an escaped backslash does
    (b'{"s": "\\\\", "t": [[[]]]}', 3, True),
    (b"[]" * 10_000, 1, False),                       # depth, not count
    (b"[" * 40 + b"]" * 40, 32, True),
    (b"", 0, False),
])
def test_json_depth(body: bytes, limit: int, over: bool) -> None:
    assert json_depth_exceeds(body, limit) is over
