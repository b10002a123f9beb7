"""OpenAPI post-processing: document the problem+json errors every operation can return."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

_PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "Stable machine-readable code."},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "attr": {"type": "string", "nullable": True},
                    "pointer": {"type": "string"},
                    "code": {"type": "string"},
                    "detail": {"type": "string"},
                },
                "required": ["pointer", "code", "detail"],
            },
        },
    },
    "required": ["type", "title", "status", "detail", "code"],
}

_DESCRIPTIONS = {
    "400": "Invalid input (per-field errors in `errors`).",
    "401": "Missing or invalid credentials.",
    "403": "Authenticated, but not allowed to do this.",
    "404": "Not found, or not visible to the caller.",
    "409": "Conflicts with the current state.",
    "422": "Idempotency-Key reused with a different request.",
    "429": "Rate limit exceeded; see Retry-After.",
    "503": "Busy or a dependency is down; retry later.",
}


_IDEMPOTENCY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Makes the request safe to retry: a replay returns the first response and changes "
        "nothing; the same key with a different body answers 422."
    ),
    "schema": {"type": "string", "maxLength": 255},
}


def _problem(code: str) -> dict[str, Any]:
    return {
        "description": _DESCRIPTIONS[code],
        "content": {"application/problem+json": {"schema": PROBLEM_REF}},
    }


def add_problem_responses(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    result.setdefault("components", {}).setdefault("schemas", {})["Problem"] = _PROBLEM_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            codes = ["400", "401", "403", "429"]
            if "{" in path:
                codes.append("404")
            if method == "post" and "/auth/" not in path:
                codes.extend(["409", "422", "503"])
                operation.setdefault("parameters", []).append(_IDEMPOTENCY_PARAMETER)
            for code in codes:
                operation["responses"].setdefault(code, _problem(code))
    return result


class LoyaltyJWTScheme(OpenApiAuthenticationExtension):
    target_class = "core.api.authentication.LoyaltyJWTAuthentication"
    name = "jwtAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "Operator or member access token from auth/token/ or auth/member-tokens/.",
        }


class PartnerKeyScheme(OpenApiAuthenticationExtension):
    target_class = "core.api.authentication.PartnerKeyAuthentication"
    name = "partnerKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'Partner API key: "Api-Key <key>" (the X-Api-Key header also works).',
        }
