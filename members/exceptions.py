"""Domain errors about members that other apps raise too (kept free of imports, so any service
can use them without an import cycle)."""

from core.exceptions import ConflictError


class MemberErasedError(ConflictError):
    code = "member_erased"
    title = "The member is erased"
