"""Error codes of the pirag protocol and the exceptions the client raises for them.

Errors travel as values: the daemon answers ``{id, error: {code, message, details}}`` and the client turns
the stable ``code`` string into an exception class. A code this client does not know becomes a plain
``PiragError`` carrying that code, so a newer daemon never breaks an older client.

Hierarchy::

    PiragError                      any error reported by, or about, the daemon
    +-- ConnectionFailed            the socket could not be reached, or the connection dropped
    +-- RequestTimeout              no reply within the client's timeout
    +-- ProtocolError               the bytes on the wire were not a valid exchange
    |   +-- MalformedFrame          (malformed_frame)
    |   +-- FrameTooLarge           (frame_too_large)
    |   +-- UnknownOp               (unknown_op)
    +-- InvalidArgument             (invalid_argument)
    +-- NotFound                    (not_found)
    +-- Conflict                    (conflict)
    +-- Busy                        (busy: too many connections or requests in flight; retry later)
    +-- Forbidden                   (forbidden: peer credentials or a path outside the allowed roots)
    +-- Unavailable                 (unavailable: a resource is starting, stopping or failed)
    +-- Timeout                     (timeout: the daemon gave up on the work)
    +-- StorageError                (storage_error: the state directory cannot be written: read-only, I/O error)
    |   +-- StorageFull             (storage_full: no space left; details name the directory and its free bytes)
    +-- InternalError               (internal)
"""

from __future__ import annotations

from typing import Any

# The stable codes. Add, never rename.
MALFORMED_FRAME = "malformed_frame"
FRAME_TOO_LARGE = "frame_too_large"
UNKNOWN_OP = "unknown_op"
INVALID_ARGUMENT = "invalid_argument"
NOT_FOUND = "not_found"
CONFLICT = "conflict"
BUSY = "busy"
FORBIDDEN = "forbidden"
UNAVAILABLE = "unavailable"
TIMEOUT = "timeout"
INTERNAL = "internal"
STORAGE_ERROR = "storage_error"
STORAGE_FULL = "storage_full"


class PiragError(Exception):
    """Base of every pirag error; ``code`` is the protocol's stable error code."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ConnectionFailed(PiragError):
    code = "connection_failed"


class RequestTimeout(PiragError):
    code = "request_timeout"


class ProtocolError(PiragError):
    code = "protocol_error"


class MalformedFrame(ProtocolError):
    code = MALFORMED_FRAME


class FrameTooLarge(ProtocolError):
    code = FRAME_TOO_LARGE


class UnknownOp(ProtocolError):
    code = UNKNOWN_OP


class InvalidArgument(PiragError):
    code = INVALID_ARGUMENT


class NotFound(PiragError):
    code = NOT_FOUND


class Conflict(PiragError):
    code = CONFLICT


class Busy(PiragError):
    code = BUSY


class Forbidden(PiragError):
    code = FORBIDDEN


class Unavailable(PiragError):
    code = UNAVAILABLE


class Timeout(PiragError):
    code = TIMEOUT


class InternalError(PiragError):
    code = INTERNAL


class StorageError(PiragError):
    """A write failed because of the disk, not the request: ``details`` has ``directory``, ``free_bytes``
    and ``cause``. Reads keep working; retry the write once the condition is fixed."""

    code = STORAGE_ERROR


class StorageFull(StorageError):
    code = STORAGE_FULL


_BY_CODE: dict[str, type[PiragError]] = {
    cls.code: cls
    for cls in (
        MalformedFrame, FrameTooLarge, UnknownOp, InvalidArgument, NotFound, Conflict, Busy, Forbidden,
        Unavailable, Timeout, InternalError, StorageError, StorageFull,
    )
}

ALL_CODES: tuple[str, ...] = tuple(_BY_CODE)


def error_from_wire(code: str, message: str, details: dict[str, Any] | None = None) -> PiragError:
    """The exception for an error the daemon reported; unknown codes fall back to ``PiragError``."""
    cls = _BY_CODE.get(code, PiragError)
    return cls(message, code=code, details=details)
