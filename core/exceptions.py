"""Domain errors. Services raise them; one API exception handler renders them as problem+json."""

from typing import Any


class DomainError(Exception):
    """A rule of the domain refused the operation. ``code`` is stable; clients switch on it."""

    code = "domain_error"
    status = 400
    title = "The request cannot be carried out"
    # A replayable error is stored under the request's Idempotency-Key like a success; transient
    # errors (busy, timeouts) are not, so a retry with the same key can still succeed.
    replayable = True

    def __init__(self, detail: str | None = None, *, errors: list[dict[str, Any]] | None = None):
        self.detail = detail or self.title
        self.errors = errors or []
        super().__init__(self.detail)


class NotFoundError(DomainError):
    code = "not_found"
    status = 404
    title = "Not found"


class ForbiddenError(DomainError):
    code = "forbidden"
    status = 403
    title = "You do not have permission to perform this action"


class ConflictError(DomainError):
    code = "conflict"
    status = 409
    title = "The request conflicts with the current state"


class InvalidInputError(DomainError):
    code = "validation_error"
    status = 400
    title = "Invalid request"


class BusyError(DomainError):
    """A lock could not be had within the bounded wait: the client may retry."""

    code = "busy"
    status = 503
    title = "The resource is busy; retry shortly"
    replayable = False
