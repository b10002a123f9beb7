"""Cross-cutting endpoints: health, and problem+json for Django-level 404 and 500."""

from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.exceptions import PROBLEM_CONTENT_TYPE, problem_body


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:
        return False


def _broker_status() -> str:
    if not settings.CELERY_BROKER_URL:
        return "not_configured"
    from loyalty.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(
                max_retries=1, timeout=settings.LOYALTY_BROKER_HEALTH_TIMEOUT_SECONDS
            )
    except Exception:
        return "down"
    return "ok"


class HealthView(APIView):
    """Liveness and readiness for load balancers: the database and, when configured, the broker."""

    authentication_classes = ()
    permission_classes = (AllowAny,)
    throttle_classes = ()

    @extend_schema(
        responses={
            200: inline_serializer(
                "Health",
                {
                    "status": serializers.CharField(),
                    "checks": serializers.DictField(child=serializers.CharField()),
                },
            )
        },
        auth=[],
    )
    def get(self, request: Request) -> Response:
        checks = {"database": "ok" if _database_ok() else "down", "broker": _broker_status()}
        healthy = all(value != "down" for value in checks.values())
        return Response(
            {"status": "ok" if healthy else "down", "checks": checks},
            status=200 if healthy else 503,
        )


def problem_not_found(request: HttpRequest, exception: Any = None) -> JsonResponse:
    body = problem_body(
        status_code=404, code="not_found", detail="No such resource.", instance=request.path
    )
    return JsonResponse(body, status=404, content_type=PROBLEM_CONTENT_TYPE)


def problem_server_error(request: HttpRequest) -> JsonResponse:
    body = problem_body(
        status_code=500,
        code="server_error",
        detail="An unexpected error occurred. It has been logged.",
        instance=request.path,
    )
    return JsonResponse(body, status=500, content_type=PROBLEM_CONTENT_TYPE)
