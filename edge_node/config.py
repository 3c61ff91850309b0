"""Edge settings: one frozen dataclass, filled from flags and ``EDGE_RELAY_*`` variables.

Every field is documented in ``docs/configuration.md``.  Defaults are safe for
a single development edge on loopback.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from client_sdk.protocol import Limits
from edge_node.functions.limits import CallLimits

__all__ = ["EdgeSettings", "DEV_SECRET", "secrets_from_env"]

#: Development signing key, used only when none is configured (the CLI warns).
DEV_SECRET = b"edge-relay-dev-secret-change-me"
#: The default bounds of function calls (the ``function_*`` settings).
_CALLS = CallLimits()


def secrets_from_env(value: str | None) -> tuple[bytes, ...]:
    """Parse ``EDGE_RELAY_SECRET`` (comma-separated keys; first one signs)."""
    if not value:
        return (DEV_SECRET,)
    return tuple(s.strip().encode() for s in value.split(",") if s.strip())


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    """Everything an edge process needs to run."""

    edge_id: str = "edge-1"
    host: str = "127.0.0.1"
    port: int = 8700
    #: URL clients use to reach this edge (advertised in the registry).
    public_url: str = ""
    region: str = "local"
    #: Where the edge is (latitude, longitude in degrees), advertised in the registry:
    #: the origin's discovery orders edges by distance to the caller, and each edge
    #: orders its neighbour list by distance from itself.  ``None`` = unknown.
    position: tuple[float, float] | None = None
    redis_url: str = ""
    #: Replicas that must confirm a room-stream append before a publish is acked
    #: (``WAIT``); None = 1 on a Redis Cluster, 0 on one server.
    redis_wait_replicas: int | None = None
    secrets: tuple[bytes, ...] = (DEV_SECRET,)
    limits: Limits = field(default_factory=Limits)
    #: Seconds a member whose connection was lost stays present before its leave is
    #: told (its session may resume, here or elsewhere; 0 = at once; docs/protocol.md).
    presence_grace: float = 5.0
    #: WebSocket ping interval and timeout, seconds (games: a few seconds).
    ping_interval: float = 5.0
    ping_timeout: float = 5.0
    #: Seconds a client has to send HELLO after the upgrade.
    handshake_timeout: float = 5.0
    #: Seconds a client has to complete an inbound message once its first bytes (or
    #: first WebSocket fragment) arrived; a trickle past it is closed with 4008.
    message_timeout: float = 10.0
    #: TCP listen backlog (reconnect storms need >= 1024).
    backlog: int = 2048
    #: Per-client send queue bound, bytes (Centrifugo: 1 MiB).
    send_queue_bytes: int = 1024 * 1024
    #: Seconds to collect a client's frames before writing them (0 = every loop tick).
    #: A few ms cut the system calls per delivery under load, at that much latency.
    write_delay: float = 0.0
    #: Minimum seconds between two writes to a client (0 = every loop tick): a frame
    #: after a quiet interval goes at once; under load frames wait for the interval
    #: and leave together.  No added latency at low rates, at most this much at high.
    write_interval: float = 0.0
    #: Above this many queued bytes unreliable messages are dropped for that client.
    unreliable_drop_bytes: int = 64 * 1024
    #: Per-connection inbound rate limit (frames/s and burst); kind=service is exempt.
    rate_per_sec: float = 500.0
    rate_burst: float = 1000.0
    #: Consecutive rate-limit violations after which the connection is closed (4003).
    rate_close_after: int = 200
    #: Room stream cap (entries, approximate trimming) and owner lease.
    stream_maxlen: int = 10_000
    lease_ms: int = 2_000
    #: Seconds a disconnected session can be resumed (Ably, Socket.IO: 2 min).
    resume_window: float = 120.0
    #: Seconds between session checkpoints while connected.
    checkpoint_interval: float = 1.0
    #: Most messages replayed for one room on resume (more: recovered=false).
    max_replay: int = 10_000
    #: Recent messages kept in memory per room (resume without a Redis read).
    ring_size: int = 4096
    #: Batching of stream appends: at most this many entries per round trip,
    #: and how long (seconds) to wait for more before a round trip.  Members on
    #: other edges see a message only once it is appended, so the linger adds
    #: to their latency; 0 still batches whatever queued during a round trip.
    append_batch: int = 500
    append_linger: float = 0.0
    #: Registry heartbeat period and TTL, seconds.
    heartbeat_interval: float = 1.0
    heartbeat_ttl: float = 5.0
    #: Drain (SIGTERM): spread client handoffs over this many seconds, then wait
    #: at most ``drain_timeout`` for them to move before closing the rest.
    drain_window: float = 1.0
    drain_timeout: float = 10.0
    #: New connections per second (token bucket; burst = rate); over it the
    #: upgrade gets 503 and a retry hint, so a reconnect storm is paced.
    connect_rate: float = 2000.0
    #: Client sessions this edge holds at most; past it a new client gets 503 and a
    #: retry hint (and tries a neighbour).  0 = from the descriptor limit at start
    #: (``edge_node.runtime.fd_limits``: the raised RLIMIT_NOFILE minus a reserve).
    max_connections: int = 0
    #: Uplink to the origin (Redis Streams, sharded): shard count (must match
    #: the origin's), spool file ("" = in memory), its bound and overflow policy,
    #: SQLite fsync level, and room-name patterns whose messages go to the origin.
    uplink_shards: int = 4
    uplink_spool: str = ""
    uplink_spool_max: int = 1_000_000
    uplink_overflow: str = "drop_oldest"
    uplink_fsync: str = "NORMAL"
    uplink_rooms: tuple[str, ...] = ()
    #: Default delivery policies (docs/protocol.md): ``(pattern, policy)``, first match.
    room_delivery: tuple[tuple[str, str], ...] = ()
    #: Game rooms (docs/rooms.md): ``PATTERN=module:Class`` specs, checked at start.
    room_handlers: tuple[str, ...] = ()
    #: Functions (docs/functions.md): ``module:attr`` specs of ``Functions`` objects, and
    #: the bounds of their runs (edge_node.functions.limits.CallLimits).
    functions: tuple[str, ...] = ()
    function_timeout: float = _CALLS.timeout
    function_concurrency: int = _CALLS.per_edge
    function_client_concurrency: int = _CALLS.per_client
    function_event_concurrency: int = _CALLS.per_edge_events
    function_max_bytes: int = _CALLS.max_bytes
    function_threads: int = _CALLS.threads
    #: IoT telemetry (docs/iot.md): window length and grace (ms), forward raw
    #: samples too, the alerts room, detector mode (likelihood|ewma|mad|both|any;
    #: likelihood since issue 19, see docs/iot.md) and the z-score raise threshold
    #: (z modes only).
    iot_window_ms: int = 1000
    iot_grace_ms: int = 500
    iot_raw: bool = False
    iot_alerts_room: str = "alerts"
    iot_detector: str = "likelihood"
    iot_z_on: float = 6.0
    #: QUIC listener (raw QUIC + WebTransport on one UDP port): None = off,
    #: 0 = any free port.  Certificate and key are PEM files; without them the
    #: edge makes a development certificate at start (ECDSA P-256, 13 days) and
    #: logs its SHA-256 (see ``edge-relay cert``).
    quic_port: int | None = None
    quic_cert: str = ""
    quic_key: str = ""
    #: URL clients use to reach this edge over QUIC (default quic://HOST:QUIC_PORT).
    quic_public_url: str = ""
    #: Seconds without any packet before a QUIC connection is dropped (the SDK
    #: pings every 2.5 s; the edge sends a QUIC PING every ``ping_interval``).
    quic_idle_timeout: float = 10.0
    #: Largest payload sent as a datagram (aioquic never sends, and then blocks
    #: behind, a datagram over the path's packet size); larger updates use the stream.
    quic_max_datagram: int = 1150
    #: Datagrams queued per connection before the stalest is dropped.
    quic_datagram_queue: int = 64
    #: Inbound bytes queued per QUIC connection, unprocessed (over it: datagrams
    #: are dropped, a stream record closes the connection with 4003).
    quic_inbound_queue: int = 4 * 1024 * 1024
    #: TLS on the WebSocket port (wss://, https:// for /healthz and /metrics): on with
    #: ``tls`` or a ``tls_cert``; files default to the QUIC ones (the rule:
    #: ``edge_node.transports.tls.tls_files``), re-read every ``tls_reload_interval`` s
    #: when they change (0 = never).
    tls: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    tls_reload_interval: float = 5.0
    #: Structured log format: "json" or "text".
    log_format: str = "json"
    log_level: str = "INFO"

    @property
    def ws_scheme(self) -> str:
        """``wss`` when the WebSocket port terminates TLS, else ``ws``."""
        return "wss" if self.tls or self.tls_cert else "ws"

    @property
    def advertised_url(self) -> str:
        """The URL clients should use for this edge."""
        return self.public_url or f"{self.ws_scheme}://{self.host}:{self.port}"
