"""HTTP interface of verifiable credentials: a member's certification, badge or title as a
signed Open Badges 3.0 credential, the issuer's published keys, and the public verification endpoint."""

import json
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, ParseError, UnsupportedMediaType
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.authentication import actor_for_user
from core.api.throttles import ClientRateThrottle
from core.models import Scope
from members.selectors import member_get_for_actor
from rewards import credentials

# The credential media type of VC 2.0; application/json is the default.
VC_MEDIA_TYPE = "application/vc"
_ACCEPTED_BODY_TYPES = ("application/json", "application/ld+json", VC_MEDIA_TYPE)
_MAX_DEPTH = 32


class VerifiableCredentialRenderer(JSONRenderer):
    media_type = VC_MEDIA_TYPE
    format = "vc"


class CredentialTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The credential is larger than this endpoint accepts."
    default_code = "request_too_large"


class CredentialProblemSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()


class CredentialVerificationSerializer(serializers.Serializer):
    verified = serializers.BooleanField(help_text="Signature valid, held, not expired.")
    signature_valid = serializers.BooleanField()
    revoked = serializers.BooleanField(
        allow_null=True, help_text="Null when the signature is invalid (nothing was checked)."
    )
    expired = serializers.BooleanField(
        allow_null=True, help_text="Null when the signature is invalid (nothing was checked)."
    )
    credential_id = serializers.CharField(allow_null=True)
    errors = CredentialProblemSerializer(many=True)


_CREDENTIAL_DESCRIPTION = (
    "The held certification as an Open Badges 3.0 OpenBadgeCredential (W3C VC 2.0), signed "
    "with a DataIntegrityProof (cryptosuite eddsa-jcs-2022, Ed25519). The subject is the "
    "member's id (urn:uuid); the display name is included only when the member opted into "
    "public recognition. A certification never granted is 404; one revoked or expired is 409 "
    "certification_not_held. 503 credentials_not_configured when no signing key is set. "
    "`Accept: application/vc` returns the same document with the VC media type."
)
_NOT_CONFIGURED = OpenApiResponse(
    description="credentials_not_configured (problem+json): no signing key is set."
)
_CREDENTIAL_RESPONSES = {
    200: OpenApiResponse(OpenApiTypes.OBJECT, description="The signed credential."),
    409: OpenApiResponse(
        description="certification_not_held (problem+json): revoked, expired or erased."
    ),
    503: _NOT_CONFIGURED,
}


def _credential_response(request: Request, member_id: UUID, code: str) -> Response:
    member = member_get_for_actor(
        actor=actor_for_user(request.user), member_id=member_id, with_identities=False
    )
    document = credentials.certification_credential_get(member=member, code=code, at=timezone.now())
    return Response(document)


class MemberCertificationCredentialView(APIView):
    member_access = ("GET",)
    operator_permissions = {"GET": ["rewards.view_certificationgrant"]}
    partner_scopes = {"GET": Scope.MEMBERS_READ}
    renderer_classes = (JSONRenderer, VerifiableCredentialRenderer)

    @extend_schema(responses=_CREDENTIAL_RESPONSES, description=_CREDENTIAL_DESCRIPTION)
    def get(self, request: Request, member_id: UUID, code: str) -> Response:
        return _credential_response(request, member_id, code)


class MeCertificationCredentialView(APIView):
    member_access = ("GET",)
    renderer_classes = (JSONRenderer, VerifiableCredentialRenderer)

    @extend_schema(responses=_CREDENTIAL_RESPONSES, description=_CREDENTIAL_DESCRIPTION)
    def get(self, request: Request, code: str) -> Response:
        return _credential_response(request, actor_for_user(request.user).member_id, code)  # type: ignore[arg-type]


_BADGE_CREDENTIAL_DESCRIPTION = (
    "A badge or title the member holds as an Open Badges 3.0 OpenBadgeCredential (W3C VC 2.0), "
    "signed like certification credentials (DataIntegrityProof, eddsa-jcs-2022, Ed25519). The "
    "achievement's achievementType is `Badge`, or `Award` for a title; validFrom is when it was "
    "awarded and there is no validUntil (badges do not expire). A badge the member does not "
    "hold (or whose definition is inactive) is 404; an erased member's is 409 badge_not_held. "
    "503 credentials_not_configured when no signing key is set. `Accept: application/vc` "
    "returns the same document with the VC media type."
)
_BADGE_CREDENTIAL_RESPONSES = {
    200: OpenApiResponse(OpenApiTypes.OBJECT, description="The signed credential."),
    409: OpenApiResponse(description="badge_not_held (problem+json): the member is erased."),
    503: _NOT_CONFIGURED,
}


def _badge_credential_response(request: Request, member_id: UUID, code: str) -> Response:
    member = member_get_for_actor(
        actor=actor_for_user(request.user), member_id=member_id, with_identities=False
    )
    return Response(credentials.badge_credential_get(member=member, code=code, at=timezone.now()))


class MemberBadgeCredentialView(APIView):
    member_access = ("GET",)
    operator_permissions = {"GET": ["rewards.view_memberbadge"]}
    partner_scopes = {"GET": Scope.MEMBERS_READ}
    renderer_classes = (JSONRenderer, VerifiableCredentialRenderer)

    @extend_schema(responses=_BADGE_CREDENTIAL_RESPONSES, description=_BADGE_CREDENTIAL_DESCRIPTION)
    def get(self, request: Request, member_id: UUID, code: str) -> Response:
        return _badge_credential_response(request, member_id, code)


class MeBadgeCredentialView(APIView):
    member_access = ("GET",)
    renderer_classes = (JSONRenderer, VerifiableCredentialRenderer)

    @extend_schema(responses=_BADGE_CREDENTIAL_RESPONSES, description=_BADGE_CREDENTIAL_DESCRIPTION)
    def get(self, request: Request, code: str) -> Response:
        return _badge_credential_response(request, actor_for_user(request.user).member_id, code)  # type: ignore[arg-type]


class CredentialIssuerView(APIView):
    """Public: the issuer's profile and keys, the id credentials name as their issuer."""

    authentication_classes = ()
    permission_classes = (AllowAny,)
    throttle_classes = (ClientRateThrottle,)

    @extend_schema(
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT), 503: _NOT_CONFIGURED},
        auth=[],
        description=(
            "The issuer's Open Badges Profile, also a controller document: its Ed25519 keys as "
            "Multikey (publicKeyMultibase; the id is the proofs' verificationMethod) and as JWK. "
            "Retired keys stay listed so what they signed still verifies."
        ),
    )
    def get(self, request: Request) -> Response:
        return Response(credentials.issuer_document())


def _depth(value: Any, limit: int) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > limit:
            break
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, dict | list)
        ]
    return depth


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ParseError("Duplicate keys in a JSON object.")
    return dict(pairs)


def _reject_constant(name: str) -> None:
    raise ParseError(f"{name} is not JSON.")


def _credential_from(request: Request) -> dict[str, Any]:
    """The posted credential (or ``{"verifiableCredential": ...}``), read with a size cap."""
    media_type = (request.content_type or "").split(";")[0].strip().lower()
    if media_type and media_type not in _ACCEPTED_BODY_TYPES:
        raise UnsupportedMediaType(media_type)
    limit = settings.LOYALTY_CREDENTIAL_MAX_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise CredentialTooLarge
    try:
        body = request.body
    except RequestDataTooBig:
        raise CredentialTooLarge from None
    if len(body) > limit:
        raise CredentialTooLarge
    try:
        document = json.loads(
            body.decode("utf-8"),
            object_pairs_hook=_unique_keys,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ParseError("The body is not valid UTF-8 JSON.") from None
    if isinstance(document, dict) and set(document) == {"verifiableCredential"}:
        document = document["verifiableCredential"]
    if not isinstance(document, dict):
        raise ParseError("The body must be a credential (a JSON object).")
    if _depth(document, _MAX_DEPTH) > _MAX_DEPTH:
        raise ParseError(f"The credential nests deeper than {_MAX_DEPTH} levels.")
    return document


class CredentialVerificationView(APIView):
    """Public (no sign-in; the anonymous rate limit applies): verify a credential."""

    authentication_classes = ()
    permission_classes = (AllowAny,)
    throttle_classes = (ClientRateThrottle,)

    @extend_schema(
        request={
            "application/json": OpenApiTypes.OBJECT,
            VC_MEDIA_TYPE: OpenApiTypes.OBJECT,
        },
        responses={
            200: CredentialVerificationSerializer,
            413: OpenApiResponse(description="request_too_large (problem+json)."),
            415: OpenApiResponse(description="unsupported_media_type (problem+json)."),
            503: _NOT_CONFIGURED,
        },
        auth=[],
        description=(
            "Verify a credential issued here: post the document itself (or "
            '`{"verifiableCredential": {...}}`). The proof is checked with the issuer\'s keys '
            "(eddsa-jcs-2022), then the holding it attests: `revoked` (revoked, the holder "
            "erased, granted afresh since, or, for a badge or title, the award withdrawn or "
            "made afresh), `expired` (its validUntil or the grant's expiry "
            "passed). `verified` is true only when the signature is valid and nothing is wrong; "
            "`errors` says why not. A tampered document is 200 with verified false; malformed "
            "JSON is 400; a body over LOYALTY_CREDENTIAL_MAX_BYTES (64 KiB) is 413."
        ),
        examples=[
            OpenApiExample(
                "Tampered",
                response_only=True,
                value={
                    "verified": False,
                    "signature_valid": False,
                    "revoked": None,
                    "expired": None,
                    "credential_id": "urn:uuid:0f9c1f9e-3f0e-5d51-a7e4-6f3b9b8f3f7a",
                    "errors": [
                        {
                            "code": "signature_invalid",
                            "detail": "The signature does not match the document.",
                        }
                    ],
                },
            )
        ],
    )
    def post(self, request: Request) -> Response:
        document = _credential_from(request)
        result = credentials.credential_verify(document=document, at=timezone.now())
        return Response(CredentialVerificationSerializer(result).data)
