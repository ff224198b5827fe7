"""The message envelope and the op registry every protocol area builds on.

A request on the wire is ``{"id": int, "op": str, "args": {...}}``. Each operation is declared once with
``define_op(name, Args, Result)``: that creates the request Struct (tagged by ``op``), records the result type,
and whether the call is idempotent (which lets the client retry it after a dropped connection). The daemon
decodes every request with one Decoder over the tagged union of all declared ops, built once.

Container and string sizes are capped with ``msgspec.Meta`` on the Args fields, so a small frame cannot
expand into a huge object graph while it is decoded; unknown fields are skipped without being built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

PROTOCOL_VERSION = 1

# Hard protocol limits, the same for every daemon (configurable limits are stricter, never looser).
MAX_NAME = 256          # project names, source names, session ids, tags
MAX_TEXT = 16 << 20     # one text field (uploaded file contents), 16 MiB
MAX_QUERY = 8192        # one query string, characters
MAX_ITEMS = 4096        # items in one list field
MAX_META_KEYS = 64      # keys in one metadata mapping

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
Query = Annotated[str, msgspec.Meta(max_length=MAX_QUERY)]
MetaValue = str | int | float | bool | None
Metadata = Annotated[dict[Annotated[str, msgspec.Meta(max_length=MAX_NAME)], MetaValue],
                     msgspec.Meta(max_length=MAX_META_KEYS)]


class Args(msgspec.Struct, kw_only=True, frozen=True):
    """Base of every request's arguments. Unknown fields are ignored (older clients keep working)."""


class Result(msgspec.Struct, kw_only=True):
    """Base of every reply's result."""


class Request(msgspec.Struct, tag_field="op", kw_only=True, frozen=True):
    """Base of every request Struct; subclasses are made by ``define_op``."""

    id: Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]


class ErrorBody(msgspec.Struct, kw_only=True):
    code: str
    message: str
    details: dict[str, Any] = {}


class Reply(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A reply as the daemon sends it: ``result`` or ``error``, never both."""

    id: int | None
    result: Any = None
    error: ErrorBody | None = None


class RawReply(msgspec.Struct, kw_only=True):
    """A reply as the client first decodes it: the result stays raw until its op's type is known."""

    id: int | None = None
    result: msgspec.Raw = msgspec.Raw(b"")   # empty: no result field (msgspec cannot union Raw with None)
    error: ErrorBody | None = None


class Envelope(msgspec.Struct, kw_only=True):
    """The loosest reading of a request, used only to explain why the strict decode failed."""

    id: Any = None
    op: Any = None


@dataclass(frozen=True)
class OpSpec:
    name: str
    request: type[Request]
    args: type[Args]
    result: type[Result]
    idempotent: bool
    summary: str


OPS: dict[str, OpSpec] = {}


def define_op(name: str, args: type[Args], result: type[Result], *, idempotent: bool, summary: str) -> OpSpec:
    """Declare an operation; returns its spec (the client calls with it, the daemon dispatches on it)."""
    if name in OPS:
        raise ValueError(f"op {name!r} is declared twice")
    request = msgspec.defstruct(
        f"{args.__name__.removesuffix('Args')}Request",
        [("args", args, msgspec.field(default_factory=args))],
        bases=(Request,),
        tag=name,
        kw_only=True,
        frozen=True,
        module=args.__module__,
    )
    spec = OpSpec(name=name, request=request, args=args, result=result, idempotent=idempotent, summary=summary)
    OPS[name] = spec
    return spec
