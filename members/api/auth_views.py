"""Sign-in: operator and member JWTs from username/password, refresh, partner-minted member tokens."""

from django.contrib.auth import authenticate, get_user_model
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import RefreshToken

from core.api.authentication import MEMBER_CLAIM, MEMBER_ROLE, ROLE_CLAIM
from core.api.tokens import member_token_pair, operator_token_pair
from core.exceptions import NotFoundError
from core.models import Scope
from members.api.serializers import (
    MemberTokenInputSerializer,
    TokenObtainInputSerializer,
    TokenPairSerializer,
    TokenRefreshInputSerializer,
)
from members.models import Member
from members.selectors import member_ids_by_external_id


def _invalid_credentials() -> AuthenticationFailed:
    return AuthenticationFailed(
        "No active account with these credentials.", code="invalid_credentials"
    )


class _SignInView(APIView):
    authentication_classes = ()
    permission_classes = (AllowAny,)

    def get_authenticate_header(self, request: Request) -> str:
        # Failed sign-ins are 401 with a challenge, not 403.
        return 'Bearer realm="api"'


class TokenObtainView(_SignInView):
    """Operators and members sign in with username and password and get a JWT pair."""

    @extend_schema(request=TokenObtainInputSerializer, responses=TokenPairSerializer, auth=[])
    def post(self, request: Request) -> Response:
        data = TokenObtainInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request._request, **data.validated_data)
        if user is None or not user.is_active:
            raise _invalid_credentials()
        if user.is_staff:
            return Response(operator_token_pair(user))
        member = Member.objects.filter(user=user, erased_at__isnull=True).only("pk").first()
        if member is None:
            raise _invalid_credentials()
        return Response(member_token_pair(member.pk))


class TokenRefreshView(_SignInView):
    """Exchange a refresh token for a new pair (the refresh token rotates)."""

    @extend_schema(request=TokenRefreshInputSerializer, responses=TokenPairSerializer, auth=[])
    def post(self, request: Request) -> Response:
        data = TokenRefreshInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            refresh = RefreshToken(data.validated_data["refresh"])
        except TokenError as error:
            raise AuthenticationFailed(str(error), code="token_not_valid") from None
        if refresh.get(ROLE_CLAIM) == MEMBER_ROLE:
            # An erased member's tokens stop refreshing.
            member_id = refresh.get(MEMBER_CLAIM)
            if not Member.objects.filter(pk=member_id, erased_at__isnull=True).exists():
                raise _invalid_credentials()
            return Response(member_token_pair(member_id))
        user_id = refresh.get(jwt_settings.USER_ID_CLAIM)
        user = get_user_model().objects.filter(pk=user_id, is_active=True, is_staff=True).first()
        if user is None:
            raise _invalid_credentials()
        return Response(operator_token_pair(user))


class MemberTokenView(APIView):
    """A partner's login service mints a member JWT for an external_id (scope members:token)."""

    partner_scopes = {"POST": Scope.MEMBERS_TOKEN}

    @extend_schema(
        request=MemberTokenInputSerializer,
        responses={
            200: TokenPairSerializer,
            404: OpenApiResponse(description="No member with this external_id."),
        },
    )
    def post(self, request: Request) -> Response:
        data = MemberTokenInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        external_id = data.validated_data["external_id"]
        member_id = member_ids_by_external_id(external_ids=[external_id]).get(external_id)
        if member_id is None:
            raise NotFoundError("No member with this external_id.")
        return Response(member_token_pair(member_id))
