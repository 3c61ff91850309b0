"""Functions at the edge: RPCs clients call and handlers on the edge's events
(docs/functions.md).  An application imports :class:`Functions` and :class:`RpcError`
from here; the edge loads its ``Functions`` objects with ``--functions module:attr``."""

from edge_node.functions.api import Functions, RpcError
from edge_node.functions.context import CallContext, Event, EventContext, PublishRefused

__all__ = ["Functions", "RpcError", "CallContext", "EventContext", "Event",
           "PublishRefused"]
