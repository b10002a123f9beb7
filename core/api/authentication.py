"""Authentication: staff and member JWTs, partner API keys. Each yields a principal with an Actor."""

import hashlib
from typing import Any
from uuid import UUID

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from rest_framework import authentication, exceptions
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import Token
from rest_framework_simplejwt.utils import get_md5_hash_password

from core.actors import Actor, ActorKind
from core.models import Partner, PartnerAPIKey
from core.read_cache import OPERATORS, PARTNER_KEYS, shared_document

MEMBER_ROLE = "member"
ROLE_CLAIM = "role"
MEMBER_CLAIM = "member_id"


class _Principal:
    """Not a Django user: carries no Django permissions, never passes ``is_staff`` checks."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None

    actor: Actor

    def has_perm(self, perm: str, obj: Any = None) -> bool:
        return False

    def has_perms(self, perm_list: Any, obj: Any = None) -> bool:
        return False


class MemberPrincipal(_Principal):
    """A member authenticated by a member JWT; stateless, so reads cost no user lookup."""

    def __init__(self, member_id: UUID):
        self.member_id = member_id
        self.actor = Actor(kind=ActorKind.MEMBER, member_id=member_id)

    def __str__(self) -> str:
        return f"member {self.member_id}"


class PartnerPrincipal(_Principal):
    """A partner system authenticated by one of its API keys."""

    def __init__(self, partner: Partner):
        self.partner = partner
        self.scopes = frozenset(partner.scopes)
        self.actor = Actor(
            kind=ActorKind.PARTNER,
            partner_id=partner.pk,
            partner_namespace=partner.namespace,
            name=partner.name,
        )

    def __str__(self) -> str:
        return f"partner {self.partner.name}"


def actor_for_user(user: AbstractBaseUser) -> Actor:
    """The Actor of an authenticated request's user (staff user or principal)."""
    actor = getattr(user, "actor", None)
    if isinstance(actor, Actor):
        return actor
    return Actor(kind=ActorKind.OPERATOR, user_id=user.pk, name=user.get_username())


class LoyaltyJWTAuthentication(JWTAuthentication):
    """Bearer JWTs. Member tokens carry ``role=member`` and ``member_id`` and need no lookup."""

    def get_user(self, validated_token: Token) -> Any:
        if validated_token.get(ROLE_CLAIM) == MEMBER_ROLE:
            try:
                return MemberPrincipal(UUID(str(validated_token[MEMBER_CLAIM])))
            except (KeyError, ValueError) as error:
                raise InvalidToken("Token carries no valid member id.") from error
        user = self._operator_get(validated_token)
        if not user.is_staff:
            # Only staff users hold operator tokens; a plain user account is not an operator.
            raise exceptions.AuthenticationFailed("User is not an operator.", code="not_operator")
        return user

    def _operator_get(self, validated_token: Token) -> Any:
        """simplejwt's user lookup, from the cache of operators (``operator_get``)."""
        try:
            user_id = validated_token[jwt_settings.USER_ID_CLAIM]
        except KeyError as error:
            raise InvalidToken("Token contained no recognizable user identification") from error
        user = operator_get(user_id)
        if user is None:
            raise exceptions.AuthenticationFailed("User not found", code="user_not_found")
        if jwt_settings.CHECK_USER_IS_ACTIVE and not user.is_active:
            raise exceptions.AuthenticationFailed("User is inactive", code="user_inactive")
        if jwt_settings.CHECK_REVOKE_TOKEN and validated_token.get(
            jwt_settings.REVOKE_TOKEN_CLAIM
        ) != get_md5_hash_password(user.password):
            raise exceptions.AuthenticationFailed(
                "The user's password has been changed.", code="password_changed"
            )
        return user


def operator_get(user_id: Any) -> Any:
    """The user a staff JWT names, with their permissions loaded (``None`` when there is none).
    Cached (``core.read_cache``) until any user, group or permission is saved or deleted or a
    membership of one changes, so an operator's requests skip the user and permission queries;
    deactivating an operator or taking a permission away counts from the next request."""

    def lookup() -> Any:
        user = get_user_model().objects.filter(**{jwt_settings.USER_ID_FIELD: user_id}).first()
        if user is not None and not user.is_superuser:
            user.get_all_permissions()  # loads the permission caches, pickled with the user
        return user

    return shared_document(kind=f"operator:{user_id}", build=lookup, token=OPERATORS)


class PartnerKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Api-Key <key>`` or ``X-Api-Key: <key>``; keys are stored hashed."""

    keyword = "Api-Key"

    def authenticate(self, request: Request) -> tuple[PartnerPrincipal, PartnerAPIKey] | None:
        key = self._key_from_headers(request)
        if key is None:
            return None
        api_key = partner_key_get(key)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid API key.", code="invalid_api_key")
        if api_key.has_expired or not api_key.partner.is_active:
            raise exceptions.AuthenticationFailed("Invalid API key.", code="invalid_api_key")
        return PartnerPrincipal(api_key.partner), api_key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword

    def _key_from_headers(self, request: Request) -> str | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        prefix = f"{self.keyword} "
        if header.startswith(prefix):
            return header[len(prefix) :].strip() or None
        return request.META.get("HTTP_X_API_KEY") or None


def partner_key_get(key: str) -> PartnerAPIKey | None:
    """The usable (unrevoked) key row matching ``key``, with its partner; ``None`` when there
    is none. A key that checked out is cached under a digest of the whole key
    (``core.read_cache``) until any partner or key is saved, revoked or deleted, so a busy
    partner's requests skip the lookup; expiry and the partner's switch are still checked on
    every request by the caller. Unknown keys are never cached."""

    def lookup() -> PartnerAPIKey | None:
        try:
            return PartnerAPIKey.objects.get_from_key(key)
        except PartnerAPIKey.DoesNotExist:
            return None

    digest = hashlib.sha256(key.encode()).hexdigest()
    return shared_document(kind=f"partner-key:{digest}", build=lookup, token=PARTNER_KEYS)
