"""``python -m edge_node.rooms``: print the room machine's transition table."""

from __future__ import annotations

from edge_node.rooms.machine import transition_rows


def main() -> None:
    """Print one line per (state, event): the states that event may lead to."""
    rows = transition_rows()
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"{'state':<{w0}}  {'event':<{w1}}  next state(s)")
    for state, event, targets in rows:
        print(f"{state:<{w0}}  {event:<{w1}}  {targets}")


if __name__ == "__main__":
    main()
