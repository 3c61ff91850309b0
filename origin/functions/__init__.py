"""Origin functions: handlers the origin's workers run per uplink event
(:mod:`origin.functions.registry`; loading in :mod:`origin.functions.loader`;
see docs/webhooks.md)."""

from origin.functions.loader import FunctionSpecError, load_functions
from origin.functions.registry import (
    DeadLetter,
    FunctionContext,
    Handler,
    OriginFunctions,
    Registered,
)
from origin.hooks.record import OriginEvent

__all__ = ["DeadLetter", "FunctionContext", "FunctionSpecError", "Handler",
           "OriginEvent", "OriginFunctions", "Registered", "load_functions"]
