"""HTTP interface of bulk operations: start one (202, a background job), list, follow its
progress, and page through its items' outcomes."""

from typing import Any
from uuid import UUID

from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bulk.api.serializers import (
    BulkItemQuerySerializer,
    BulkItemSerializer,
    BulkOperationCreateSerializer,
    BulkOperationSerializer,
    filter_query,
)
from bulk.models import BulkItem, BulkOperation, BulkOperationKind
from bulk.selectors import (
    VIEW_ALL_PERMISSION,
    bulk_item_list,
    bulk_operation_get_for_actor,
    bulk_operation_list_for_actor,
)
from bulk.services import Selection, bulk_operation_request
from core.actors import Actor
from core.api.authentication import actor_for_user
from core.api.idempotency import run_idempotent
from core.api.pagination import CreatedCursorPagination
from members.filters import MemberFilter
from members.selectors import member_list_for_actor

# The Django permission an operator needs for each operation (the same as the admin's actions).
OPERATION_PERMISSIONS = {
    BulkOperationKind.POINTS_AWARD: "rewards.award_points",
    BulkOperationKind.CERTIFICATION_GRANT: "rewards.grant_certification",
    BulkOperationKind.TIER_REASSESSMENT: "tiers.run_reassessment",
}


def _actor(request: Request) -> Actor:
    return actor_for_user(request.user)


def _sees_all(request: Request) -> bool:
    return bool(request.user.has_perm(VIEW_ALL_PERMISSION))


class BulkOperationPagination(CreatedCursorPagination):
    ordering = ("-created_at", "-job")


class BulkItemPagination(CreatedCursorPagination):
    ordering = ("position",)


class BulkOperationListCreateView(generics.ListAPIView):
    """Operators only: each operation needs its own permission; everyone sees their own
    operations (all of them with ``bulk.view_bulkoperation``)."""

    serializer_class = BulkOperationSerializer
    pagination_class = BulkOperationPagination
    operator_permissions: dict[str, Any] = {"GET": [], "POST": []}

    def get_queryset(self) -> QuerySet[BulkOperation]:
        if getattr(self, "swagger_fake_view", False):
            return BulkOperation.objects.none()
        return bulk_operation_list_for_actor(
            actor=_actor(self.request), sees_all=_sees_all(self.request)
        )

    @extend_schema(
        request=BulkOperationCreateSerializer,
        responses={202: BulkOperationSerializer},
        description=(
            "Start a bulk operation (`points_award`, `certification_grant` or "
            "`tier_reassessment`) on a selection of any size: `filter` (the filters of "
            "`GET members/`), `external_ids`, or `external_ids_csv`. The selection is fixed now; "
            "the work runs as a background job. 202 with the job; follow Location for progress "
            "and counts, and `items/` for each member's outcome (unknown external ids are failed "
            "items). Each member is acted on at most once, whatever the retries. 400 "
            "`empty_selection` when nothing matches; nothing is created on any 4xx."
        ),
    )
    def post(self, request: Request) -> Response:
        actor = _actor(request)
        data = BulkOperationCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        operation = data.validated_data["operation"]
        if not request.user.has_perm(OPERATION_PERMISSIONS[operation]):
            raise PermissionDenied()
        selection, description = self._selection(actor, data.validated_data)

        def effect() -> Response:
            started = bulk_operation_request(
                operation=operation,
                params=data.operation_params,
                selection=selection,
                description=description,
                actor=actor,
                at=timezone.now(),
            )
            bulk_operation = bulk_operation_get_for_actor(
                actor=actor, job_id=started.pk, sees_all=True
            )
            return Response(
                BulkOperationSerializer(bulk_operation).data, status=status.HTTP_202_ACCEPTED
            )

        response = run_idempotent(request, effect)
        if response.status_code == status.HTTP_202_ACCEPTED:
            path = reverse("v1:bulk-operation-detail", kwargs={"job_id": response.data["id"]})
            response["Location"] = request.build_absolute_uri(path)
        return response

    @staticmethod
    def _selection(actor: Actor, data: dict[str, Any]) -> tuple[Selection, dict[str, Any]]:
        if "filter" not in data:
            return Selection(external_ids=data["external_ids"]), {}
        query = filter_query(data["filter"])
        filterset = MemberFilter(data=query, queryset=member_list_for_actor(actor=actor))
        if not filterset.is_valid():
            errors = {name: list(messages) for name, messages in filterset.errors.items()}
            raise ValidationError({"filter": errors})
        return Selection(members=filterset.qs), {"filter": dict(query.lists())}


class BulkOperationDetailView(APIView):
    operator_permissions: dict[str, Any] = {"GET": []}

    @extend_schema(responses=BulkOperationSerializer)
    def get(self, request: Request, job_id: UUID) -> Response:
        bulk_operation = bulk_operation_get_for_actor(
            actor=_actor(request), job_id=job_id, sees_all=_sees_all(request)
        )
        return Response(BulkOperationSerializer(bulk_operation).data)


class BulkItemListView(generics.ListAPIView):
    """Each selected member's (or unknown external id's) outcome, in selection order."""

    serializer_class = BulkItemSerializer
    pagination_class = BulkItemPagination
    operator_permissions: dict[str, Any] = {"GET": []}

    @extend_schema(parameters=[BulkItemQuerySerializer])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[BulkItem]:
        if getattr(self, "swagger_fake_view", False):
            return BulkItem.objects.none()
        query = BulkItemQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        bulk_operation = bulk_operation_get_for_actor(
            actor=_actor(self.request),
            job_id=self.kwargs["job_id"],
            sees_all=_sees_all(self.request),
        )
        items = bulk_item_list(bulk_operation=bulk_operation)
        if "status" in query.validated_data:
            items = items.filter(status=query.validated_data["status"])
        return items
