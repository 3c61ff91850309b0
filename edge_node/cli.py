"""The edge's own commands of ``edge-relay``: run an edge, mint a token, make a certificate.

The launcher that gathers every command (local cluster, demo, origin, benchmarks)
is :mod:`edge_node.local.launcher`.

Every command has ``--help``.  User mistakes (bad flags, no Redis found, a
port in use) print one clear line and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import sys
import time
from typing import Any

from client_sdk.protocol import KINDS, Limits, mint_token
from edge_node.config import DEV_SECRET, EdgeSettings, secrets_from_env
from edge_node.functions.options import add_function_args
from edge_node.iot.detect import MODES as IOT_MODES
from edge_node.iot.detect import DetectorSettings
from edge_node.runtime.gc_tuning import tune_gc
from edge_node.uplink.spool import OVERFLOW_POLICIES, SYNC_MODES

__all__ = ["UserError", "add_edge_commands", "cmd_edge", "install_uvloop",
           "settings_from_args"]


class UserError(Exception):
    """A mistake the user can fix; printed without a traceback."""


#: The edge's default QUIC datagram bound is already the most one packet carries.
_MAX_DGRAM = EdgeSettings().quic_max_datagram
#: The detector clears an alert below this score.
_IOT_Z_OFF = DetectorSettings().z_off


def _env(name: str, default: str) -> str:
    return os.environ.get(f"EDGE_RELAY_{name}", default)


def _env_number(name: str, default: float, kind: type[float]) -> float:
    raw = os.environ.get(f"EDGE_RELAY_{name}")
    if raw is None:
        return default
    try:
        return kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise UserError(f"EDGE_RELAY_{name}={raw!r} is not {what}") from None


def _env_int(name: str, default: int) -> int:
    """``EDGE_RELAY_<name>`` as an integer, else ``default``; :class:`UserError` when it
    is set to something else."""
    return int(_env_number(name, default, int))


def _env_float(name: str, default: float) -> float:
    """``EDGE_RELAY_<name>`` as a number, else ``default``; :class:`UserError` when it is
    set to something else."""
    return _env_number(name, default, float)


def _add_edge_args(p: argparse.ArgumentParser) -> None:
    d = EdgeSettings()
    p.add_argument("--edge-id", default=_env("EDGE_ID", d.edge_id), help="unique edge name")
    p.add_argument("--host", default=_env("HOST", d.host), help="listen address")
    p.add_argument("--port", type=int, default=_env_int("PORT", d.port),
                   help="WebSocket/HTTP port (0 = any free port)")
    p.add_argument("--public-url", default=_env("PUBLIC_URL", ""),
                   help="URL clients use to reach this edge (default ws://HOST:PORT)")
    p.add_argument("--region", default=_env("REGION", d.region), help="region label")
    p.add_argument("--position", default=_env("POSITION", ""), metavar="LAT,LON",
                   help="where this edge is, in degrees (e.g. 48.85,2.35): discovery and "
                        "neighbour lists are ordered by distance")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""),
                   help="Redis URL (env REDIS_URL); empty = run without Redis")
    wr = os.environ.get("REDIS_WAIT_REPLICAS", "")
    p.add_argument("--redis-wait-replicas", type=int, default=int(wr) if wr.strip() else None,
                   metavar="N", help="replicas that must confirm a room append before the "
                   "publish is acknowledged (env REDIS_WAIT_REPLICAS; default 1 on a Redis "
                   "Cluster, 0 on one server)")
    p.add_argument("--presence-grace", type=float,
                   default=_env_float("PRESENCE_GRACE", d.presence_grace),
                   help="seconds a member whose connection was lost stays present (its "
                   "session may resume) before its leave is told; 0 = at once "
                   "(default %(default)s)")
    p.add_argument("--ping-interval", type=float,
                   default=_env_float("PING_INTERVAL", d.ping_interval),
                   help="seconds between server pings (default %(default)s)")
    p.add_argument("--ping-timeout", type=float,
                   default=_env_float("PING_TIMEOUT", d.ping_timeout),
                   help="seconds to wait for a pong before closing (default %(default)s)")
    p.add_argument("--message-timeout", type=float,
                   default=_env_float("MESSAGE_TIMEOUT", d.message_timeout),
                   help="seconds a client has to complete a message once it began "
                   "(fragments or bytes trickled past it: close 4008; default %(default)s)")
    p.add_argument("--max-frame-bytes", type=int,
                   default=_env_int("MAX_FRAME_BYTES", Limits().max_frame_bytes),
                   help="largest inbound frame, bytes; larger gets ERROR 4413 "
                   "(default %(default)s, at least 256)")
    p.add_argument("--max-rooms", type=int,
                   default=_env_int("MAX_ROOMS", Limits().max_rooms_per_connection),
                   help="rooms per connection")
    p.add_argument("--send-queue-bytes", type=int,
                   default=_env_int("SEND_QUEUE_BYTES", d.send_queue_bytes),
                   help="per-client send queue bound, bytes; a client over it is closed "
                   "with 4001 (slow consumer; default %(default)s)")
    p.add_argument("--write-delay-ms", type=float,
                   default=_env_float("WRITE_DELAY_MS", d.write_delay * 1000),
                   help="collect each client's frames this long before writing them "
                        "(fewer system calls under load, that much more latency; "
                        "default %(default)s = every loop tick)")
    p.add_argument("--write-interval-ms", type=float,
                   default=_env_float("WRITE_INTERVAL_MS", d.write_interval * 1000),
                   help="write to a client at most once per this interval: a frame after a "
                        "quiet interval goes at once, under load frames leave together "
                        "(no added latency at low rates, at most this much at high ones; "
                        "default %(default)s = every loop tick)")
    p.add_argument("--rate", type=float, default=_env_float("RATE_PER_SEC", d.rate_per_sec),
                   help="inbound frames/s per connection (kind=service exempt)")
    p.add_argument("--burst", type=float, default=_env_float("RATE_BURST", d.rate_burst),
                   help="inbound frames a connection may send at once above --rate "
                   "(token bucket size; default %(default)s)")
    p.add_argument("--stream-maxlen", type=int,
                   default=_env_int("STREAM_MAXLEN", d.stream_maxlen),
                   help="approximate cap of each room stream (entries)")
    p.add_argument("--backlog", type=int, default=_env_int("BACKLOG", d.backlog),
                   help="TCP listen backlog (reconnect storms need >= 1024; "
                   "default %(default)s)")
    p.add_argument("--resume-window", type=float,
                   default=_env_float("RESUME_WINDOW", d.resume_window),
                   help="seconds a dropped session can resume (default %(default)s)")
    p.add_argument("--lease-ms", type=int, default=_env_int("LEASE_MS", d.lease_ms),
                   help="room owner lease in ms; a dead owner's rooms move after it lapses")
    p.add_argument("--append-linger-ms", type=float,
                   default=_env_float("APPEND_LINGER_MS", d.append_linger * 1000),
                   help="wait this long for more messages before each history append "
                   "(fewer Redis round trips, later cross-edge delivery; default %(default)s)")
    p.add_argument("--drain-window", type=float,
                   default=_env_float("DRAIN_WINDOW", d.drain_window),
                   help="on SIGTERM, spread client handoffs over this many seconds")
    p.add_argument("--drain-timeout", type=float,
                   default=_env_float("DRAIN_TIMEOUT", d.drain_timeout),
                   help="then wait at most this long for clients to move")
    p.add_argument("--connect-rate", type=float,
                   default=_env_float("CONNECT_RATE", d.connect_rate),
                   help="new connections per second before 503 + retry hint")
    p.add_argument("--max-connections", type=int,
                   default=_env_int("MAX_CONNECTIONS", d.max_connections),
                   help="client sessions held at most, then 503 + retry hint (default 0: "
                   "the open-file limit, raised to its hard limit at start, minus 256)")
    p.add_argument("--uplink-spool", default=_env("UPLINK_SPOOL", ""),
                   help="SQLite file spooling origin-bound data while Redis is unreachable "
                   "(default: in memory, lost on a crash)")
    p.add_argument("--uplink-spool-max", type=int,
                   default=_env_int("UPLINK_SPOOL_MAX", d.uplink_spool_max),
                   help="most entries the uplink spool holds (default %(default)s)")
    p.add_argument("--uplink-overflow", choices=OVERFLOW_POLICIES,
                   default=_env("UPLINK_OVERFLOW", d.uplink_overflow),
                   help="when the spool is full: drop its oldest entries, or refuse new "
                   "ones (default %(default)s)")
    p.add_argument("--uplink-fsync", choices=SYNC_MODES, type=str.upper,
                   default=_env("UPLINK_FSYNC", d.uplink_fsync),
                   help="spool durability (SQLite synchronous): FULL survives power loss, "
                   "NORMAL a process crash, OFF only if the OS does not crash "
                   "(default %(default)s)")
    p.add_argument("--uplink-shards", type=int,
                   default=_env_int("UPLINK_SHARDS", d.uplink_shards),
                   help="uplink streams to the origin; must equal the origin's --shards "
                        "(checked at start; default %(default)s)")
    p.add_argument("--uplink-rooms", default=_env("UPLINK_ROOMS", ""),
                   help="comma-separated room patterns whose messages also go to the origin")
    p.add_argument("--room-delivery", action="append", default=[], metavar="PATTERN=POLICY",
                   help="default delivery policy for a slow reader in rooms named PATTERN: "
                   "all, latest, drop or disconnect (repeatable, first match wins; also "
                   "EDGE_RELAY_ROOM_DELIVERY, comma-separated; a JOIN may choose its own; "
                   "docs/protocol.md)")
    p.add_argument("--room-handler", action="append", default=[], metavar="PATTERN=MOD:CLASS",
                   help="run game rooms: rooms named PATTERN (with * wildcards) run the "
                   "RoomHandler subclass MOD:CLASS on their owner edge (repeatable; also "
                   "EDGE_RELAY_ROOM_HANDLERS, comma-separated, and the 'edge_relay.rooms' "
                   "entry points; docs/rooms.md)")
    add_function_args(p)
    p.add_argument("--max-replay", type=int,
                   default=_env_int("MAX_REPLAY", d.max_replay),
                   help="most messages replayed per room on resume")
    qp = _env("QUIC_PORT", "")
    p.add_argument("--quic-port", type=int, default=int(qp) if qp.strip() else None,
                   help="also listen for QUIC and WebTransport on this UDP port "
                   "(0 = any free port; default: QUIC off)")
    p.add_argument("--quic-cert", default=_env("QUIC_CERT", ""),
                   help="PEM certificate for QUIC (default: a development certificate made "
                   "at start; see `edge-relay cert`)")
    p.add_argument("--quic-key", default=_env("QUIC_KEY", ""), help="PEM private key for QUIC")
    p.add_argument("--quic-public-url", default=_env("QUIC_PUBLIC_URL", ""),
                   help="URL clients use to reach this edge over QUIC "
                   "(default quic://HOST:QUIC_PORT)")
    p.add_argument("--quic-idle-timeout", type=float,
                   default=_env_float("QUIC_IDLE_TIMEOUT", d.quic_idle_timeout),
                   help="seconds without packets before a QUIC connection is dropped")
    p.add_argument("--quic-max-datagram", type=int,
                   default=_env_int("QUIC_MAX_DATAGRAM", d.quic_max_datagram),
                   help=f"largest unreliable update sent as a QUIC datagram, bytes "
                   f"(0..{_MAX_DGRAM}; larger ones go on the stream; 0 = no datagrams; "
                   "default %(default)s)")
    p.add_argument("--quic-datagram-queue", type=int,
                   default=_env_int("QUIC_DATAGRAM_QUEUE", d.quic_datagram_queue),
                   help="datagrams queued per QUIC connection before the stalest is dropped "
                   "(default %(default)s)")
    p.add_argument("--quic-inbound-queue", type=int,
                   default=_env_int("QUIC_INBOUND_QUEUE", d.quic_inbound_queue),
                   help="inbound bytes queued per QUIC connection, unprocessed; over it "
                   "datagrams are dropped and a stream record closes with 4003 "
                   "(default %(default)s, at least --max-frame-bytes)")
    p.add_argument("--tls", action="store_true", default=_env("TLS", "") == "1",
                   help="serve wss:// (and https:// for /healthz, /metrics) on --port with "
                   "--tls-cert, else the --quic-cert pair (docs/deployment.md)")
    p.add_argument("--tls-cert", default=_env("TLS_CERT", ""),
                   help="PEM certificate (chain) for the WebSocket port; implies --tls; "
                   "re-read when the file changes")
    p.add_argument("--tls-key", default=_env("TLS_KEY", ""),
                   help="PEM private key for --tls-cert (default: the --tls-cert file)")
    p.add_argument("--tls-reload-interval", type=float,
                   default=_env_float("TLS_RELOAD_INTERVAL", d.tls_reload_interval),
                   help="seconds between checks of the TLS and QUIC certificate files "
                   "(0 = never; "
                   "default %(default)s)")
    p.add_argument("--log-format", choices=["json", "text"], default=_env("LOG_FORMAT", "json"),
                   help="log lines on stderr: one JSON object each, or text "
                   "(default %(default)s)")
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"),
                   help="logging level: DEBUG, INFO, WARNING, ERROR (default %(default)s)")
    add_iot_args(p)


def add_iot_args(p: argparse.ArgumentParser) -> None:
    """IoT flags (docs/iot.md)."""
    d = EdgeSettings()
    p.add_argument("--iot-window-ms", type=int,
                   default=_env_int("IOT_WINDOW_MS", d.iot_window_ms),
                   help="telemetry window length, ms (default 1000)")
    p.add_argument("--iot-grace-ms", type=int,
                   default=_env_int("IOT_GRACE_MS", d.iot_grace_ms),
                   help="how long a window waits for late samples, ms (default 500)")
    p.add_argument("--iot-raw", action="store_true", default=_env("IOT_RAW", "") == "1",
                   help="also forward raw samples to the origin")
    p.add_argument("--iot-alerts-room", default=_env("IOT_ALERTS_ROOM", d.iot_alerts_room),
                   help="room that receives anomaly alerts (default 'alerts'; '' = none)")
    p.add_argument("--iot-detector", choices=list(IOT_MODES),
                   default=_env("IOT_DETECTOR", d.iot_detector),
                   help="anomaly detector: likelihood (graded anomaly likelihood, one "
                   "alert per episode) or a z-score mode ewma|mad|both|any "
                   "(default %(default)s)")
    p.add_argument("--iot-z-on", type=float, default=_env_float("IOT_Z_ON", d.iot_z_on),
                   help="anomaly score that raises an alert (at least "
                   f"{_IOT_Z_OFF:g}, the score below which it clears; default %(default)s)")


def iot_settings_from_args(a: argparse.Namespace) -> dict[str, Any]:
    """The ``iot_*`` fields of :class:`EdgeSettings` from parsed arguments."""
    if a.iot_window_ms < 10 or a.iot_grace_ms < 0:
        raise UserError("--iot-window-ms must be >= 10 and --iot-grace-ms >= 0")
    if not a.iot_z_on >= _IOT_Z_OFF:
        raise UserError(f"--iot-z-on must be at least {_IOT_Z_OFF:g} (alerts clear below "
                        f"{_IOT_Z_OFF:g}), not {a.iot_z_on:g}")
    return {"iot_window_ms": a.iot_window_ms, "iot_grace_ms": a.iot_grace_ms,
            "iot_raw": a.iot_raw, "iot_alerts_room": a.iot_alerts_room,
            "iot_detector": a.iot_detector, "iot_z_on": a.iot_z_on}


def settings_from_args(a: argparse.Namespace) -> EdgeSettings:
    """Build :class:`EdgeSettings` from parsed ``edge`` arguments."""
    if a.port < 0 or a.port > 65535:
        raise UserError(f"--port must be 0..65535, not {a.port}")
    if a.max_frame_bytes < 256:
        raise UserError("--max-frame-bytes must be at least 256")
    if a.quic_port is not None and not 0 <= a.quic_port <= 65535:
        raise UserError(f"--quic-port must be 0..65535, not {a.quic_port}")
    if bool(a.quic_cert) != bool(a.quic_key) and not a.quic_cert:
        raise UserError("--quic-key needs --quic-cert")
    if a.quic_idle_timeout <= 0:
        raise UserError("--quic-idle-timeout must be positive")
    position = parse_position(a.position) if a.position else None
    if a.redis_url:
        from edge_node.redis_io.conn import RedisURLError, check_url

        try:
            check_url(a.redis_url)
        except RedisURLError as exc:
            raise UserError(f"{exc} (--redis-url or REDIS_URL)") from None
    if not 0 <= a.write_delay_ms <= 100:
        raise UserError("--write-delay-ms must be 0..100")
    if not 0 <= a.write_interval_ms <= 100:
        raise UserError("--write-interval-ms must be 0..100")
    if a.max_connections < 0:
        raise UserError("--max-connections must be 0 (from the open-file limit) or more")
    if a.uplink_shards < 1:
        raise UserError("--uplink-shards must be at least 1")
    # argparse checks choices only on the command line, not a default from the environment.
    if a.uplink_overflow not in OVERFLOW_POLICIES:
        raise UserError(f"EDGE_RELAY_UPLINK_OVERFLOW must be one of {', '.join(OVERFLOW_POLICIES)}"
                        f", not {a.uplink_overflow!r}")
    if a.uplink_fsync not in SYNC_MODES:
        raise UserError(f"EDGE_RELAY_UPLINK_FSYNC must be one of {', '.join(SYNC_MODES)}, "
                        f"not {a.uplink_fsync!r}")
    if a.uplink_spool_max < 1:
        raise UserError("--uplink-spool-max must be at least 1")
    if not 0 <= a.quic_max_datagram <= _MAX_DGRAM:
        raise UserError(f"--quic-max-datagram must be 0..{_MAX_DGRAM} (a datagram must fit "
                        "in one QUIC packet)")
    if a.quic_datagram_queue < 1:
        raise UserError("--quic-datagram-queue must be at least 1")
    if a.quic_inbound_queue < a.max_frame_bytes:
        raise UserError("--quic-inbound-queue must be at least --max-frame-bytes "
                        f"({a.max_frame_bytes})")
    soft = EdgeSettings().unreliable_drop_bytes
    if a.send_queue_bytes < 2 * soft:
        raise UserError(f"--send-queue-bytes must be at least {2 * soft} (twice the "
                        f"{soft // 1024} KiB soft limit: a slow reader's held messages "
                        "are released into the queue)")
    if a.presence_grace < 0:
        raise UserError("--presence-grace (EDGE_RELAY_PRESENCE_GRACE) must be 0 or more")
    if a.message_timeout <= 0:
        raise UserError("--message-timeout (EDGE_RELAY_MESSAGE_TIMEOUT) must be above 0 s")
    if a.redis_wait_replicas is not None and a.redis_wait_replicas < 0:
        raise UserError("--redis-wait-replicas (REDIS_WAIT_REPLICAS) must be 0 or more")
    return EdgeSettings(
        edge_id=a.edge_id, host=a.host, port=a.port, public_url=a.public_url, region=a.region,
        position=position, redis_url=a.redis_url,
        secrets=secrets_from_env(os.environ.get("EDGE_RELAY_SECRET")),
        limits=Limits(max_frame_bytes=a.max_frame_bytes, max_rooms_per_connection=a.max_rooms),
        ping_interval=a.ping_interval, ping_timeout=a.ping_timeout,
        presence_grace=a.presence_grace,
        message_timeout=a.message_timeout, send_queue_bytes=a.send_queue_bytes,
        write_delay=a.write_delay_ms / 1000.0, write_interval=a.write_interval_ms / 1000.0,
        rate_per_sec=a.rate, rate_burst=a.burst,
        stream_maxlen=a.stream_maxlen, backlog=a.backlog, log_format=a.log_format,
        resume_window=a.resume_window, lease_ms=a.lease_ms, max_replay=a.max_replay,
        append_linger=a.append_linger_ms / 1000.0, drain_window=a.drain_window,
        drain_timeout=a.drain_timeout, connect_rate=a.connect_rate,
        max_connections=a.max_connections,
        uplink_spool=a.uplink_spool, uplink_shards=a.uplink_shards,
        uplink_spool_max=a.uplink_spool_max, uplink_overflow=a.uplink_overflow,
        uplink_fsync=a.uplink_fsync, redis_wait_replicas=a.redis_wait_replicas,
        uplink_rooms=tuple(p for p in a.uplink_rooms.split(",") if p),
        room_handlers=room_handler_specs(a.room_handler, _env("ROOM_HANDLERS", "")),
        room_delivery=room_delivery_rules(a.room_delivery, _env("ROOM_DELIVERY", "")),
        **_function_fields(a),
        log_level=a.log_level, **iot_settings_from_args(a),
        quic_port=a.quic_port, quic_cert=a.quic_cert, quic_key=a.quic_key,
        quic_public_url=a.quic_public_url, quic_idle_timeout=a.quic_idle_timeout,
        quic_max_datagram=a.quic_max_datagram, quic_datagram_queue=a.quic_datagram_queue,
        quic_inbound_queue=a.quic_inbound_queue, **tls_settings_from_args(a),
    )


def _function_fields(a: argparse.Namespace) -> dict[str, Any]:
    from edge_node.functions.options import function_settings_from_args

    try:
        return function_settings_from_args(a)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def tls_settings_from_args(a: argparse.Namespace) -> dict[str, Any]:
    """The ``tls*`` fields of :class:`EdgeSettings`, checked (which files: see
    :func:`edge_node.transports.tls.tls_files`)."""
    from edge_node.transports.tls import TlsConfigError, tls_files

    fields = {"tls": a.tls, "tls_cert": a.tls_cert, "tls_key": a.tls_key,
              "tls_reload_interval": a.tls_reload_interval}
    if a.tls_reload_interval < 0:
        raise UserError("--tls-reload-interval must be 0 (never) or more seconds")
    try:
        tls_files(EdgeSettings(quic_cert=a.quic_cert, quic_key=a.quic_key, **fields))
    except TlsConfigError as exc:
        raise UserError(str(exc)) from None
    return fields


def room_handler_specs(flags: list[str], env: str) -> tuple[str, ...]:
    """Every ``PATTERN=module:Class`` spec (flags, then the environment variable, then
    installed entry points), each checked now: a bad one is a :class:`UserError`."""
    from edge_node.games.loader import HandlerRegistry, HandlerSpecError

    try:
        return tuple(HandlerRegistry.from_sources(flags, env).describe())
    except HandlerSpecError as exc:
        raise UserError(str(exc)) from None


def room_delivery_rules(flags: list[str], env: str) -> tuple[tuple[str, str], ...]:
    """``PATTERN=POLICY`` rules from the flags, then the comma-separated environment
    variable, each checked: a bad one is a :class:`UserError`."""
    from client_sdk.protocol import Delivery

    names = [d.value for d in Delivery]
    rules = []
    for spec in [*flags, *(x.strip() for x in env.split(",") if x.strip())]:
        pattern, sep, policy = spec.rpartition("=")
        if not sep or not pattern or policy not in names:
            raise UserError(f"--room-delivery takes PATTERN=POLICY with POLICY one of "
                            f"{', '.join(names)}, not {spec!r}")
        rules.append((pattern, policy))
    return tuple(rules)


def parse_position(text: str) -> tuple[float, float]:
    """``"LAT,LON"`` in degrees -> ``(lat, lon)``; :class:`UserError` when malformed."""
    try:
        lat_s, lon_s = text.split(",")
        lat, lon = float(lat_s), float(lon_s)
    except ValueError:
        raise UserError(f"--position must be LAT,LON in degrees, not {text!r}") from None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise UserError(f"--position out of range: {text!r} (lat -90..90, lon -180..180)")
    return lat, lon


def install_uvloop() -> None:
    """Use uvloop when it is installed (it is a dependency on Linux/macOS)."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def cmd_edge(a: argparse.Namespace) -> int:
    """Run one edge until SIGINT/SIGTERM."""
    from edge_node.runtime.fd_limits import raise_nofile_limit
    from edge_node.runtime.logs import setup_logging
    from edge_node.server import EdgeServer

    settings = settings_from_args(a)
    setup_logging(settings.log_format, settings.log_level, edge_id=settings.edge_id)
    if settings.secrets == (DEV_SECRET,):
        print("edge-relay: warning: using the development token secret; set EDGE_RELAY_SECRET",
              file=sys.stderr)

    raise_nofile_limit()  # one descriptor per client: take what the hard limit allows

    async def run() -> None:
        server = EdgeServer(settings)
        try:
            await server.start()
        except OSError as exc:
            raise UserError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
                            " (stop what uses that address or choose another --host/--port)"
                            ) from exc
        except RuntimeError as exc:
            raise UserError(str(exc)) from exc
        # What exists now (modules, settings, scripts, connection pools) lives as
        # long as the process: keep it out of every later collection, so the
        # collector's pauses scale with the live sessions, not with the imports;
        # and collect less often (edge_node/runtime/gc_tuning.py: full collections stalled
        # the loop 65-360 ms at 20,000 uplinked messages/s).
        tune_gc()
        stop = asyncio.Event()
        graceful = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, graceful.set)
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(graceful.wait()),
                   asyncio.create_task(server.drain_requested.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if (graceful.is_set() or server.drain_requested.is_set()) and not stop.is_set():
            # SIGTERM (deploys, Kubernetes preStop) or the origin's admin drain call:
            # hand clients over first.
            from edge_node.sessions.drain import drain

            drain_task = asyncio.create_task(drain(server))
            await asyncio.wait([drain_task, waiters[0]], return_when=asyncio.FIRST_COMPLETED)
            drain_task.cancel()  # a second signal (SIGINT) cuts the drain short
        for w in waiters:
            w.cancel()
        await server.stop()

    install_uvloop()
    asyncio.run(run())
    return 0


def cmd_token(a: argparse.Namespace) -> int:
    """Print a signed development token."""
    if not (math.isfinite(a.ttl) and a.ttl > 0):
        raise UserError(f"--ttl must be a positive number of seconds, not {a.ttl:g} "
                        "(a token that has already expired is refused by every edge)")
    secret = secrets_from_env(os.environ.get("EDGE_RELAY_SECRET"))[0]
    rooms = a.rooms.split(",") if a.rooms else ["*"]
    pub = a.publish.split(",") if a.publish else None
    metrics = parse_metric_ranges(a.metric) if a.metric else None
    if metrics is not None and a.kind != "device":
        raise UserError("--metric is for device tokens: add --kind device")
    print(mint_token(secret, a.subject, a.kind, rooms, publish=pub, metrics=metrics,
                     now=time.time(), ttl=a.ttl))
    return 0


def parse_metric_ranges(specs: list[str]) -> dict[str, tuple[float | None, float | None]]:
    """``["temp=-40:125", "hum=0:"]`` -> ``{"temp": (-40.0, 125.0), "hum": (0.0, None)}``;
    :class:`UserError` naming the bad spec."""
    out: dict[str, tuple[float | None, float | None]] = {}
    for spec in specs:
        name, sep, rng = spec.partition("=")
        lo_s, colon, hi_s = rng.partition(":")
        if not sep or not colon or not name.strip():
            raise UserError(f"--metric {spec!r}: expected NAME=MIN:MAX (a bound may be empty)")
        try:
            lo = float(lo_s) if lo_s.strip() else None
            hi = float(hi_s) if hi_s.strip() else None
        except ValueError:
            raise UserError(f"--metric {spec!r}: MIN and MAX must be numbers") from None
        if any(v is not None and not math.isfinite(v) for v in (lo, hi)) or (
                lo is not None and hi is not None and lo > hi):
            raise UserError(f"--metric {spec!r}: needs finite bounds with MIN <= MAX")
        out[name.strip()] = (lo, hi)
    return out


def cmd_cert(a: argparse.Namespace) -> int:
    """Write a self-signed development certificate and key; print its SHA-256."""
    from edge_node.transports.quic.tls import MAX_HASH_PIN_DAYS, write_self_signed

    if not 0 < a.days <= MAX_HASH_PIN_DAYS:
        raise UserError(f"--days must be in (0, {MAX_HASH_PIN_DAYS}]: browsers refuse "
                        "longer certificates pinned by hash")
    hosts = [h.strip() for h in a.hosts.split(",") if h.strip()]
    if not hosts:
        raise UserError("--hosts needs at least one name or address")
    try:
        digest = write_self_signed(a.cert, a.key, hosts, a.days)
    except OSError as exc:
        raise UserError(f"cannot write the certificate: {exc}") from exc
    print(f"certificate: {a.cert}\nkey:         {a.key}\nsha256:      {digest}\n"
          f"valid:       {a.days:g} days for {', '.join(hosts)}\n"
          f"use:         edge-relay edge --quic-port 8711 --quic-cert {a.cert} "
          f"--quic-key {a.key}")
    return 0


def add_edge_commands(sub: Any) -> None:
    """Add the edge's own commands (``edge``, ``token``, ``cert``) to ``sub``, the
    ``edge-relay`` launcher's subparsers (:mod:`edge_node.local.launcher`)."""
    pe = sub.add_parser("edge", help="run one edge node", description="Run one edge node "
                        "(WebSocket + /metrics + /healthz on one port) until Ctrl-C/SIGTERM.")
    _add_edge_args(pe)
    pe.set_defaults(func=cmd_edge)

    pt = sub.add_parser("token", help="mint a development token",
                        description="Print a signed token (HS256) using EDGE_RELAY_SECRET "
                        "(or the development secret).")
    pt.add_argument("subject", help="who the token is for (player name, device id)")
    pt.add_argument("--kind", choices=KINDS, default="player",
                    help="token kind (default %(default)s; service is exempt from rate limits)")
    pt.add_argument("--rooms", default="*", help="comma-separated room patterns (default *)")
    pt.add_argument("--publish", default="", help="publish patterns (default: same as --rooms)")
    pt.add_argument("--metric", action="append", default=[], metavar="NAME=MIN:MAX",
                    help="device tokens: a metric the device may send, with its declared "
                    "range (either bound may be left out: temp=-40:125, hum=0:); repeatable; "
                    "samples outside it are refused (docs/iot.md)")
    pt.add_argument("--ttl", type=float, default=3600.0,
                    help="seconds until expiry, > 0 (default %(default)g)")
    pt.set_defaults(func=cmd_token)

    pc = sub.add_parser("cert", help="make a self-signed certificate for QUIC/WebTransport",
                        description="Write an ECDSA P-256 self-signed certificate and key "
                        "for development and print its SHA-256 (browsers accept it with "
                        "serverCertificateHashes; Python clients with tls ca_file or "
                        "EDGE_RELAY_CA_FILE).")
    pc.add_argument("--cert", default="edge-cert.pem", help="certificate path (PEM)")
    pc.add_argument("--key", default="edge-key.pem", help="private key path (PEM, mode 0600)")
    pc.add_argument("--hosts", default="localhost,127.0.0.1,::1",
                    help="comma-separated DNS names / IP addresses (default %(default)s)")
    pc.add_argument("--days", type=float, default=13.0,
                    help="validity in days, at most 14 (default %(default)s)")
    pc.set_defaults(func=cmd_cert)
