"""OpenAPI post-processing: document the problem+json errors every operation can return."""

from typing import Any

from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
)

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
            for code, response in operation["responses"].items():
                # A view's own error response (``OpenApiResponse(description=...)``) is a problem too.
                if code.isdigit() and int(code) >= 400 and "content" not in response:
                    response["content"] = {"application/problem+json": {"schema": PROBLEM_REF}}
    _allow_blank_formats(result["components"]["schemas"])
    _add_links(result.get("paths", {}))
    return result


# OpenAPI links (what a client, or a stateful fuzzer, can call next with an answer's values):
# (path, method, status) -> [(link name, target path, target method, parameters)].
_MEMBER_FROM_BODY = {"member_id": "$response.body#/id"}
_MEMBER_FROM_PATH = {"member_id": "$request.path.member_id"}
_LINKS = {
    ("/api/v1/members/", "post", "201"): [
        ("GetMember", "/api/v1/members/{member_id}/", "get", _MEMBER_FROM_BODY),
        ("AwardPoints", "/api/v1/members/{member_id}/points/awards/", "post", _MEMBER_FROM_BODY),
        ("GetBalance", "/api/v1/members/{member_id}/points/", "get", _MEMBER_FROM_BODY),
    ],
    ("/api/v1/members/{member_id}/points/awards/", "post", "201"): [
        ("GetBalance", "/api/v1/members/{member_id}/points/", "get", _MEMBER_FROM_PATH),
        ("ListEntries", "/api/v1/members/{member_id}/points/entries/", "get", _MEMBER_FROM_PATH),
        (
            "ReverseEntry",
            "/api/v1/points/entries/{entry_id}/reversal/",
            "post",
            {"entry_id": "$response.body#/id"},
        ),
    ],
}


def _add_links(paths: dict[str, Any]) -> None:
    for (path, method, code), links in _LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(code)
        if response is None:
            continue
        for name, target_path, target_method, parameters in links:
            target = paths.get(target_path, {}).get(target_method)
            if target is not None:
                response.setdefault("links", {})[name] = {
                    "operationId": target["operationId"],
                    "parameters": parameters,
                }


_BLANKABLE_FORMATS = {"email", "uri"}


def _allow_blank_formats(schemas: dict[str, Any]) -> None:
    """A read-only email or URL copied from a model field is "" when the member or operator left
    it blank, which no ``format`` accepts: document the empty string as the other allowed value."""
    for component in schemas.values():
        for prop in (component.get("properties") or {}).values():
            if prop.get("readOnly") and prop.get("format") in _BLANKABLE_FORMATS:
                blank_format = prop.pop("format")
                prop["anyOf"] = [{"format": blank_format}, {"maxLength": 0}]


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


class StrictInputScheme(OpenApiSerializerExtension):
    """Input serializers refuse unknown fields (400): the schema says so, so that generated
    clients and fuzzers do not send them as valid."""

    target_class = "core.api.serializers.StrictInputSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        schema["additionalProperties"] = False
        return schema
