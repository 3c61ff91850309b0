"""Every flag of every command says what it does (``--help`` is the user's manual)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from edge_node.local.launcher import build_parser as edge_parser
from origin.__main__ import build_parser as origin_parser
from origin.forecast_eval import build_parser as forecast_eval_parser

Named = tuple[str, argparse.ArgumentParser]


def _parsers(name: str, p: argparse.ArgumentParser) -> Iterator[Named]:
    yield name, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, sp in action.choices.items():
                yield from _parsers(f"{name} {sub}", sp)


ALL = [*_parsers("edge-relay", edge_parser()), *_parsers("origin", origin_parser()),
       ("forecast-eval (its own parser)", forecast_eval_parser())]


@pytest.mark.parametrize("name, parser", ALL, ids=[n for n, _ in ALL])
def test_every_option_has_help_text(name: str, parser: argparse.ArgumentParser) -> None:
    missing = [a.option_strings[0] for a in parser._actions
               if a.option_strings and not (a.help and a.help.strip())]
    assert not missing, f"{name}: no help text for {missing}"


def test_top_level_help_lists_every_command() -> None:
    p = edge_parser()
    commands = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    text = p.format_help()
    for name in commands.choices:
        assert name in (p.description or ""), f"{name} missing from the command list"
        assert name in text
