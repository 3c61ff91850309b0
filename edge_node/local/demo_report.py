"""The demo's summary for people: :func:`render_summary` turns the dict that
:func:`edge_node.local.demo.run_demo` returns (also written as ``--json``) into the
text the demo prints."""

from __future__ import annotations

from typing import Any

from edge_node.local.demo_tokens import token_lines, tokens_ok

__all__ = ["render_summary"]


def render_summary(s: dict[str, Any]) -> str:
    """The human-readable summary table."""
    c, rel, lat = s["config"], s["reliable"], s["latency_ms"]
    iot_s = s.get("iot") or {}
    if rel["lost"] or rel["duplicates"]:
        verdict = "PROBLEM: messages lost or duplicated"
    elif (s.get("game") or {}).get("divergences"):
        verdict = (f"PROBLEM: {s['game']['divergences']} arena players' state differs from "
                   "the room owner's")
    elif (s.get("game") or {}).get("inputs_lost") or (s.get("game") or {}).get(
            "inputs_applied_twice"):
        verdict = (f"PROBLEM: arena inputs lost ({s['game']['inputs_lost']}) or applied "
                   f"twice ({s['game']['inputs_applied_twice']})")
    elif not _functions_fine(s.get("functions") or {}):
        verdict = ("PROBLEM: a function call failed on the edge, the leaderboard misses an "
                   "acknowledged score, or a webhook request was not correctly signed")
    elif iot_s.get("lost"):
        verdict = (f"PROBLEM: {iot_s['lost']} IoT samples did not reach the origin "
                   f"({iot_s.get('unacked', 0)} still unacknowledged in device buffers when "
                   "the run ended: a host too busy to keep up?)")
    elif not (s.get("delivery") or {}).get("ok", True):
        verdict = ("PROBLEM: a stalled spectator got a stale update or missed a message it "
                   "was not told about (see delivery.*)")
    elif s.get("tokens") and not tokens_ok(s["tokens"], c["duration_s"]):
        verdict = ("PROBLEM: a player's token expired or a refresh was refused (see "
                   "tokens.*)")
    else:
        verdict = "OK: nothing lost, nothing duplicated"
    lines = [
        "",
        f"edge-relay demo: {c['edges']} edges, {c['players']} players in {c['rooms']} rooms, "
        f"{c['rate_hz']:g} Hz each, {c['duration_s']:g} s"
        + (" (WebSocket over TLS: wss://)" if c.get("tls") else ""),
        "",
        f"  reliable.sent        {rel['sent']:>10}   (acknowledged by the room owner)",
        f"  reliable.expected    {rel['expected']:>10}   (one per other member of the room)",
        f"  reliable.delivered   {rel['delivered']:>10}",
        f"  reliable.lost        {rel['lost']:>10}",
        f"  reliable.duplicates  {rel['duplicates']:>10}",
        f"  latency_ms           p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  "
        f"p99 {lat['p99']:.3f}  p99.9 {lat['p999']:.3f}  max {lat['max']:.3f}",
        f"  (before the kill)    p50 {s['latency_before_kill_ms']['p50']:.3f}  p90 "
        f"{s['latency_before_kill_ms']['p90']:.3f}  p99 {s['latency_before_kill_ms']['p99']:.3f}"
        f"  (latency counts from the intended send time, so outages show)",
        f"  rtt_ms (median)      {s['rtt_ms']['median']}",
        *(f"  latency_ms via {t:<5} p50 {v['p50']:.3f}  p99 {v['p99']:.3f}  "
          f"({v['players']} players started on {t}, {v['deliveries']} deliveries)"
          for t, v in s.get("latency_by_transport_ms", {}).items() if v["players"]),
        *(f"  latency_ms {k.replace('_', ' '):<10} p50 {v['p50']:.3f}  p99 {v['p99']:.3f}  "
          f"({v['deliveries']} deliveries before the kill; "
          + ("publisher and receiver on one edge)" if k == "same_edge" else
             "publisher on another edge: through the room's owner and Redis)")
          for k, v in s.get("latency_by_path_ms", {}).items() if v["deliveries"]),
        f"  deliveries/s         {s['throughput']['deliveries_per_s']:>10}",
        f"  history              {s['history']['stream_entries']} entries in "
        f"{s['history']['rooms']} room streams (Redis)",
        "",
        "  edge       connections  delivered  via-redis  appended",
    ]
    for e in s["edges"]:
        if e.get("killed"):
            lines.append(f"  {e['id']:10} {'stopped':>11}")
            continue
        lines.append(f"  {e['id']:10} {e['connections']:>11}  {e['messages_out']:>9}  "
                     f"{e['remote_deliveries']:>9}  {e['stream_appended']:>8}")
    rm = s.get("room_machines") or {}
    if rm.get("transitions"):
        now = ", ".join(f"{n} {st}" for st, n in rm["by_state"].items()) or "none"
        up = "the edge" if rm["edges"] == 1 else f"the {rm['edges']} edges"
        lines += ["", f"  room machines on {up} still up: {now} now; "
                  "state changes:",
                  *(f"    {k:<28} {n:>6}" for k, n in rm["transitions"].items())]
    h = s.get("handover") or {}
    if h.get("drained_edge"):
        lines += [
            "",
            f"  handover.drained_edge      {h['drained_edge']} (drained by "
            f"{h.get('drained_by', 'SIGTERM')}: live handover)",
            f"  handover.clients_moved     {h['clients_moved']} of "
            f"{h['clients_on_drained_edge']} moved before the edge closed",
            f"  handover.max_gap_ms        {h['max_gap_ms']}",
        ]
    f = s.get("failover") or {}
    if f.get("killed_edge"):
        lines += [
            "",
            f"  failover.killed_edge       {f['killed_edge']} (SIGKILL)",
            f"  failover.clients_resumed   {f['clients_resumed']} of "
            f"{f['clients_on_killed_edge']} on the killed edge",
            f"  failover.recovered_false   {f['recovered_false']}",
            f"  failover.detection_ms      {f.get('detection_ms', '-')}  (dead edge's last "
            "heartbeat to a neighbour taking its rooms)",
            f"  failover.replayed          {f['replayed']} messages",
            f"  failover.max_gap_ms        {f['max_gap_ms']}  (median client "
            f"{f['median_gap_ms']})",
        ]
    o = s.get("origin") or {}
    if o.get("enabled"):
        lag = o.get("lag_ms") or {}
        lines += [
            "",
            f"  origin.applied             {o['applied']} uplink entries applied "
            f"(room events, sessions, presence, edge status)",
            f"  origin.duplicates_ignored  {o['duplicates_ignored']}",
            f"  origin.lag_ms.p99          {lag.get('p99')}  (p50 {lag.get('p50')}, "
            f"p99.9 {lag.get('p99.9')}; edge submit to origin apply)",
        ]
    iot = s.get("iot") or {}
    if iot.get("devices"):
        lines += [
            "",
            f"  iot.samples                {iot['samples']} from {iot['devices']} devices at "
            f"{iot['rate_hz']:g} Hz ({iot['resent_batches']} batches re-sent after failover)",
            f"  iot.rollups_at_origin      {iot['rollups_at_origin']} rollups; "
            f"{iot['samples_at_origin']} samples counted",
            f"  iot.alerts                 {iot['alerts']} raised "
            f"({iot['anomalies_injected']} anomalies injected)",
            f"  iot.lost                   {iot['lost']}  ({iot.get('unacked', 0)} samples "
            "still unacknowledged in device buffers at the end)",
        ]
    g = s.get("game") or {}
    if g.get("bots"):
        lines += _game_lines(g)
    lines += _function_lines(s.get("functions") or {})
    lines += token_lines(s.get("tokens") or {})
    lines += _delivery_lines(s.get("delivery") or {})
    lines += _machine_lines(s.get("machine") or {})
    fc = s.get("forecast") or {}
    if fc:
        lines += [
            f"  forecast.recommended_replicas {fc.get('recommended_replicas')}  (reactive "
            f"{fc.get('reactive_replicas')}; {fc.get('connections')} connections now, "
            f"{fc.get('forecast_connections')} forecast from this run's ramp-up: a "
            "deployment learns a daily season)",
        ]
    lines += ["", f"  {verdict}", ""]
    return "\n".join(lines)


def _game_lines(g: dict[str, Any]) -> list[str]:
    """The arenas: ticks and patches, then per arena what each drain and kill did."""
    saving = g.get("bandwidth_saving")
    lines = [
        "",
        f"  game.arenas                {len(g['arenas'])} authoritative arenas, {g['bots']} "
        f"bots on every edge, {g['inputs_sent']} inputs ({g['inputs_acked']} acknowledged)",
        f"  game.ticks                 {g.get('ticks')} at 20 Hz on the edges still up; tick "
        f"jitter p99 <= {g.get('tick_jitter_p99_ms')} ms, tick time p99 <= "
        f"{g.get('tick_time_p99_ms')} ms",
        f"  game.patches               {g.get('patches')}; {g.get('patch_bytes')} bytes of "
        f"patches against {g.get('full_state_bytes')} for the full state each time "
        f"({saving}x less)" if saving else f"  game.patches               {g.get('patches')}",
        f"  game.snapshots             {g.get('snapshots')} stored (last "
        f"{g.get('snapshot_bytes')} bytes); {g.get('restores')} restores (last "
        f"{g.get('restore_ms')} ms, {g.get('replayed_entries')} entries replayed), "
        f"{g.get('moved_in')} moved in live on a drain",
    ]
    for a in g["arenas"]:
        lines.append(f"  game.{a['room']:<22} home {a['home_edge']}, now on "
                     f"{a.get('owner_edge')}: {a['inputs_applied']} inputs applied, "
                     f"{a['inputs_lost']} lost, {a['inputs_applied_twice']} twice, "
                     f"{a['divergences']} diverged")
        for e in a["events"]:
            lines.append(
                f"    after the {e['event']} of {e['edge']}: ticking again in "
                f"{e['ticked_again_s']:.2f} s (longest silence {e['max_patch_gap_ms']:.0f} ms)"
                f", {e['ticks_run_again']} ticks run again, {e['whole_views_sent']} whole "
                "views sent")
    lines.append(
        f"  game.divergences           {g['divergences']}  (players whose final state "
        f"differs from the owner's; {g['resyncs']} resyncs, {g['full_states']} full "
        "states sent)")
    return lines


def _functions_fine(f: dict[str, Any]) -> bool:
    from edge_node.local.demo_functions import functions_ok

    return functions_ok(f)


def _function_lines(f: dict[str, Any]) -> list[str]:
    """RPCs, the board check, the telemetry handler and the webhook."""
    rpc, board = f.get("rpc") or {}, f.get("leaderboard") or {}
    tel, hook = f.get("telemetry") or {}, f.get("webhook") or {}
    lines: list[str] = []
    if rpc.get("callers"):
        top = ", ".join(f"{who} {score}" for who, score in board.get("top", [])) or "empty"
        lines += [
            "",
            f"  functions.rpc              {rpc['calls']} calls from {rpc['callers']} players "
            f"(score.submit, leaderboard.top, on their own edge): {rpc['ok']} ok, "
            f"{rpc['app_errors']} application errors on purpose (negative scores), "
            f"{rpc['interrupted']} interrupted by the chaos, {rpc['failed']} failed; "
            f"p50 {rpc['p50_ms']} ms, p99 {rpc['p99_ms']} ms",
            f"  functions.leaderboard      top {top}; {board.get('players', 0)} players; "
            f"holds every acknowledged score: {'yes' if board.get('consistent') else 'NO'}",
        ]
    if tel.get("fan_commands"):
        lines.append(
            f"  functions.telemetry        the edges' window handler sent {tel['fan_commands']}"
            f" fan commands (one per window closed with a mean over {tel['threshold_c']:g} °C)"
            f"; {tel['devices_cooled']} devices cooled down, {tel['hot_at_end']} still hot")
    if hook.get("url"):
        lines.append(
            f"  functions.webhook          {hook['deliveries']} alert events POSTed by the "
            f"origin to {hook['url']} ({hook['events']} distinct, "
            f"{hook['bad_signatures']} badly signed)")
    return lines


def _machine_lines(m: dict[str, Any]) -> list[str]:
    """What share of the machine each part used, and what limited the figures."""
    if not m:
        return []
    c = m["cores"]
    line = (f"  machine                    {m['cpus']} CPUs, {m['busy_percent']:.0f} % busy: "
            f"edges {c.get('edges', 0):.2f} cores, Redis {c.get('redis', 0):.2f}, origin "
            f"{c.get('origin', 0):.2f}, this process (players, devices, bots) "
            f"{c.get('load', 0):.2f}")
    why = {"machine": "every core was busy: the latencies include waiting for a CPU, "
                      "not only the relay's work",
           "load generator": "this process used a whole core: its players sent and read "
                             "late, so the latencies are partly its own"}.get(
        m.get("bottleneck") or "")
    return ["", line, *([f"  bottleneck                 {why}"] if why else [])]


def _delivery_lines(d: dict[str, Any]) -> list[str]:
    """The stalled spectators (edge_node.local.demo_spectators)."""
    if "latest" not in d:
        return []
    lt, dr = d["latest"], d["drop"]
    return [
        "",
        f"  delivery.latest            stalled {d['stalled_s']:g} s: {lt['received']} of "
        f"{lt['published']} updates of {d['keys']} entities received, "
        f"{'the newest of every entity' if lt['newest_of_every_key'] else 'NOT the newest'}"
        f" at the end, {lt['stale']} stale",
        f"  delivery.drop              stalled {d['stalled_s']:g} s: {dr['received']} of "
        f"{dr['published']} received, {dr['dropped']} dropped and told in "
        f"{dr['notices']} DROPPED notices, {dr['recovered']} read back from history"
        f" ({'complete' if dr['complete'] else 'INCOMPLETE'})",
    ]
