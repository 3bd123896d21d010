"""Every error emit reports to a caller, with the code and status of the wire contract.

The hierarchy (spec §2)::

    EmitError                     base; .code and .status are the wire error's
    ├── InvalidRequest  400       malformed or out-of-range input; .field names it
    ├── Unauthorized    401       no key, unknown key, revoked key
    ├── Forbidden       403       the key lacks a scope, or belongs to another space
    ├── NotFound        404       no such job or space visible to this caller
    ├── Conflict        409       the job's state does not allow it, or the lease is stale
    ├── PayloadTooLarge 413       body over the limit
    ├── RateLimited     429       over the per-key rate; .retry_after seconds
    └── Unavailable     503       shutting down, storage failing, or the space moving to
                                  another node; nothing was accepted; .retry_after if known

A refused call changes nothing: every check runs before any state is touched.
"""

from __future__ import annotations


class EmitError(Exception):
    code = "internal"
    status = 500
    field: str | None = None
    """The input field a refusal names, when it names one."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def summary(self) -> str:
        """The refusal in one line, as the command line prints it: ``message (404 not_found)``."""
        return f"{self.message} ({self.status} {self.code})"

    def to_wire(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidRequest(EmitError):
    code = "invalid_request"
    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Unauthorized(EmitError):
    code = "unauthorized"
    status = 401


class Forbidden(EmitError):
    code = "forbidden"
    status = 403


class NotFound(EmitError):
    code = "not_found"
    status = 404


class Conflict(EmitError):
    code = "conflict"
    status = 409


class PayloadTooLarge(EmitError):
    code = "payload_too_large"
    status = 413


class RateLimited(EmitError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


MOVING_RETRY_AFTER = 1.0
"""Seconds a caller is told to wait (``Retry-After``) while its space moves between the
nodes of a cluster: on any node, whether it finds the space moving or has just lost it."""


class Unavailable(EmitError):
    code = "unavailable"
    status = 503

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Seconds after which a retry may succeed, when known (a space moving to
        another node): the HTTP answer's ``Retry-After``."""
