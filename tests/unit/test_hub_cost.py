"""bench.hub_cost runs, reports one positive figure per round, and refuses bad sizes."""

from __future__ import annotations

import json

import pytest

from bench import hub_cost


@pytest.mark.parametrize("store", [True, False])
async def test_measure_gives_one_positive_figure_per_round(store: bool) -> None:
    figures = await hub_cost.measure(members=3, publishes=50, rounds=2, store=store)
    assert len(figures) == 2 and all(f > 0 for f in figures)


def test_cli_json_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert hub_cost.main(["--members", "2", "--publishes", "20", "--rounds", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["members"] == 2 and out["store"] and len(out["rounds"]) == 1
    with pytest.raises(SystemExit) as exc:
        hub_cost.main(["--members", "0"])
    assert exc.value.code == 2
