"""Input and output bodies of the points endpoints."""

from django.conf import settings
from rest_framework import serializers

from core.api.serializers import StrictInputSerializer
from rewards.models import PointsEntry, Reason

AWARD_REASONS = (Reason.MANUAL, Reason.PARTNER, Reason.PURCHASE, Reason.EVENT, Reason.CORRECTION)
DEDUCTION_REASONS = (Reason.MANUAL, Reason.CORRECTION)
REVERSAL_REASONS = (Reason.REFUND, Reason.CORRECTION)


class PointsEntrySerializer(serializers.ModelSerializer):
    reverses = serializers.PrimaryKeyRelatedField(read_only=True)
    expires_at = serializers.SerializerMethodField()
    pending_until = serializers.SerializerMethodField()

    class Meta:
        model = PointsEntry
        fields = (
            "id",
            "version",
            "kind",
            "points",
            "balance_after",
            "reason",
            "note",
            "reference",
            "actor",
            "reverses",
            "expires_at",
            "pending_until",
            "created_at",
        )
        read_only_fields = fields

    def _lot(self, entry: PointsEntry):
        try:
            return entry.lot
        except PointsEntry.lot.RelatedObjectDoesNotExist:
            return None

    def get_expires_at(self, entry: PointsEntry) -> str | None:
        lot = self._lot(entry)
        return serializers.DateTimeField().to_representation(lot.expires_at) if lot else None

    def get_pending_until(self, entry: PointsEntry) -> str | None:
        lot = self._lot(entry)
        if lot is None or lot.pending_until is None:
            return None
        return serializers.DateTimeField().to_representation(lot.pending_until)


class ExpiringPointsSerializer(serializers.Serializer):
    points = serializers.IntegerField()
    expires_at = serializers.DateField(source="expires_on", help_text="The day (UTC) they expire.")


class PointsBalanceSerializer(serializers.Serializer):
    available = serializers.IntegerField(help_text="Spendable now; negative after a refund (debt).")
    pending = serializers.IntegerField(
        help_text="Awarded but held (e.g. a purchase's return window)."
    )
    lifetime_earned = serializers.IntegerField()
    qualifying_points_90d = serializers.IntegerField()
    expiring = ExpiringPointsSerializer(many=True, help_text="Points expiring in the next 30 days.")


class PointsAwardSerializer(StrictInputSerializer):
    points = serializers.IntegerField(min_value=1, max_value=settings.LOYALTY_POINTS_MAX_AWARD)
    reason = serializers.ChoiceField(choices=AWARD_REASONS, required=False)
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    reference = serializers.RegexField(
        r"^[\w.:@/-]+$",
        max_length=200,
        required=False,
        default="",
        help_text="The cause, e.g. an order id; points for one reference are awarded once.",
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    pending_until = serializers.DateTimeField(required=False, allow_null=True, default=None)


class PointsDeductionSerializer(StrictInputSerializer):
    points = serializers.IntegerField(min_value=1, max_value=settings.LOYALTY_POINTS_MAX_AWARD)
    reason = serializers.ChoiceField(choices=DEDUCTION_REASONS, default=Reason.MANUAL)
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class PointsReversalSerializer(StrictInputSerializer):
    reason = serializers.ChoiceField(
        choices=(Reason.REFUND, Reason.CORRECTION), default=Reason.REFUND
    )
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class AwardBatchItemSerializer(StrictInputSerializer):
    external_id = serializers.CharField(max_length=128)
    points = serializers.IntegerField(min_value=1, max_value=settings.LOYALTY_POINTS_MAX_AWARD)
    reason = serializers.ChoiceField(choices=AWARD_REASONS, required=False)
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    pending_until = serializers.DateTimeField(required=False, allow_null=True, default=None)
    idempotency_key = serializers.CharField(
        max_length=255,
        required=False,
        default="",
        help_text="Per item: an item whose key this client used before is reported duplicate.",
    )


class AwardBatchSerializer(StrictInputSerializer):
    items = AwardBatchItemSerializer(
        many=True, min_length=1, max_length=settings.LOYALTY_MAX_BATCH_ITEMS
    )


class AwardBatchResultSerializer(serializers.Serializer):
    external_id = serializers.CharField()
    status = serializers.ChoiceField(choices=["accepted", "duplicate", "rejected"])
    entry_id = serializers.IntegerField(allow_null=True)
    balance_after = serializers.IntegerField(allow_null=True)
    errors = serializers.ListField(child=serializers.DictField(), default=list)


class AwardBatchResponseSerializer(serializers.Serializer):
    results = AwardBatchResultSerializer(many=True)


class CheckInSerializer(serializers.Serializer):
    date = serializers.DateField(source="business_date")
    streak = serializers.IntegerField()
    points_awarded = serializers.IntegerField()
    created_at = serializers.DateTimeField()


# --- Certifications ------------------------------------------------------------------------------


class CertificationSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    level = serializers.IntegerField()
    description = serializers.CharField()
    validity_days = serializers.IntegerField(allow_null=True)
    prerequisites = serializers.ListField(child=serializers.CharField())
    required_by_tiers = serializers.ListField(
        child=serializers.CharField(), help_text="Tiers whose rules in force require it."
    )


class CertificationGrantSerializer(serializers.Serializer):
    certification = serializers.CharField(source="certification_id")
    name = serializers.CharField(source="certification.name")
    status = serializers.CharField(help_text="held, expired or revoked")
    granted_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    evidence = serializers.CharField()
    granted_by = serializers.CharField()
    revoked_at = serializers.DateTimeField(allow_null=True)
    revoke_reason = serializers.CharField()


class CertificationGrantInputSerializer(StrictInputSerializer):
    certification = serializers.SlugField(max_length=64)
    evidence = serializers.CharField(max_length=1000, required=False, default="", allow_blank=True)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)


class CertificationRevokeInputSerializer(StrictInputSerializer):
    reason = serializers.CharField(max_length=500)
