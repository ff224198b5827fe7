"""pirag's wire protocol: message Structs for every operation, grouped by area.

Each area module declares its ops with ``define_op``; importing this package imports every area, so ``OPS``
holds them all. ``request_union()`` is the tagged union the daemon decodes with.
"""

from __future__ import annotations

from typing import Union

from . import core, embed, documents, memory  # noqa: F401  (each import declares its ops)
from . import mcp  # noqa: F401
from . import watch  # noqa: F401
from .base import (
    MAX_ITEMS, MAX_NAME, MAX_QUERY, MAX_TEXT, OPS, PROTOCOL_VERSION, Args, Envelope, ErrorBody, OpSpec,
    RawReply, Reply, Request, Result, define_op,
)


def request_union() -> object:
    """The tagged union of every declared request type (``Union[...]``)."""
    return Union[tuple(spec.request for spec in OPS.values())]  # noqa: UP007


__all__ = [
    "MAX_ITEMS", "MAX_NAME", "MAX_QUERY", "MAX_TEXT", "OPS", "PROTOCOL_VERSION", "Args", "Envelope", "ErrorBody",
    "OpSpec", "RawReply", "Reply", "Request", "Result", "define_op", "request_union",
]
