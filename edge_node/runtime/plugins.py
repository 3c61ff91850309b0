"""Application code named by a ``module:attr`` spec (room handlers, edge functions,
origin functions): one resolver, so every loader reports a bad spec the same way."""

from __future__ import annotations

import importlib

__all__ = ["resolve"]


def resolve(target: str, label: str, form: str, error: type[ValueError]) -> object:
    """The object ``target`` (``module:attr``, ``attr`` may be dotted) names.

    A bad spec raises ``error`` with one line starting with ``label``: ``expected
    {form}`` (not ``module:attr``), ``cannot import 'module' (Type: text)`` (any
    exception raised while importing application code), ``'module' has no 'attr'``.
    """
    module_name, sep, attr = target.partition(":")
    module_name, attr = module_name.strip(), attr.strip()
    if not sep or not module_name or not attr:
        raise error(f"{label}: expected {form}")
    try:
        obj: object = importlib.import_module(module_name)
    except Exception as exc:  # any error while importing user code is a bad spec
        raise error(f"{label}: cannot import {module_name!r} "
                    f"({type(exc).__name__}: {exc})") from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise error(f"{label}: {module_name!r} has no {attr!r}")
    return obj
