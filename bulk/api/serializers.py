"""Input and output bodies of the bulk operation endpoints."""

from datetime import datetime
from typing import Any

from django.conf import settings
from django.http import QueryDict
from rest_framework import serializers

from bulk.models import BulkItem, BulkOperation, BulkOperationKind, ItemStatus
from bulk.services import POINTS_REASONS, external_ids_from_csv
from core.api.serializers import StrictInputSerializer
from core.exceptions import InvalidInputError
from members.models import LifecycleStage

# A request body names at most this many external ids; larger lists are split by the caller.
MAX_EXTERNAL_IDS = 100_000

_OPERATION_FIELDS = {
    BulkOperationKind.POINTS_AWARD: {"points", "reason", "note", "expires_at"},
    BulkOperationKind.CERTIFICATION_GRANT: {"certification", "evidence", "expires_at"},
    BulkOperationKind.TIER_REASSESSMENT: set(),
}
_REQUIRED = {
    BulkOperationKind.POINTS_AWARD: ("points",),
    BulkOperationKind.CERTIFICATION_GRANT: ("certification",),
    BulkOperationKind.TIER_REASSESSMENT: (),
}
_SELECTIONS = ("filter", "external_ids", "external_ids_csv")


class BulkMemberFilterSerializer(StrictInputSerializer):
    """The member list's filters (``GET members/``), as an object; all of them must hold."""

    external_id = serializers.CharField(required=False, max_length=128)
    tier = serializers.CharField(required=False, max_length=32, help_text="A tier code.")
    lifecycle_stage = serializers.ChoiceField(choices=LifecycleStage.choices, required=False)
    tag = serializers.ListField(
        child=serializers.CharField(max_length=450),
        required=False,
        max_length=20,
        help_text="Each `namespace:key` or `namespace:key=value`; a member must carry all.",
    )
    joined_after = serializers.DateTimeField(required=False)
    joined_before = serializers.DateTimeField(required=False)
    search = serializers.CharField(required=False, max_length=100)


def filter_query(filters: dict[str, Any]) -> QueryDict:
    """Validated filters as the member list's query parameters (what ``MemberFilter`` reads)."""
    query = QueryDict(mutable=True)
    for name, value in filters.items():
        if isinstance(value, list):
            query.setlist(name, [str(item) for item in value])
        elif isinstance(value, datetime):
            query[name] = value.isoformat()
        else:
            query[name] = str(value)
    return query


class BulkOperationCreateSerializer(StrictInputSerializer):
    operation = serializers.ChoiceField(choices=BulkOperationKind.choices)
    points = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=settings.LOYALTY_POINTS_MAX_AWARD,
        help_text="points_award: for each member.",
    )
    reason = serializers.ChoiceField(
        choices=POINTS_REASONS, required=False, help_text="points_award: default `manual`."
    )
    note = serializers.CharField(
        required=False, allow_blank=True, max_length=500, help_text="points_award."
    )
    expires_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="points_award: when the points expire; certification_grant: when the grant "
        "expires (default: the certification's validity).",
    )
    certification = serializers.CharField(
        required=False, max_length=64, help_text="certification_grant: its code."
    )
    evidence = serializers.CharField(
        required=False, allow_blank=True, max_length=1000, help_text="certification_grant."
    )
    filter = BulkMemberFilterSerializer(
        required=False, help_text="Select the members matching these filters (`{}`: everyone)."
    )
    external_ids = serializers.ListField(
        child=serializers.CharField(max_length=128),
        required=False,
        max_length=MAX_EXTERNAL_IDS,
        help_text="Or select these members; unknown ids become failed items.",
    )
    external_ids_csv = serializers.CharField(
        required=False,
        max_length=MAX_EXTERNAL_IDS * 130,
        trim_whitespace=False,
        help_text="Or CSV text whose first column holds the external ids (an `external_id` "
        "header row is optional).",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        given = [name for name in _SELECTIONS if name in attrs]
        if len(given) != 1:
            raise serializers.ValidationError(
                {"filter": ["Give exactly one of filter, external_ids, external_ids_csv."]},
                code="selection",
            )
        operation = attrs["operation"]
        errors = {
            name: ["Not used by this operation."]
            for name in attrs
            if name not in {"operation", *_SELECTIONS, *_OPERATION_FIELDS[operation]}
        }
        errors.update(
            {
                name: ["Required by this operation."]
                for name in _REQUIRED[operation]
                if name not in attrs
            }
        )
        if errors:
            raise serializers.ValidationError(errors, code="invalid")
        if "external_ids_csv" in attrs:
            try:
                ids = external_ids_from_csv(attrs.pop("external_ids_csv"))
            except InvalidInputError as error:
                raise serializers.ValidationError(
                    {"external_ids_csv": [error.detail]}, code="invalid"
                ) from None
            too_long = [value for value in ids if len(value) > 128]
            if too_long or len(ids) > MAX_EXTERNAL_IDS:
                raise serializers.ValidationError(
                    {
                        "external_ids_csv": [
                            f"External ids are at most 128 characters, {MAX_EXTERNAL_IDS} of them."
                        ]
                    },
                    code="invalid",
                )
            attrs["external_ids"] = ids
        return attrs

    @property
    def operation_params(self) -> dict[str, Any]:
        data = self.validated_data
        return {name: data[name] for name in _OPERATION_FIELDS[data["operation"]] if name in data}


class BulkOperationSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="job_id", read_only=True)
    status = serializers.CharField(source="job.status", read_only=True)
    progress = serializers.FloatField(
        source="job.progress", read_only=True, help_text="Share of chunks done, 0 to 1."
    )
    parameters = serializers.SerializerMethodField()
    items_total = serializers.IntegerField(source="job.items_total", read_only=True)
    items_done = serializers.IntegerField(source="job.items_done", read_only=True)
    chunks_total = serializers.IntegerField(source="job.chunks_total", read_only=True)
    chunks_done = serializers.IntegerField(source="job.chunks_done", read_only=True)
    requested_by = serializers.CharField(source="job.requested_by", read_only=True)
    started_at = serializers.DateTimeField(source="job.started_at", read_only=True, allow_null=True)
    finished_at = serializers.DateTimeField(
        source="job.finished_at", read_only=True, allow_null=True
    )
    error = serializers.CharField(source="job.error", read_only=True)

    class Meta:
        model = BulkOperation
        fields = (
            "id",
            "operation",
            "status",
            "progress",
            "selection",
            "parameters",
            "items_total",
            "items_done",
            "succeeded_count",
            "skipped_count",
            "failed_count",
            "chunks_total",
            "chunks_done",
            "requested_by",
            "created_at",
            "started_at",
            "finished_at",
            "error",
        )
        read_only_fields = fields

    def get_parameters(self, bulk_operation: BulkOperation) -> dict[str, Any]:
        """The operation's parameters and how the selection was given."""
        return {
            name: value
            for name, value in bulk_operation.job.params.items()
            if name not in ("actor", "chunk_size", "operation")
        }


class BulkItemSerializer(serializers.ModelSerializer):
    member = serializers.UUIDField(source="member_id", read_only=True, allow_null=True)

    class Meta:
        model = BulkItem
        fields = ("position", "external_id", "member", "status", "outcome", "detail", "finished_at")
        read_only_fields = fields


class BulkItemQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=ItemStatus.choices, required=False)
