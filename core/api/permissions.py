"""Function-level access: one permission class reads each view's declared access rules.

A view declares, per HTTP method (``"*"`` for any):
- ``operator_permissions``: the Django permissions a staff user needs (absent: operators may not);
- ``partner_scopes``: the API-key scope a partner needs (absent: partners may not);
- ``member_access``: the methods a member may call (their own data only, scoped by the selector).
Object-level access (a member's own rows, 404 for others) is the selectors' job.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from core.api.authentication import MemberPrincipal, PartnerPrincipal

_READ_ALIASES = {"HEAD": "GET", "OPTIONS": "GET"}


def _for_method(rules: Mapping[str, Any], method: str) -> Any:
    method = _READ_ALIASES.get(method, method)
    return rules.get(method, rules.get("*"))


class RolePermission(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not user or not user.is_authenticated:
            return False
        method = request.method or "GET"
        if isinstance(user, MemberPrincipal):
            allowed: Sequence[str] = getattr(view, "member_access", ())
            return _READ_ALIASES.get(method, method) in allowed or "*" in allowed
        if isinstance(user, PartnerPrincipal):
            scope = _for_method(getattr(view, "partner_scopes", {}), method)
            return scope is not None and scope in user.scopes
        if not user.is_staff:
            return False
        permissions = _for_method(getattr(view, "operator_permissions", {}), method)
        return permissions is not None and user.has_perms(permissions)


def role_of(user: Any) -> str:
    """The client class of a request's user, for throttling and logs."""
    if isinstance(user, MemberPrincipal):
        return "member"
    if isinstance(user, PartnerPrincipal):
        return "partner"
    if user is not None and user.is_authenticated:
        return "operator"
    return "anonymous"
