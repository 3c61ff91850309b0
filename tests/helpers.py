"""Helpers shared by the integration tests (plain functions; fixtures live in conftest)."""

from __future__ import annotations

import asyncio
import struct
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest

from client_sdk import ReceivedMessage
from edge_node.local.origin_api import OriginProcess, spawn_api

#: Token signing key of the test edges (``tests/conftest.py`` starts them with it).
SECRET = b"test-secret"


def uid(prefix: str) -> str:
    """A name no other test (or earlier run against the same Redis) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 3.0,
                     what: str = "condition") -> None:
    """Poll ``check`` until it is true; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


async def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    """``(status, content type, body)`` of a GET, off the event loop."""
    return await asyncio.to_thread(_get, url, headers)


#: Payload of the ordering tests: ``(publisher index, sequence number)``.
PAIR = struct.Struct("!II")


async def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a plain predicate until true; ``AssertionError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Recorder:
    """An ``on_message`` callback collecting ``(publisher, n)`` pairs in arrival order."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def __call__(self, m: ReceivedMessage) -> None:
        self.seen.append(PAIR.unpack_from(m.payload))


def origin_api(redis_url: str, tmp_path_factory: pytest.TempPathFactory, api_keys: str,
               secret: bytes = SECRET) -> Iterator[OriginProcess]:
    """Body of a module-scoped ``origin`` fixture: ``python -m origin run`` (API + one
    worker, 4 shards) against ``redis_url``, stopped afterwards.  ``yield from`` it."""
    log = tmp_path_factory.mktemp("origin") / "origin.log"
    p = spawn_api(redis_url, "--workers", "1", "--shards", "4", command="run",
                  env={"ORIGIN_API_KEYS": api_keys, "EDGE_RELAY_SECRET": secret.decode()},
                  log_path=str(log))
    try:
        yield p
    finally:
        p.stop()
