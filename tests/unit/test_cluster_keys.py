"""Redis Cluster rules without a server: URL parsing, command routing, and the hash-tag
audit (every multi-key command and script of the project touches one slot)."""

from __future__ import annotations

import msgpack
import pytest
from redis.crc import key_slot

from edge_node.redis_io import conn as redis_conn
from edge_node.redis_io import keys as K
from edge_node.redis_io.resp_cluster import routing_key
from edge_node.sessions.session_store import checkpoint_key
from edge_node.uplink.wire import (
    downlink_key,
    pack_batch,
    pack_entry,
    shard_of,
    stream_key,
    unpack_entry,
)
from origin.apply import Applier
from origin.effects import EffectSettings
from origin.keys import ShardKeys, edge_info


def slot(key: str) -> int:
    return key_slot(key.encode())


@pytest.mark.parametrize("url, seeds, opts", [
    ("redis+cluster://h1:7000", [("h1", 7000)], {}),
    ("redis+cluster://h1:7000,h2:7001,h3", [("h1", 7000), ("h2", 7001), ("h3", 6379)], {}),
    ("redis+cluster://u%40x:p%3Aw@h1:7000/0", [("h1", 7000)],
     {"username": "u@x", "password": "p:w"}),
    ("redis+cluster://:secret@h1:7000", [("h1", 7000)], {"password": "secret"}),
    ("rediss+cluster://[::1]:7000", [("::1", 7000)], {"ssl": True}),
])
def test_cluster_url_parsing(url: str, seeds: list[tuple[str, int]],
                             opts: dict[str, object]) -> None:
    assert redis_conn.is_cluster(url)
    assert redis_conn.cluster_seeds(url) == (seeds, opts)


@pytest.mark.parametrize("url, why", [
    ("redis+cluster://", "at least one host:port"),
    ("redis+cluster://h1:notaport", "bad port"),
    ("redis+cluster://h1:70000", "bad node"),
    ("redis+cluster://h1:7000/2", "only database 0"),
    ("redis://h1:7000", "not a cluster URL"),
])
def test_bad_cluster_urls_name_the_problem(url: str, why: str) -> None:
    with pytest.raises(redis_conn.ClusterURLError, match=why):
        redis_conn.cluster_seeds(url)


def test_single_server_urls_are_not_cluster() -> None:
    for url in ("redis://h:6379/0", "rediss://h", "unix:///tmp/r.sock"):
        assert not redis_conn.is_cluster(url)


def test_routing_key_of_our_commands() -> None:
    assert routing_key(("EVALSHA", "abc", 2, K.room_owner("r"), K.room_log("r"), "t")) \
        == K.room_owner("r").encode()
    assert routing_key(("XADD", K.edge_inbox("e"), "*", "p", b"x")) == K.edge_inbox("e").encode()
    assert routing_key((b"PUBLISH", K.room_live("r"), b"x")) == K.room_live("r").encode()
    with pytest.raises(ValueError, match="no key"):
        routing_key(("EVALSHA", "abc", 0))
    with pytest.raises(ValueError, match="no key"):
        routing_key(("PING",))


@pytest.mark.parametrize("room", ["r", "game:{weird}", "x" * 200, "ünï"])
def test_every_key_of_a_room_shares_its_slot(room: str) -> None:
    """ACQUIRE (owner, epoch), APPEND (owner, log), EPOCH_FLOOR, the lost ranges and the
    live channel (which the owner publishes in the append's pipeline) are one slot."""
    keys = [K.room_log(room), K.room_owner(room), K.room_epoch(room), K.room_members(room),
            K.room_live(room), K.room_lost(room)]
    assert len({slot(k) for k in keys}) == 1


def test_edge_keys_share_a_slot_and_origin_agrees() -> None:
    keys = [K.edge_inbox("e1"), K.edge_info("e1"), K.edge_control("e1"), downlink_key("e1"),
            edge_info("e1")]
    assert len({slot(k) for k in keys}) == 1
    assert K.edge_info("e1") == edge_info("e1")


def test_every_origin_view_key_is_in_its_uplink_shard_slot() -> None:
    """The apply script writes view keys and XACKs the stream in one call: one slot."""
    for shard in range(8):
        k = ShardKeys(shard)
        keys = [k.stream, k.stats, k.alerts, k.dead, k.seen_prefix("e1") + "0",
                k.room("r", "snap"), k.dev("d", "cmds"), k.sess("s", "state"),
                k.edge("e1", "status"), stream_key(shard)]
        assert len({slot(x) for x in keys}) == 1


def test_apply_script_keys_and_ops_stay_in_the_shard_slot() -> None:
    """Compile a batch of every kind: each key any op names is in the stream's slot."""
    entries = [pack_entry(i, kind, key, 1_700_000_000_000, body) for i, (kind, key, body) in
               enumerate([("telemetry", "dev-1", {"t": 1.0}), ("shadow", "dev-1", {"a": 1}),
                          ("room_event", "room-1", {"x": 1}), ("room_snapshot", "room-1", {}),
                          ("session", "dev-1", {"online": True, "edge": "e1"}),
                          ("presence", "room-1", {"member": "m", "online": True}),
                          ("command_ack", "dev-1", {"id": "c1", "status": "ok"}),
                          ("alert", "dev-1", {"msg": "hot"}), ("edge_status", "e1", {})])]
    shards = 4
    ap = Applier(EffectSettings(10, 10, 10, 60_000))
    for e in entries:
        shard = shard_of(unpack_entry(e).key, shards)
        prep = ap.prepare(shard, "1-1", {k.encode(): v for k, v in
                                          pack_batch("e1", [e]).items()})
        want = slot(ShardKeys(shard).stream)
        assert {slot(k) for k in prep.keys[:2] + prep.keys[3:]} == {want}
        assert slot(prep.keys[2] + "0") == want  # the seen-bitmap prefix
        ops = msgpack.unpackb(prep.args[3], raw=False)
        for _seq, _lag, _kind, op_list, _dead in ops:
            for op in op_list:
                named = [op[1], op[2]] if op[0] == "LWW" else [op[1]]
                assert {slot(k) for k in named} == {want}, op


def test_session_checkpoint_is_one_key() -> None:
    assert checkpoint_key("abc").startswith("er:{sess:abc}")
