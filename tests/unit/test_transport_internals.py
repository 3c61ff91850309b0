"""Pins for the private attributes of websockets and aioquic that the transport modules
use (``edge_node/transports/quic/conn.py``, ``edge_node/transports/quic/listener.py``,
``edge_node/transports/connection.py``).

No other module touches them.  When a library upgrade removes or renames one, the
matching test here fails with the attribute's name, instead of the edge failing at run
time on a connection.
"""

from __future__ import annotations

from typing import Any, cast

from aioquic.asyncio import serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection
from websockets.frames import Close
from websockets.server import ServerProtocol


def test_aioquic_stream_send_buffer_bounds() -> None:
    """QuicConn.get_write_buffer_size: ``_streams[id].sender._buffer_stop - _buffer_start``
    is the session stream's bytes not yet acknowledged."""
    conn = QuicConnection(configuration=QuicConfiguration(is_client=True))
    sid = conn.get_next_available_stream_id()
    conn.send_stream_data(sid, b"hello")
    sender = conn._streams[sid].sender
    assert sender._buffer_stop - sender._buffer_start == 5


async def test_aioquic_protocol_holds_its_connection_as_quic() -> None:
    """QuicConn.write/close: ``protocol._quic`` is the QuicConnection."""
    conn = QuicConnection(configuration=QuicConfiguration(is_client=True))
    assert QuicConnectionProtocol(conn)._quic is conn


async def test_aioquic_server_exposes_its_udp_transport(quic_cert: tuple[str, str]) -> None:
    """start_quic: ``QuicServer._transport`` gives the bound port (port 0 asked)."""
    cfg = QuicConfiguration(is_client=False, alpn_protocols=["x"])
    cfg.load_cert_chain(*quic_cert)
    server = await serve("127.0.0.1", 0, configuration=cfg)
    try:
        transport = server._transport
        assert transport is not None  # asyncio's or uvloop's UDP transport
        assert transport.get_extra_info("sockname")[1] > 0
    finally:
        server.close()


class _FakeTcp:
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        ...


async def test_websockets_connection_exposes_transport_and_close_frame() -> None:
    """WsConn.abort/outbound use ``ServerConnection.transport`` (set when the TCP
    connection is made); WsConn.clean reads ``protocol.close_rcvd`` (None until the
    peer's close frame)."""
    assert issubclass(ServerConnection, Connection)  # where both attributes live
    conn = Connection(ServerProtocol())
    tcp = _FakeTcp()
    conn.connection_made(cast(Any, tcp))
    assert conn.transport is tcp
    assert conn.protocol.close_rcvd is None
    conn.protocol.close_rcvd = Close(1000, "")
    assert conn.protocol.close_rcvd.code == 1000
