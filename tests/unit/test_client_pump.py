"""The asyncio pump around the client core, on an in-memory link: the extension seam
(``request``, ``send_frame``, ``add_frame_handler``) and one future per publish."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from client_sdk import Client, ClientClosedError, ConnectionLostError, ForbiddenError, Position
from client_sdk.protocol import (
    Ack,
    Command,
    CommandAck,
    Error,
    Message,
    Publish,
    ReportState,
    TelemetryAck,
    Welcome,
    decode,
    encode,
)


class FakeLink:
    """Records what the client writes; frames are fed in by the test."""

    url = "ws://fake"
    transport = "ws"
    close_code: int | None = None
    close_reason = ""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    send_unreliable = send

    async def recv(self) -> bytes:  # pragma: no cover - not read in these tests
        raise AssertionError("not used")

    async def messages(self) -> AsyncIterator[bytes | str]:  # pragma: no cover
        raise AssertionError("not used")
        yield b""

    def buffered(self) -> int:
        return 0

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass

    def abort(self) -> None:
        pass


@pytest.fixture
async def wired() -> AsyncIterator[tuple[Client, FakeLink]]:
    c = Client(["ws://fake"], "token")
    link = FakeLink()
    c._adopt(link, link.url, Welcome("sid-1", "edge-1", {"resume_token": "rt"}))
    c._connected.set()
    yield c, link
    await c.close()


async def test_request_returns_the_reply_to_its_own_id(wired: tuple[Client, FakeLink]) -> None:
    c, link = wired
    task = asyncio.ensure_future(c.request(ReportState(0, 4, {"fw": "2"})))
    await asyncio.sleep(0)
    sent = decode(link.sent[-1])
    assert isinstance(sent, ReportState) and sent.req_id > 0 and sent.version == 4
    c._received(link, encode(Ack(sent.req_id + 1, 0, 9)))  # not ours
    c._received(link, encode(Ack(sent.req_id, 0, 4)))
    assert await task == Ack(sent.req_id, 0, 4)


async def test_request_error_reply_raises_its_class(wired: tuple[Client, FakeLink]) -> None:
    c, link = wired
    task = asyncio.ensure_future(c.request(ReportState(0, 1, {})))
    await asyncio.sleep(0)
    req = decode(link.sent[-1])
    assert isinstance(req, ReportState)
    c._received(link, encode(Error(req.req_id, 4403, "no")))
    with pytest.raises(ForbiddenError):
        await task


async def test_frame_handlers_get_the_frames_the_client_does_not_handle(
        wired: tuple[Client, FakeLink]) -> None:
    c, link = wired
    acks: list[TelemetryAck] = []
    other: list[object] = []
    remove = c.add_frame_handler(TelemetryAck, acks.append)
    c.on_other_frame = other.append
    c._received(link, encode(TelemetryAck(7, 3, 0)))
    c._received(link, encode(Command("c1", "reboot")))
    assert acks == [TelemetryAck(7, 3, 0)] and other == [Command("c1", "reboot")]
    remove()
    c._received(link, encode(TelemetryAck(8, 1, 0)))
    assert acks == [TelemetryAck(7, 3, 0)] and other[-1] == TelemetryAck(8, 1, 0)
    with pytest.raises(ValueError):
        c.add_frame_handler(Message, lambda m: None)


async def test_send_frame_writes_or_refuses(wired: tuple[Client, FakeLink]) -> None:
    c, link = wired
    c.send_frame(CommandAck("c1", "done", {}))
    assert decode(link.sent[-1]) == CommandAck("c1", "done", {})
    c._core.connection_lost("cut")
    c._connected.clear()
    with pytest.raises(ConnectionLostError):
        c.send_frame(CommandAck("c2", "done", {}))


async def test_one_future_per_publish_resolved_by_its_ack(
        wired: tuple[Client, FakeLink]) -> None:
    c, link = wired
    futs = [c.publish_nowait("r", b"%d" % i) for i in range(3)]
    pubs = [decode(d) for d in link.sent[-3:]]
    assert all(isinstance(p, Publish) for p in pubs)
    second = pubs[1]
    assert isinstance(second, Publish)
    c._received(link, encode(Ack(second.req_id, 2, 5)))
    assert futs[1] is not None and await futs[1] == Position(2, 5)
    assert not futs[0].done() and not futs[2].done()  # type: ignore[union-attr]
    assert c.outbox_size == 2
    await c.close()  # the other two fail with the close, each through its own future
    assert [type(f.exception()) for f in (futs[0], futs[2])] == [  # type: ignore[union-attr]
        ClientClosedError, ClientClosedError]
