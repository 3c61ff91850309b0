"""Layering rules, checked on the source with :mod:`ast` (nothing is imported).

- Nothing under ``client_sdk`` imports ``edge_node``, ``origin`` or ``bench``:
  the SDK is the bottom layer that everything else builds on.
- ``client_sdk/protocol`` is sans-I/O: it imports no event loop, no network,
  TLS, Redis or threading library (the client core, ``protocol/connection.py``,
  included).
- Nothing under ``client_sdk`` imports ``websockets``: the SDK speaks WebSocket
  through its own link (``client_sdk/transport/ws.py``).
- ``edge_node/rooms`` (the room machines) is sans-I/O in the same way, reads no
  clock (``time``), and imports nothing of the edge but itself: the driver uses the
  machines, never the reverse.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "client_sdk"
PROTOCOL = SDK / "protocol"

SDK_FORBIDDEN = frozenset({"edge_node", "origin", "bench"})
PROTOCOL_FORBIDDEN = SDK_FORBIDDEN | {
    "asyncio",
    "websockets",
    "aioquic",
    "redis",
    "uvloop",
    "socket",
    "ssl",
    "selectors",
    "threading",
    # Same spirit, not in the original list: other loops, Redis clients, workers.
    "valkey",
    "trio",
    "anyio",
    "multiprocessing",
    "concurrent",
}


ROOMS = ROOT / "edge_node" / "rooms"
#: The edge's modules the room machines may import (their own package only).
_EDGE_MODULES = frozenset(
    f"edge_node.{p.stem}" for p in (ROOT / "edge_node").glob("*.py") if p.stem != "__init__"
) | frozenset(f"edge_node.{p.name}" for p in (ROOT / "edge_node").iterdir()
              if p.is_dir() and p.name not in ("rooms", "__pycache__"))
ROOMS_FORBIDDEN = (PROTOCOL_FORBIDDEN - {"edge_node"}) | _EDGE_MODULES | {"time", "origin",
                                                                         "bench"}


def module_name(path: Path, root: Path = ROOT) -> str:
    """``client_sdk/protocol/codec.py`` -> ``client_sdk.protocol.codec``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str | None, level: int, importer: str, is_package: bool) -> str:
    """Absolute name of ``from <level dots><module> import ...`` inside ``importer``."""
    if level == 0:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    # Going above the top-level package cannot import anything real, but resolve
    # it to the bare name anyway so that ``from ...edge_node import x`` is caught.
    base = base[: max(len(base) - (level - 1), 0)]
    return ".".join([*base, module] if module else base)


def imported_names(
    source: str, importer: str = "client_sdk.x", is_package: bool = False
) -> set[str]:
    """Every absolute module name ``source`` may import, wherever the statement is
    (functions, ``if TYPE_CHECKING:`` blocks and ``try`` blocks included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module, node.level, importer, is_package)
            if base:
                names.add(base)
            # ``from pkg import sub`` may import the submodule ``pkg.sub``.
            names.update(f"{base}.{a.name}" if base else a.name for a in node.names
                         if a.name != "*")
        elif isinstance(node, ast.Call):
            # importlib.import_module("x") / __import__("x") with a literal name.
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if (
                fname in ("import_module", "__import__")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names.add(node.args[0].value)
    return names


def violations(
    source: str, forbidden: frozenset[str] | set[str], importer: str = "client_sdk.x",
    is_package: bool = False,
) -> list[str]:
    """Imported names whose top-level package (or any dotted prefix) is forbidden."""
    bad = []
    for name in sorted(imported_names(source, importer, is_package)):
        parts = name.split(".")
        if any(".".join(parts[: i + 1]) in forbidden for i in range(len(parts))):
            bad.append(name)
    return bad


def _files(top: Path) -> list[Path]:
    return sorted(p for p in top.rglob("*.py") if "__pycache__" not in p.parts)


def _check_tree(top: Path, forbidden: frozenset[str]) -> list[str]:
    problems: list[str] = []
    for path in _files(top):
        found = violations(
            path.read_text(encoding="utf-8"),
            forbidden,
            importer=module_name(path),
            is_package=path.name == "__init__.py",
        )
        problems.extend(f"{path.relative_to(ROOT)}: imports {name}" for name in found)
    return problems


# -- the rules -------------------------------------------------------------------


def test_trees_exist() -> None:
    names = {p.name for p in _files(PROTOCOL)}
    assert {"__init__.py", "codec.py", "messages.py", "tokens.py"} <= names


def test_client_sdk_does_not_import_servers_or_bench() -> None:
    assert _check_tree(SDK, SDK_FORBIDDEN) == []


def test_protocol_is_sans_io() -> None:
    assert _check_tree(PROTOCOL, PROTOCOL_FORBIDDEN) == []
    assert (PROTOCOL / "connection.py").is_file()  # the client core is under the rule


def test_client_sdk_does_not_import_websockets() -> None:
    assert _check_tree(SDK, frozenset({"websockets"})) == []
    assert violations("from websockets.exceptions import ConnectionClosed",
                      frozenset({"websockets"})) == ["websockets.exceptions",
                                                     "websockets.exceptions.ConnectionClosed"]


def test_room_machines_are_sans_io_and_import_nothing_of_the_edge_above_them() -> None:
    assert {"edge_node.fanout", "edge_node.store", "edge_node.server"} <= ROOMS_FORBIDDEN
    assert {p.name for p in _files(ROOMS)} >= {"machine.py", "events.py", "replay.py"}
    assert _check_tree(ROOMS, ROOMS_FORBIDDEN) == []


@pytest.mark.parametrize("source", [
    "import time", "from time import monotonic", "from edge_node.fanout.hub import Hub",
    "from ..store.redis_sync import RoomSync", "from .. import server", "import asyncio",
    "from redis.asyncio import Redis",
])
def test_rooms_checker_flags_bad_sources(source: str) -> None:
    assert violations(source, ROOMS_FORBIDDEN, importer="edge_node.rooms.machine")


@pytest.mark.parametrize("source", [
    "from .events import Pos", "from . import events", "from client_sdk.protocol import encode",
    "import enum", "from collections import deque",
])
def test_rooms_checker_accepts_clean_sources(source: str) -> None:
    assert violations(source, ROOMS_FORBIDDEN, importer="edge_node.rooms.machine") == []


# -- the checker itself must be able to fail ----------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import asyncio.tasks",
        "import os, socket as s",
        "from asyncio import sleep",
        "from asyncio.tasks import Task",
        "from concurrent.futures import ThreadPoolExecutor",
        "import ssl\n",
        "def f():\n    import threading\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import websockets\n",
        "try:\n    import uvloop\nexcept ImportError:\n    pass\n",
        "from redis.asyncio import Redis",
        "from aioquic.quic.connection import QuicConnection",
        "import selectors",
        "import importlib\nimportlib.import_module('socket')",
        "__import__('asyncio')",
        "from edge_node.hub import Hub",
        "import origin.api",
        "from bench import scenarios",
        "from ... import edge_node",
        "from ...edge_node import config",
    ],
)
def test_checker_flags_bad_sources(source: str) -> None:
    assert violations(source, PROTOCOL_FORBIDDEN, importer="client_sdk.protocol.codec")


@pytest.mark.parametrize(
    "source",
    [
        "import json\nimport hmac",
        "from .codec import encode",
        "from . import codes",
        "from .. import protocol",
        "from client_sdk.protocol import decode",
        "import msgpack",
        "import socketserver_like, asyncio_compat, originals",  # prefixes are per component
        "x = 'import asyncio'",
        "from __future__ import annotations",
    ],
)
def test_checker_accepts_clean_sources(source: str) -> None:
    assert violations(source, PROTOCOL_FORBIDDEN, importer="client_sdk.protocol.codec") == []


def test_checker_resolves_relative_imports() -> None:
    assert imported_names("from .codec import encode", "client_sdk.protocol.messages") == {
        "client_sdk.protocol.codec",
        "client_sdk.protocol.codec.encode",
    }
    assert "client_sdk.protocol" in imported_names(
        "from . import codes", "client_sdk.protocol", is_package=True
    )
    assert "client_sdk" in imported_names("from .. import x", "client_sdk.protocol.codec")


def test_checker_catches_a_bad_file_in_a_tree(tmp_path: Path) -> None:
    pkg = tmp_path / "client_sdk" / "protocol"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .wire import x\n")
    (pkg / "wire.py").write_text("import json\nfrom asyncio.streams import StreamReader\n")
    found = [
        (module_name(p, tmp_path), violations(p.read_text(), PROTOCOL_FORBIDDEN,
                                              module_name(p, tmp_path),
                                              p.name == "__init__.py"))
        for p in _files(tmp_path)
    ]
    assert found == [
        ("client_sdk.protocol", []),
        ("client_sdk.protocol.wire", ["asyncio.streams", "asyncio.streams.StreamReader"]),
    ]
