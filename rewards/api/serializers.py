"""Input and output bodies of the points endpoints."""

import re
from typing import Any

from django.conf import settings
from rest_framework import serializers

from core.api.serializers import StrictInputSerializer
from rewards.models import EntryKind, PointsEntry, Reason, Redemption, RedemptionStatus, Reward
from rewards.selectors import reward_blockers_of

AWARD_REASONS = (Reason.MANUAL, Reason.PARTNER, Reason.PURCHASE, Reason.EVENT, Reason.CORRECTION)
DEDUCTION_REASONS = (Reason.MANUAL, Reason.CORRECTION)
REVERSAL_REASONS = (Reason.REFUND, Reason.CORRECTION)


def _help(field: str) -> str:
    return str(PointsEntry._meta.get_field(field).help_text)


_DATETIME = serializers.DateTimeField()


class PointsEntrySerializer(serializers.Serializer):
    """An entry of the ledger.

    It renders every award on the hot path, so the fields declared here are the schema and
    ``to_representation`` renders them directly: DRF deep-copies every declared field for each
    serializer instance, which cost more than the rest of the response. A test checks that both
    give the same document.
    """

    id = serializers.IntegerField(read_only=True)
    version = serializers.IntegerField(read_only=True)
    kind = serializers.ChoiceField(choices=EntryKind.choices, read_only=True)
    points = serializers.IntegerField(read_only=True)
    balance_after = serializers.IntegerField(read_only=True, help_text=_help("balance_after"))
    reason = serializers.ChoiceField(choices=Reason.choices, read_only=True)
    note = serializers.CharField(read_only=True)
    reference = serializers.CharField(read_only=True, default="", help_text=_help("reference"))
    actor = serializers.CharField(read_only=True)
    reverses = serializers.IntegerField(source="reverses_id", read_only=True, allow_null=True)
    expires_at = serializers.DateTimeField(
        source="lot.expires_at",
        read_only=True,
        allow_null=True,
        help_text="When the points it credited expire; null for an entry that credited none.",
    )
    pending_until = serializers.DateTimeField(
        source="lot.pending_until",
        read_only=True,
        allow_null=True,
        help_text="When held points become spendable (a purchase's return window); null when "
        "the award was never held.",
    )
    created_at = serializers.DateTimeField(read_only=True)

    def to_representation(self, entry: PointsEntry) -> dict[str, Any]:
        try:
            lot = entry.lot
        except PointsEntry.lot.RelatedObjectDoesNotExist:
            lot = None
        pending_until = lot.pending_until if lot is not None else None
        return {
            "id": entry.pk,
            "version": entry.version,
            "kind": str(entry.kind),
            "points": entry.points,
            "balance_after": entry.balance_after,
            "reason": str(entry.reason),
            "note": entry.note,
            "reference": entry.reference,
            "actor": entry.actor,
            "reverses": entry.reverses_id,
            "expires_at": _DATETIME.to_representation(lot.expires_at) if lot else None,
            "pending_until": _DATETIME.to_representation(pending_until) if pending_until else None,
            "created_at": _DATETIME.to_representation(entry.created_at),
        }


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


REFERENCE_PATTERN = re.compile(r"^[\w.:@/-]+$")


class PointsAwardSerializer(StrictInputSerializer):
    points = serializers.IntegerField(min_value=1, max_value=settings.LOYALTY_POINTS_MAX_AWARD)
    reason = serializers.ChoiceField(choices=AWARD_REASONS, required=False)
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    reference = serializers.RegexField(
        REFERENCE_PATTERN,
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


_AWARD_FIELDS = frozenset(PointsAwardSerializer._declared_fields)
_AWARD_BATCH_ITEM_FIELDS = frozenset(AwardBatchItemSerializer._declared_fields)
_AWARD_REASON_OF = {str(reason): reason for reason in AWARD_REASONS}


def _plain_text(value: Any, max_length: int) -> bool:
    """A string that ``CharField`` keeps as is: printable (so no NUL or surrogate), nothing to
    trim, not too long."""
    return (
        type(value) is str
        and len(value) <= max_length
        and value.isprintable()
        and value.strip() == value
    )


def _plain_award(raw: dict[str, Any]) -> dict[str, Any] | None:
    """The points, note, reason and (absent) dates of an award body or batch item, as the
    serializers validate them, when each is already in its final form; else ``None``."""
    points, note = raw.get("points"), raw.get("note", "")
    if not (
        type(points) is int
        and 1 <= points <= settings.LOYALTY_POINTS_MAX_AWARD
        and _plain_text(note, 500)
        and raw.get("expires_at") is None
        and raw.get("pending_until") is None
    ):
        return None
    values = {"points": points, "note": note, "expires_at": None, "pending_until": None}
    if "reason" in raw:
        reason = raw["reason"]
        if type(reason) is not str or reason not in _AWARD_REASON_OF:
            return None
        values["reason"] = _AWARD_REASON_OF[reason]
    return values


def award_parse(data: Any) -> dict[str, Any] | None:
    """The validated body of an award, as ``PointsAwardSerializer`` would return it, when every
    value is already in its final form (the usual ``{"points": 10}``), checked without DRF's
    per-field machinery (a tenth of the award's time). ``None`` when the body needs the
    serializer: a value to coerce or parse, or an error to report, which then comes from the
    serializer itself, so the 400 is the same.
    """
    if type(data) is not dict or not data.keys() <= _AWARD_FIELDS:
        return None
    reference = data.get("reference", "")
    if "reference" in data and not (
        _plain_text(reference, 200) and REFERENCE_PATTERN.match(reference)  # a given one: not blank
    ):
        return None
    values = _plain_award(data)
    if values is not None:
        values["reference"] = reference
    return values


def award_batch_items_parse(data: Any) -> list[dict[str, Any]] | None:
    """The validated items of an award batch whose every value is already in its final form
    (ints, plain strings, no dates), as ``AwardBatchSerializer`` would return them, checked
    without DRF's per-field machinery (a tenth of a 1,000-item batch's time). ``None`` when any
    item needs the serializer: a value to coerce or parse, or an error to report, which then
    comes from the serializer itself, so the 400 is the same.
    """
    if type(data) is not dict or data.keys() != {"items"}:
        return None
    raw_items = data["items"]
    if type(raw_items) is not list or not 1 <= len(raw_items) <= settings.LOYALTY_MAX_BATCH_ITEMS:
        return None
    items = []
    for raw in raw_items:
        if type(raw) is not dict or not raw.keys() <= _AWARD_BATCH_ITEM_FIELDS:
            return None
        external_id, key = raw.get("external_id"), raw.get("idempotency_key", "")
        if not (
            _plain_text(external_id, 128)
            and external_id
            and _plain_text(key, 255)
            and (key or "idempotency_key" not in raw)  # a key given may not be blank
        ):
            return None
        values = _plain_award(raw)
        if values is None:
            return None
        items.append({"external_id": external_id, **values, "idempotency_key": key})
    return items


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


# --- Rewards catalog -----------------------------------------------------------------------------


class RewardSerializer(serializers.ModelSerializer):
    min_tier = serializers.CharField(source="min_tier_id", allow_null=True)
    redeemable = serializers.SerializerMethodField(
        help_text="For a member: whether they can redeem it now (null for operators, partners)."
    )
    reasons = serializers.SerializerMethodField(
        help_text=(
            "For a member: why not (inactive, window, tier, benefit, limit, stock, points); "
            "empty when redeemable."
        )
    )

    class Meta:
        model = Reward
        fields = (
            "id",
            "name",
            "description",
            "image_url",
            "points_cost",
            "stock",
            "redeemed_count",
            "min_tier",
            "required_benefit",
            "per_member_limit",
            "available_from",
            "available_until",
            "is_active",
            "redeemable",
            "reasons",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields

    def _blockers(self, reward: Reward) -> list[str] | None:
        # The member's state is read once per request by the view, not per row.
        redeemer = self.context.get("redeemer")
        if redeemer is None:
            return None
        return reward_blockers_of(reward=reward, redeemer=redeemer, at=self.context["at"])

    def get_redeemable(self, reward: Reward) -> bool | None:
        blockers = self._blockers(reward)
        return None if blockers is None else not blockers

    def get_reasons(self, reward: Reward) -> list[str]:
        return self._blockers(reward) or []


class RewardInputSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    image_url = serializers.URLField(required=False, allow_blank=True, max_length=500)
    points_cost = serializers.IntegerField(min_value=1, max_value=settings.LOYALTY_POINTS_MAX_AWARD)
    stock = serializers.IntegerField(
        min_value=0,
        max_value=2_000_000_000,
        required=False,
        allow_null=True,
        help_text="Items left to redeem; null (the default) is unlimited.",
    )
    min_tier = serializers.SlugField(max_length=32, required=False, allow_null=True)
    required_benefit = serializers.SlugField(
        max_length=64,
        required=False,
        allow_blank=True,
        help_text="A benefit kind code the member must hold, e.g. new_product_trial.",
    )
    per_member_limit = serializers.IntegerField(
        min_value=1, max_value=1_000_000, required=False, allow_null=True
    )
    available_from = serializers.DateTimeField(required=False, allow_null=True)
    available_until = serializers.DateTimeField(required=False, allow_null=True)
    is_active = serializers.BooleanField(required=False)


class RedemptionSerializer(serializers.ModelSerializer):
    member = serializers.UUIDField(source="member_id")
    reward = serializers.IntegerField(source="reward_id")
    reward_name = serializers.CharField(source="reward.name")
    redeem_entry = serializers.IntegerField(source="redeem_entry_id")
    refund_entry = serializers.IntegerField(source="refund_entry_id", allow_null=True)

    class Meta:
        model = Redemption
        fields = (
            "id",
            "member",
            "reward",
            "reward_name",
            "points",
            "status",
            "redeem_entry",
            "refund_entry",
            "actor",
            "created_at",
            "fulfilled_at",
            "cancelled_at",
            "cancel_reason",
        )
        read_only_fields = fields


class RedemptionCreateInputSerializer(StrictInputSerializer):
    member = serializers.UUIDField(
        required=False,
        help_text="The member to redeem for: operators (required); a member may name only "
        "themselves.",
    )


class MeRedemptionInputSerializer(StrictInputSerializer):
    reward = serializers.IntegerField(min_value=1)


class RedemptionUpdateInputSerializer(StrictInputSerializer):
    status = serializers.ChoiceField(
        choices=(RedemptionStatus.FULFILLED, RedemptionStatus.CANCELLED)
    )
    reason = serializers.CharField(
        max_length=500,
        required=False,
        default="",
        allow_blank=True,
        help_text="Why it is cancelled (required from operators).",
    )


# --- Benefits and honors -------------------------------------------------------------------------


class BenefitSerializer(serializers.Serializer):
    code = serializers.CharField()
    tier = serializers.CharField(help_text="The rung the benefit is attached to.")
    kind = serializers.CharField(
        help_text="points_multiplier, monthly_coupon_allowance, new_product_trial, "
        "priority_support, exclusive_events, dedicated_advisor or cocreation_committee_seat."
    )
    name = serializers.CharField()
    value = serializers.DecimalField(
        max_digits=10,
        decimal_places=2,
        allow_null=True,
        help_text="The amount where the kind has one: the multiplier the earning rules apply, "
        "coupons a month.",
    )
    description = serializers.CharField()
    exclusive_to_tier = serializers.BooleanField(
        help_text="Only this tier's members have it; higher tiers have their own instead."
    )


class BenefitTierSerializer(serializers.Serializer):
    tier = serializers.CharField(source="code")
    name = serializers.CharField()
    rank = serializers.IntegerField()
    benefits = BenefitSerializer(
        many=True,
        help_text="Attached to this rung. A member has the benefits of their rung and of every "
        "rung below, except those exclusive to a lower rung.",
    )


class BadgeSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    kind = serializers.CharField(help_text="manual or automatic")
    rule = serializers.CharField(
        help_text="An automatic badge's rule: first_post, checkin_streak_<days>, "
        "reached_tier:<tier>, certification:<code>."
    )
    is_title = serializers.BooleanField(help_text="A title, shown beside the member's name.")
    level = serializers.IntegerField(help_text="Prestige: the highest title held is shown.")


class MemberBadgeSerializer(serializers.Serializer):
    badge = serializers.CharField(source="badge_id")
    name = serializers.CharField(source="badge.name")
    description = serializers.CharField(source="badge.description")
    is_title = serializers.BooleanField(source="badge.is_title")
    level = serializers.IntegerField(source="badge.level")
    awarded_at = serializers.DateTimeField()
    awarded_by = serializers.CharField()
    reason = serializers.CharField()


class BadgeAwardInputSerializer(StrictInputSerializer):
    badge = serializers.SlugField(max_length=64)
    reason = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class HonorsWallQuerySerializer(StrictInputSerializer):
    limit = serializers.IntegerField(min_value=1, max_value=100, default=50)


class HonorsWallEntrySerializer(serializers.Serializer):
    display_name = serializers.CharField()
    badge = serializers.CharField()
    badge_name = serializers.CharField()
    is_title = serializers.BooleanField()
    awarded_at = serializers.DateTimeField()
