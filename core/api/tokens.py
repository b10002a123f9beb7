"""JWT pairs for operators and members. Member tokens carry the member id, not a user id."""

from typing import Any
from uuid import UUID

from rest_framework_simplejwt.tokens import RefreshToken

from core.api.authentication import MEMBER_CLAIM, MEMBER_ROLE, ROLE_CLAIM


def _pair(refresh: RefreshToken) -> dict[str, str]:
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def operator_token_pair(user: Any) -> dict[str, str]:
    refresh = RefreshToken.for_user(user)
    refresh[ROLE_CLAIM] = "operator"
    return _pair(refresh)


def member_token_pair(member_id: UUID) -> dict[str, str]:
    refresh = RefreshToken()
    refresh[ROLE_CLAIM] = MEMBER_ROLE
    refresh[MEMBER_CLAIM] = str(member_id)
    return _pair(refresh)
