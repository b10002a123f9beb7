"""Every API operation, read from the URL resolver (not a hand-kept list), with the access rules
its view declares, so a newly added endpoint is covered by the security tests automatically."""

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.views import APIView

from core.api.permissions import RolePermission

API_PREFIX = "/api/v1/"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PARAM = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")
_READ_ALIASES = {"HEAD": "GET", "OPTIONS": "GET"}


@dataclass(frozen=True)
class Operation:
    route: str  # "/api/v1/members/<uuid:member_id>/"
    method: str  # "GET"
    view: type[APIView]

    @property
    def label(self) -> str:
        return f"{self.method} {self.path_template}"

    @property
    def path_template(self) -> str:
        """The OpenAPI form: ``/api/v1/members/{member_id}/``."""
        return _PARAM.sub(lambda match: "{" + match["name"] + "}", self.route)

    @property
    def params(self) -> dict[str, str]:
        """Path parameter name -> converter (``uuid``, ``int``, ``slug``, ``str``)."""
        return {match["name"]: match["converter"] or "str" for match in _PARAM.finditer(self.route)}

    def path(self, values: Mapping[str, Any]) -> str:
        return _PARAM.sub(lambda match: str(values[match["name"]]), self.route)

    @property
    def is_public(self) -> bool:
        """No role check at all: the view replaced the default RolePermission."""
        return RolePermission not in tuple(self.view.permission_classes)

    @property
    def member_may(self) -> bool:
        allowed = getattr(self.view, "member_access", ())
        return self.method in allowed or "*" in allowed

    @property
    def partner_scope(self) -> str | None:
        return _for_method(getattr(self.view, "partner_scopes", {}), self.method)

    @property
    def operator_permissions(self) -> list[str] | None:
        return _for_method(getattr(self.view, "operator_permissions", {}), self.method)


def _for_method(rules: Mapping[str, Any], method: str) -> Any:
    method = _READ_ALIASES.get(method, method)
    return rules.get(method, rules.get("*"))


def _walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.callback


def _methods(view: type[APIView]) -> list[str]:
    return [
        name.upper()
        for name in view.http_method_names
        if name not in {"head", "options", "trace"} and hasattr(view, name)
    ]


def api_operations() -> list[Operation]:
    """Every (route, method) served under /api/v1/, in URL order."""
    operations = []
    for route, callback in _walk(get_resolver().url_patterns, "/"):
        view = getattr(callback, "cls", None)
        if not route.startswith(API_PREFIX) or view is None:
            continue
        operations.extend(Operation(route, method, view) for method in _methods(view))
    return operations


def dummy_values(operation: Operation) -> dict[str, str]:
    """Path values that resolve but name nothing: role checks answer before any lookup."""
    by_converter = {
        "uuid": "6f1c2a9e-0000-4000-8000-000000000001",
        "int": "987654321",
        "slug": "no-such-thing",
        "str": "no-such-thing",
        "path": "no-such-thing",
    }
    return {name: by_converter[converter] for name, converter in operation.params.items()}
