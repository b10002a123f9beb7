"""RFC 9457 problem+json rendering for every error the API returns."""

import logging
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from core.db import is_lock_wait_lost
from core.exceptions import DomainError

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"

_TITLES = {
    400: "Invalid request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


def problem_type(code: str) -> str:
    return f"{settings.LOYALTY_PROBLEM_TYPE_BASE}{code}"


def problem_body(
    *,
    status_code: int,
    code: str,
    detail: str,
    instance: str = "",
    errors: list[dict[str, Any]] | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": problem_type(code),
        "title": title or _TITLES.get(status_code, "Error"),
        "status": status_code,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    return body


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(body, status=body["status"], headers=headers, content_type=PROBLEM_CONTENT_TYPE)


def domain_error_response(error: DomainError, *, instance: str) -> Response:
    return problem_response(
        problem_body(
            status_code=error.status,
            code=error.code,
            detail=error.detail,
            instance=instance,
            errors=[_with_pointer(item) for item in error.errors],
            title=error.title,
        )
    )


def _with_pointer(item: dict[str, Any]) -> dict[str, Any]:
    """Services name the field (``attr``); the document also carries its JSON Pointer."""
    if "pointer" in item:
        return item
    attr = item.get("attr")
    return {**item, "pointer": "#/" + str(attr).replace(".", "/") if attr else "#"}


def flatten_errors(detail: Any, path: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """Turn DRF's nested error structure into a flat list with attribute paths and JSON Pointers."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = str(key)
            yield from flatten_errors(value, path if name == "non_field_errors" else (*path, name))
    elif isinstance(detail, list):
        if all(isinstance(item, exceptions.ErrorDetail | str) for item in detail):
            for item in detail:
                yield from flatten_errors(item, path)
        else:
            for index, item in enumerate(detail):
                if item:
                    yield from flatten_errors(item, (*path, str(index)))
    else:
        yield {
            "attr": ".".join(path) or None,
            "pointer": "#/" + "/".join(path) if path else "#",
            # django-filter's form errors carry no code: ``None`` would break the documented schema.
            "code": getattr(detail, "code", None) or "invalid",
            "detail": str(detail),
        }


def _validation_problem(error: exceptions.ValidationError, instance: str) -> dict[str, Any]:
    errors = list(flatten_errors(error.detail))
    if len(errors) == 1:
        summary = errors[0]["detail"] if errors[0]["attr"] is None else "1 field is invalid."
    else:
        summary = f"{len(errors)} errors in the request."
    return problem_body(
        status_code=400, code="validation_error", detail=summary, instance=instance, errors=errors
    )


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's EXCEPTION_HANDLER: every error, expected or not, becomes problem+json."""
    request = context.get("request")
    instance = request.path if request is not None else ""
    set_rollback()

    if isinstance(exc, DomainError):
        return domain_error_response(exc, instance=instance)
    if isinstance(exc, RequestDataTooBig):
        return problem_response(
            problem_body(
                status_code=413,
                code="request_too_large",
                detail=f"The body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
                instance=instance,
            )
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    if isinstance(exc, exceptions.ValidationError):
        return problem_response(_validation_problem(exc, instance))
    if isinstance(exc, exceptions.APIException):
        headers: dict[str, str] = {}
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            headers["Retry-After"] = str(max(1, int(exc.wait + 0.999)))
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            authenticate_header = (
                context["view"].get_authenticate_header(request) if request is not None else None
            )
            if authenticate_header:
                headers["WWW-Authenticate"] = authenticate_header
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else exc.default_code
        return problem_response(
            problem_body(
                status_code=exc.status_code, code=str(code), detail=detail, instance=instance
            ),
            headers=headers,
        )

    if isinstance(exc, DatabaseOperationalError | InterfaceError) and not is_lock_wait_lost(exc):
        logger.warning("Database unavailable at %s: %s", instance, exc)
        return problem_response(
            problem_body(
                status_code=503,
                code="database_unavailable",
                detail="The database is unavailable; nothing was changed. Retry shortly.",
                instance=instance,
            ),
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, DatabaseOperationalError):
        return problem_response(
            problem_body(
                status_code=503,
                code="busy",
                detail="The resource is busy; retry shortly.",
                instance=instance,
            ),
            headers={"Retry-After": "1"},
        )

    logger.exception("Unhandled error at %s", instance)
    return problem_response(
        problem_body(
            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
            code="server_error",
            detail="An unexpected error occurred. It has been logged.",
            instance=instance,
        )
    )
