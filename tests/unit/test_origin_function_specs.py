"""Origin functions: the registration API, loading specs (flag, environment, entry
points) with one-line errors, and the CLI refusing bad settings before it starts."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

from origin.__main__ import main
from origin.functions import (
    FunctionContext,
    FunctionSpecError,
    OriginEvent,
    OriginFunctions,
    load_functions,
)
from origin.webhooks.config import WebhookSpecError, parse_secrets, parse_webhooks, redact


@pytest.fixture
def user_module() -> Iterator[types.ModuleType]:
    """A module ``fnmod_test`` holding an OriginFunctions and a few bad objects."""
    m = types.ModuleType("fnmod_test")
    fns = OriginFunctions()

    @fns.on("alert", "room_event")
    async def on_both(ctx: FunctionContext, event: OriginEvent) -> None:
        return None

    @fns.on("*", name="audit")
    async def everything(ctx: FunctionContext, event: OriginEvent) -> None:
        return None

    m.functions = fns  # type: ignore[attr-defined]
    m.not_functions = 42  # type: ignore[attr-defined]
    sys.modules["fnmod_test"] = m
    yield m
    del sys.modules["fnmod_test"]


def test_registration(user_module: types.ModuleType) -> None:
    fns: OriginFunctions = user_module.functions
    assert [(r.kind, r.name.rsplit(".", 1)[-1]) for r in fns.handlers] == [
        ("alert", "on_both"), ("room_event", "on_both"), ("*", "audit")]
    assert fns.kinds() == {"alert", "room_event", "*"}


def test_registration_mistakes_fail_at_import_time() -> None:
    fns = OriginFunctions()
    with pytest.raises(ValueError, match="unknown event kind"):
        fns.on("alerts")
    with pytest.raises(ValueError, match="at least one"):
        fns.on()
    with pytest.raises(TypeError, match="async"):
        fns.on("alert")(lambda ctx, ev: None)  # type: ignore[arg-type,return-value]

    async def h(ctx: FunctionContext, event: OriginEvent) -> None:
        return None

    fns.on("alert", name="x")(h)
    with pytest.raises(ValueError, match="twice"):
        fns.on("alert", name="x")(h)


def test_load_from_flag_and_env(user_module: types.ModuleType) -> None:
    regs = load_functions(["fnmod_test:functions"], env="fnmod_test:functions",
                          entry_points=False)
    assert len(regs) == 3  # the same object named twice is loaded once


@pytest.mark.parametrize(("spec", "msg"), [
    ("fnmod_test", "expected module:attribute"),
    ("no_such_mod_xyz:functions", "cannot import 'no_such_mod_xyz'"),
    ("fnmod_test:missing", "has no 'missing'"),
    ("fnmod_test:not_functions", "is a int, not an OriginFunctions"),
])
def test_bad_specs_are_one_line(user_module: types.ModuleType, spec: str, msg: str) -> None:
    with pytest.raises(FunctionSpecError, match=msg) as e:
        load_functions([spec], entry_points=False)
    assert "\n" not in str(e.value)


def test_import_error_inside_user_code_is_a_spec_error(tmp_path: object,
                                                       monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    import pathlib

    d = pathlib.Path(str(tmp_path))
    (d / "fnmod_broken.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(d))
    with pytest.raises(FunctionSpecError, match="RuntimeError: boom at import"):
        load_functions(["fnmod_broken:functions"], entry_points=False)


def test_webhook_specs() -> None:
    assert parse_webhooks(["alert=http://h/a"], env="*=https://h/b?tok=1, alert=http://h/a") \
        == (("alert", "http://h/a"), ("*", "https://h/b?tok=1"))
    for bad, msg in (("alert", "KIND=URL"), ("nope=http://h/", "unknown event kind"),
                     ("alert=ftp://h/", "only http")):
        with pytest.raises(WebhookSpecError, match=msg):
            parse_webhooks([bad])
    with pytest.raises(WebhookSpecError, match="16 characters"):
        parse_secrets("short")
    assert parse_secrets("0123456789abcdef, fedcba9876543210") == (
        b"0123456789abcdef", b"fedcba9876543210")
    assert redact("https://h:8/p/q?token=secret") == "https://h:8/p/q"


@pytest.mark.parametrize(("argv", "msg"), [
    (["--functions", "no_such_mod_xyz:f"], "cannot import"),
    (["--webhook", "alert=http://127.0.0.1:9/"], "need a signing secret"),
    (["--webhook", "alert=http://127.0.0.1:9/", "--webhook-secret", "0123456789abcdef",
      "--webhook-max-attempts", "0"], "max_attempts"),
])
def test_cli_refuses_bad_settings_in_one_line(argv: list[str], msg: str,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ORIGIN_FUNCTIONS", "ORIGIN_WEBHOOKS", "ORIGIN_WEBHOOK_SECRET"):
        monkeypatch.delenv(var, raising=False)
    for cmd in (["worker", "--consumer", "c"], ["run"]):
        # Port 9 on loopback: nothing answers, but the settings fail first.
        code = main([*cmd, "--redis-url", "redis://127.0.0.1:9/0", *argv])
        err = capsys.readouterr().err.strip()
        assert code == 2 and msg in err and "\n" not in err and "Traceback" not in err
