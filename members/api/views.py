"""HTTP interface of members, identities, tags, activity events and metrics: parse, call one
service or selector, render."""

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.actors import Actor
from core.api.authentication import actor_for_user
from core.api.exceptions import flatten_errors
from core.api.idempotency import run_idempotent
from core.api.pagination import CreatedCursorPagination
from core.api.renderers import RenderedJSON, json_rendered
from core.models import Scope
from core.read_cache import member_document, member_documents, roster_page
from members import activity, selectors, services
from members.api.serializers import (
    ActivityEventSerializer,
    EventBatchDocumentedSerializer,
    EventBatchResponseSerializer,
    EventBatchSerializer,
    EventItemSerializer,
    IdentitiesReplaceSerializer,
    IdentitySerializer,
    MeEventBatchDocumentedSerializer,
    MeEventBatchSerializer,
    MeEventItemSerializer,
    MemberCreateSerializer,
    MemberMetricsQuerySerializer,
    MemberMetricsSerializer,
    MemberSerializer,
    MemberTagSerializer,
    MemberUpdateSerializer,
    MeSerializer,
    MeUpdateSerializer,
    NamespaceTagsReplaceSerializer,
    TagSyncDocumentedSerializer,
    TagSyncItemSerializer,
    TagSyncResponseSerializer,
    TagSyncSerializer,
    event_item_parse,
)
from members.csv_io import csv_stream, members_csv_rows
from members.filters import ActivityEventFilter, MemberFilter
from members.models import ActivityEvent, Member
from members.services import TagInput, TagSyncItem, TagSyncMode
from rewards.selectors import member_overview_get
from rewards.services.earning import business_date_of


def actor_of(request: Request) -> Actor:
    return actor_for_user(request.user)


def _member_response(request: Request, member_id: UUID, status_code: int = 200) -> Response:
    """Re-read through the selector (with its prefetches) before rendering."""
    member = selectors.member_get_for_actor(actor=actor_of(request), member_id=member_id)
    return Response(MemberSerializer(member).data, status=status_code)


class MemberListCreateView(generics.ListAPIView):
    serializer_class = MemberSerializer
    filterset_class = MemberFilter
    operator_permissions = {"GET": ["members.view_member"], "POST": ["members.add_member"]}
    partner_scopes = {"GET": Scope.MEMBERS_READ, "POST": Scope.MEMBERS_WRITE}

    def get_queryset(self) -> QuerySet[Member]:
        return selectors.member_list_for_actor(actor=actor_of(self.request))

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # The filters and the cursor pick the page's members in the database; each member's
        # entry is a cached document, rendered only when the member changed. A page without
        # filters, which only creating or deleting members reorders, is also cached whole.
        def page_member_ids() -> list[UUID]:
            keys = self.filter_queryset(self.get_queryset()).prefetch_related(None)
            return [row["id"] for row in self.paginate_queryset(keys.values("id", "created_at"))]

        def render(entries: list[bytes | None]) -> bytes:
            # A member deleted between the page query and the build has no entry.
            return self.paginator.rendered_page([entry for entry in entries if entry is not None])

        # A whole page is keyed by its URL alone: only for actors who see every member (a
        # member's list holds only themselves and must never share a page with anyone's).
        if actor_of(request).is_member or not CreatedCursorPagination.only_paging(request):
            entries = member_documents(
                kind="member", member_ids=page_member_ids(), build_many=self._entries_build
            )
            return Response(RenderedJSON(render(entries)))
        page = roster_page(
            page_key=request.build_absolute_uri(),
            kind="member",
            member_ids=page_member_ids,
            build_many=self._entries_build,
            render=render,
        )
        return Response(RenderedJSON(page))

    def _entries_build(self, member_ids: Sequence[UUID]) -> dict[UUID, bytes]:
        members = self.get_queryset().filter(pk__in=member_ids)
        return {member.pk: json_rendered(MemberSerializer(member).data) for member in members}

    @extend_schema(request=MemberCreateSerializer, responses={201: MemberSerializer})
    def post(self, request: Request) -> Response:
        data = MemberCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)

        def effect() -> Response:
            member = services.member_create(
                **data.validated_data, actor=actor_of(request), at=timezone.now()
            )
            return _member_response(request, member.pk, status.HTTP_201_CREATED)

        return run_idempotent(request, effect)


class MemberDetailView(APIView):
    member_access = ("GET",)
    operator_permissions = {
        "GET": ["members.view_member"],
        "PATCH": ["members.change_member"],
        "DELETE": ["members.delete_member"],
    }
    partner_scopes = {"GET": Scope.MEMBERS_READ, "PATCH": Scope.MEMBERS_WRITE}

    @extend_schema(responses=MemberSerializer)
    def get(self, request: Request, member_id: UUID) -> Response:
        return _member_response(request, member_id)

    @extend_schema(request=MemberUpdateSerializer, responses=MemberSerializer)
    def patch(self, request: Request, member_id: UUID) -> Response:
        actor = actor_of(request)
        member = selectors.member_get_for_actor(actor=actor, member_id=member_id)
        data = MemberUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.member_update(
            member=member, changes=data.validated_data, actor=actor, at=timezone.now()
        )
        return _member_response(request, member_id)

    @extend_schema(
        responses={204: None},
        description="Erase the member's personal data; the ledger and tier history stay.",
    )
    def delete(self, request: Request, member_id: UUID) -> Response:
        actor = actor_of(request)
        member = selectors.member_get_for_actor(actor=actor, member_id=member_id)
        services.member_erase(member=member, actor=actor, at=timezone.now())
        return Response(status=status.HTTP_204_NO_CONTENT)


class MemberIdentitiesView(APIView):
    member_access = ("GET",)
    operator_permissions = {"GET": ["members.view_identity"], "PUT": ["members.change_identity"]}
    partner_scopes = {"GET": Scope.MEMBERS_READ, "PUT": Scope.MEMBERS_WRITE}

    @extend_schema(responses=IdentitySerializer(many=True))
    def get(self, request: Request, member_id: UUID) -> Response:
        member = selectors.member_get_for_actor(actor=actor_of(request), member_id=member_id)
        return Response(IdentitySerializer(selectors.identity_list(member=member), many=True).data)

    @extend_schema(request=IdentitiesReplaceSerializer, responses=IdentitySerializer(many=True))
    def put(self, request: Request, member_id: UUID) -> Response:
        actor = actor_of(request)
        member = selectors.member_get_for_actor(actor=actor, member_id=member_id)
        data = IdentitiesReplaceSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        pairs = [(item["provider"], item["value"]) for item in data.validated_data["identities"]]
        identities = services.identities_replace(
            member=member, identities=pairs, actor=actor, at=timezone.now()
        )
        return Response(IdentitySerializer(identities, many=True).data)


class MemberTagsView(APIView):
    member_access = ("GET",)
    operator_permissions = {"GET": ["members.view_membertag"]}
    partner_scopes = {"GET": Scope.MEMBERS_READ}

    @extend_schema(responses=MemberTagSerializer(many=True))
    def get(self, request: Request, member_id: UUID) -> Response:
        member = selectors.member_get_for_actor(actor=actor_of(request), member_id=member_id)
        tags = selectors.member_tags_list(member=member, at=timezone.now())
        return Response(MemberTagSerializer(tags, many=True).data)


class MemberNamespaceTagsView(APIView):
    operator_permissions = {"GET": ["members.view_membertag"], "PUT": ["members.change_membertag"]}
    partner_scopes = {"GET": Scope.MEMBERS_READ, "PUT": Scope.TAGS_WRITE}
    member_access = ("GET",)

    @extend_schema(
        operation_id="members_tags_namespace_list", responses=MemberTagSerializer(many=True)
    )
    def get(self, request: Request, member_id: UUID, namespace: str) -> Response:
        member = selectors.member_get_for_actor(actor=actor_of(request), member_id=member_id)
        tags = selectors.member_tags_list(member=member, at=timezone.now(), namespace=namespace)
        return Response(MemberTagSerializer(tags, many=True).data)

    @extend_schema(
        request=NamespaceTagsReplaceSerializer,
        responses=MemberTagSerializer(many=True),
        description="Replace the member's whole tag set in this namespace.",
    )
    def put(self, request: Request, member_id: UUID, namespace: str) -> Response:
        actor = actor_of(request)
        member = selectors.member_get_for_actor(actor=actor, member_id=member_id)
        data = NamespaceTagsReplaceSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        now = timezone.now()
        services.tags_replace_namespace(
            member=member,
            namespace=namespace,
            tags=[TagInput(**tag) for tag in data.validated_data["tags"]],
            actor=actor,
            at=now,
        )
        tags = selectors.member_tags_list(member=member, at=now, namespace=namespace)
        return Response(MemberTagSerializer(tags, many=True).data)


class TagSyncView(APIView):
    operator_permissions = {"POST": ["members.change_membertag"]}
    partner_scopes = {"POST": Scope.TAGS_WRITE}

    @extend_schema(
        request=TagSyncDocumentedSerializer,
        responses={
            200: TagSyncResponseSerializer,
            404: OpenApiResponse(description="unknown_namespace: no partner owns the namespace."),
        },
        description=(
            "Bulk tag sync for up to 1,000 members in one namespace. `replace` makes each listed "
            "member's tags exactly the given set; `merge` adds and updates, removing nothing. "
            "Each member gets its own result: updated, unchanged, not_found or rejected."
        ),
    )
    def post(self, request: Request) -> Response:
        envelope = TagSyncSerializer(data=request.data)
        envelope.is_valid(raise_exception=True)
        items, positions, rejected = _validate_sync_items(envelope.validated_data["members"])

        def effect() -> Response:
            results = services.tags_sync(
                namespace=envelope.validated_data["namespace"],
                mode=TagSyncMode(envelope.validated_data["mode"]),
                items=items,
                actor=actor_of(request),
                at=timezone.now(),
            )
            by_position = dict(zip(positions, results, strict=True))
            body = [
                rejected.get(position) or _result_body(by_position[position])
                for position in range(len(envelope.validated_data["members"]))
            ]
            return Response({"results": body})

        return run_idempotent(request, effect)


def _validate_sync_items(
    raw_items: list[Any],
) -> tuple[list[TagSyncItem], list[int], dict[int, dict[str, Any]]]:
    """Validate each item on its own: one bad item is rejected, the others still sync."""
    items: list[TagSyncItem] = []
    positions: list[int] = []
    rejected: dict[int, dict[str, Any]] = {}
    seen: set[str] = set()
    for position, raw in enumerate(raw_items):
        item = TagSyncItemSerializer(data=raw)
        if not item.is_valid():
            external_id = raw.get("external_id") if isinstance(raw, dict) else None
            rejected[position] = _rejected_body(external_id, ValidationError(item.errors))
            continue
        external_id = item.validated_data["external_id"]
        if external_id in seen:
            error = ValidationError({"external_id": ["This member is listed twice."]})
            rejected[position] = _rejected_body(external_id, error)
            continue
        seen.add(external_id)
        tags = [TagInput(**tag) for tag in item.validated_data["tags"]]
        items.append(TagSyncItem(external_id=external_id, tags=tags))
        positions.append(position)
    return items, positions, rejected


def _rejected_body(external_id: Any, error: ValidationError) -> dict[str, Any]:
    return {
        "external_id": str(external_id) if external_id is not None else "",
        "status": "rejected",
        "member_id": None,
        "errors": list(flatten_errors(error.detail)),
    }


def _result_body(result: services.TagSyncResult) -> dict[str, Any]:
    return {
        "external_id": result.external_id,
        "status": result.status.value,
        "member_id": str(result.member_id) if result.member_id else None,
        "errors": result.errors,
    }


class MeView(APIView):
    """The signed-in member's own profile."""

    member_access = ("GET", "PATCH")

    @extend_schema(
        responses=MeSerializer,
        description=(
            "The signed-in member's own view in one response: profile, title, tier with "
            "progress to the next tier, balance, benefits, badges and certifications."
        ),
    )
    def get(self, request: Request) -> Response:
        actor = actor_of(request)
        return Response(
            member_document(
                kind="me",
                member_id=actor.member_id,  # type: ignore[arg-type]
                build=lambda: _me_document(request),
            )
        )

    @extend_schema(request=MeUpdateSerializer, responses=MeSerializer)
    def patch(self, request: Request) -> Response:
        actor = actor_of(request)
        member = selectors.member_get_for_actor(actor=actor, member_id=actor.member_id)  # type: ignore[arg-type]
        data = MeUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.member_update(
            member=member, changes=data.validated_data, actor=actor, at=timezone.now()
        )
        return _me_response(request)


def _me_response(request: Request) -> Response:
    return Response(_me_document(request))


def _me_document(request: Request) -> dict[str, Any]:
    """Re-read the member and everything of their own view (a constant number of queries)."""
    actor = actor_of(request)
    member = selectors.member_get_for_actor(actor=actor, member_id=actor.member_id)  # type: ignore[arg-type]
    overview = member_overview_get(member=member, at=timezone.now())
    return dict(MeSerializer(overview).data)


# --- Activity events and metrics ------------------------------------------------------------------

_EVENTS_DESCRIPTION = (
    "Each event gets its own result, in order: `accepted` (stored; `points_awarded` by the "
    "earning rules, within daily caps and velocity limits), `duplicate` (this source sent the "
    "id before, or earlier in the batch; nothing changes) or `rejected` with a `reason`: "
    "`bad_field`, `unknown_member`, `unknown_type`, `forbidden_type`, `out_of_order` (older "
    "than LOYALTY_EVENT_MAX_AGE_DAYS) or `in_the_future`. The batch is one transaction."
)


class EventIngestView(APIView):
    operator_permissions = {"POST": ["members.add_activityevent"]}
    partner_scopes = {"POST": Scope.EVENTS_WRITE}

    @extend_schema(
        request=EventBatchDocumentedSerializer,
        responses=EventBatchResponseSerializer,
        description=(
            "Send up to 1,000 activity events of members named by `external_id`. Event ids are "
            "unique per source (a partner's namespace, or `operator`). " + _EVENTS_DESCRIPTION
        ),
    )
    def post(self, request: Request) -> Response:
        envelope = EventBatchSerializer(data=request.data)
        envelope.is_valid(raise_exception=True)
        return _events_ingest(request, envelope.validated_data["events"], EventItemSerializer)


class MeEventIngestView(APIView):
    member_access = ("POST",)

    @extend_schema(
        request=MeEventBatchDocumentedSerializer,
        responses=EventBatchResponseSerializer,
        description=(
            "The signed-in member reports their own engagement (types members may post: login, "
            "post, comment, like, share and custom ones allowed by operators; never purchases), "
            "at most LOYALTY_MEMBER_EVENT_MAX_AGE_HOURS old. " + _EVENTS_DESCRIPTION
        ),
    )
    def post(self, request: Request) -> Response:
        envelope = MeEventBatchSerializer(data=request.data)
        envelope.is_valid(raise_exception=True)
        return _events_ingest(request, envelope.validated_data["events"], MeEventItemSerializer)


def _events_ingest(
    request: Request, raw_items: list[Any], item_serializer: type[serializers.Serializer]
) -> Response:
    items, positions, rejected = _validate_event_items(raw_items, item_serializer)

    def effect() -> Response:
        results = activity.events_ingest(items=items, actor=actor_of(request), at=timezone.now())
        by_position = dict(zip(positions, results, strict=True))
        body = [
            rejected.get(position) or _event_result_body(by_position[position])
            for position in range(len(raw_items))
        ]
        return Response({"results": body})

    return run_idempotent(request, effect)


def _validate_event_items(
    raw_items: list[Any], item_serializer: type[serializers.Serializer]
) -> tuple[list[activity.EventInput], list[int], dict[int, dict[str, Any]]]:
    """Validate each event on its own: a malformed one is rejected, the others go ahead."""
    items: list[activity.EventInput] = []
    positions: list[int] = []
    rejected: dict[int, dict[str, Any]] = {}
    # One serializer validates every item: its fields are built once, not a thousand times.
    validator = item_serializer()
    # Partners' items in their final form skip the serializer (same result, a fraction of the
    # time); anything else, errors included, goes through it.
    parse = event_item_parse if item_serializer is EventItemSerializer else None
    times: dict[str, Any] = {}
    for position, raw in enumerate(raw_items):
        try:
            data = (parse and parse(raw, times)) or validator.run_validation(raw)
        except ValidationError as error:
            event_id = raw.get("id") if isinstance(raw, dict) else None
            rejected[position] = {
                "id": str(event_id)[:128] if event_id is not None else "",
                "status": activity.EventStatus.REJECTED.value,
                "reason": activity.RejectReason.BAD_FIELD.value,
                "points_awarded": 0,
                "errors": list(flatten_errors(error.detail)),
            }
            continue
        items.append(
            activity.EventInput(
                event_id=data["id"],
                type=data["type"],
                occurred_at=data["occurred_at"],
                external_id=data.get("external_id", ""),
                properties=data["properties"],
            )
        )
        positions.append(position)
    return items, positions, rejected


def _event_result_body(result: activity.EventResult) -> dict[str, Any]:
    return {
        "id": result.event_id,
        "status": result.status.value,
        "reason": result.reason.value if result.reason else None,
        "points_awarded": result.points_awarded,
        "errors": result.errors,
    }


class OccurredCursorPagination(CreatedCursorPagination):
    """Newest activity first, by the (member, -occurred_at, -id) index."""

    ordering = ("-occurred_at", "-id")


class MemberEventListView(generics.ListAPIView):
    serializer_class = ActivityEventSerializer
    filterset_class = ActivityEventFilter
    pagination_class = OccurredCursorPagination
    member_access = ("GET",)
    operator_permissions = {"GET": ["members.view_activityevent"]}
    partner_scopes = {"GET": Scope.MEMBERS_READ}

    def get_queryset(self) -> QuerySet[ActivityEvent]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no member
            return ActivityEvent.objects.none()
        member = selectors.member_get_for_actor(
            actor=actor_of(self.request), member_id=self.kwargs["member_id"], with_identities=False
        )
        return selectors.activity_event_list(member=member)


class MemberMetricsView(APIView):
    member_access = ("GET",)
    operator_permissions = {"GET": ["members.view_memberdailyactivity"]}
    partner_scopes = {"GET": Scope.MEMBERS_READ}

    @extend_schema(
        parameters=[
            OpenApiParameter("window_days", int, description="1 to 366 days (default 30)."),
            OpenApiParameter(
                "as_of", OpenApiTypes.DATE, description="The window's last day (default today)."
            ),
        ],
        responses=MemberMetricsSerializer,
        description=(
            "The member's default tier metrics over the window of business days ending on "
            "`as_of`: interactions, active_days, posts, shares, purchases, purchase_amount, "
            "qualifying_points, checkin_streak, tenure_days."
        ),
    )
    def get(self, request: Request, member_id: UUID) -> Response:
        member = selectors.member_get_for_actor(
            actor=actor_of(request), member_id=member_id, with_identities=False
        )
        query = MemberMetricsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        as_of = query.validated_data.get("as_of") or business_date_of(timezone.now())
        window_days = query.validated_data["window_days"]
        metrics = selectors.member_metrics_list(
            member_ids=[member.pk], as_of=as_of, window_days=window_days
        )[member.pk]
        body = MemberMetricsSerializer.body(
            member_id=member.pk, as_of=as_of, window_days=window_days, metrics=metrics
        )
        return Response(MemberMetricsSerializer(body).data)


# --- CSV export ----------------------------------------------------------------------------------


class MemberCsvRenderer(BaseRenderer):
    """Lets a client ask for ``text/csv``; the export streams its own body, and an error (a
    problem document) is still JSON."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: dict[str, Any] | None = None,
    ) -> bytes:
        return JSONRenderer().render(data)


class MemberExportView(generics.GenericAPIView):
    """Any filtered member list as CSV, streamed."""

    filterset_class = MemberFilter
    pagination_class = None
    renderer_classes = (JSONRenderer, MemberCsvRenderer)
    operator_permissions = {"GET": ["members.view_member"]}
    partner_scopes = {"GET": Scope.MEMBERS_READ}

    def get_queryset(self) -> QuerySet[Member]:
        return selectors.member_list_for_actor(actor=actor_of(self.request))

    @extend_schema(
        filters=True,
        parameters=[OpenApiParameter("format", exclude=True)],
        responses={(200, "text/csv"): OpenApiTypes.STR},
        description=(
            "The members matching the filters of `GET members/` as a CSV file (UTF-8 with a byte "
            "order mark), streamed, by external_id: id, external_id, display_name, email, "
            "phone, tier, lifecycle_stage, joined_at, tags (`namespace:key=value;...`), "
            "points_available, points_pending, points_lifetime_earned. Read in chunks with a "
            "constant number of queries per chunk, so any size streams in flat memory."
        ),
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        members = self.filter_queryset(self.get_queryset())
        response = StreamingHttpResponse(
            csv_stream(rows=members_csv_rows(members=members)),
            content_type="text/csv; charset=utf-8",
        )
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="members-{stamp}.csv"'
        return response
