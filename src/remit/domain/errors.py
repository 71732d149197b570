"""Errors with stable codes.

Every error a person can cause carries a code that never changes, a message written for people and the field at
fault. Entry points map the *kind* to an HTTP status or an exit code in one place.
"""

from __future__ import annotations

from enum import Enum


class ErrorKind(Enum):
    INVALID = "invalid"  # the request itself is wrong (HTTP 422, exit 2)
    NOT_FOUND = "not_found"  # (HTTP 404, exit 3)
    CONFLICT = "conflict"  # the request is fine but the state forbids it (HTTP 409, exit 4)
    FORBIDDEN = "forbidden"  # the caller may not do this (HTTP 403, exit 5)


class RemitError(Exception):
    """Base for every error Remit reports to a person."""

    kind: ErrorKind = ErrorKind.INVALID

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "field": self.field}


class ValidationError(RemitError):
    kind = ErrorKind.INVALID


class NotFound(RemitError):
    kind = ErrorKind.NOT_FOUND

    def __init__(self, what: str, ident: object, field: str | None = None, by: str = "id") -> None:
        super().__init__(f"{what}_not_found", f"No {what.replace('_', ' ')} with {by} {ident!r}.", field)


class Conflict(RemitError):
    kind = ErrorKind.CONFLICT


class Forbidden(RemitError):
    kind = ErrorKind.FORBIDDEN
