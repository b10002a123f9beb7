"""Input and output bodies of the tier endpoints: the ladder, a member's standing and history,
promotions, nominations, rule versions, reassessments and simulations."""

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.api.serializers import StrictInputSerializer
from core.models import Job
from members.models import Member
from rewards.selectors import RungExtras
from tiers.evaluation import CERTIFICATION, METRICS, Requirement, Rules, json_number
from tiers.models import (
    Nomination,
    RequirementPurpose,
    RuleSet,
    Tier,
    TierChange,
    TierRequirement,
)
from tiers.services.assessment import TierStanding
from tiers.services.reassessment import SimulationResult
from tiers.services.rules import TierRuleInput

_METRIC_HELP = (
    f"One of {', '.join(METRICS)}, or `{CERTIFICATION}` (holding the certification named in "
    "`certification`)."
)
_MAX_REQUIREMENTS = 20


@extend_schema_field(OpenApiTypes.NUMBER)
class PlainNumberField(serializers.Field):
    """A threshold or a metric value, rendered as a JSON number."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> Any:
        return json_number(value)


# --- The ladder ---------------------------------------------------------------------------------


class TierRequirementSerializer(serializers.Serializer):
    """One condition of a tier's entry or maintenance rule."""

    metric = serializers.CharField(help_text=_METRIC_HELP)
    window_days = serializers.IntegerField(
        allow_null=True, help_text="Rolling window ending on the assessment day (null: none)."
    )
    minimum = PlainNumberField(help_text="The metric must be at least this (0 for certification).")
    certification = serializers.CharField(
        allow_null=True, help_text="The certification code to hold (metric `certification`)."
    )

    @staticmethod
    def body(requirement: Requirement) -> dict[str, Any]:
        return {
            "metric": requirement.metric,
            "window_days": None if requirement.is_certification else requirement.window_days,
            "minimum": requirement.minimum,
            "certification": requirement.certification or None,
        }


class TierRungBenefitSerializer(serializers.Serializer):
    code = serializers.CharField()
    kind = serializers.CharField()
    name = serializers.CharField()
    value = serializers.DecimalField(max_digits=12, decimal_places=2, allow_null=True)
    exclusive_to_tier = serializers.BooleanField()


class TierRungHonorSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    is_title = serializers.BooleanField()


class TierRungSerializer(serializers.Serializer):
    """One rung of the ladder with the rules of the version in force."""

    code = serializers.CharField()
    name = serializers.CharField()
    rank = serializers.IntegerField(help_text="0 is the lowest rung.")
    description = serializers.CharField()
    expected_share = serializers.DecimalField(
        max_digits=5,
        decimal_places=4,
        help_text="The share of members a healthy community expects at this tier (0 to 1).",
    )
    points_multiplier = serializers.DecimalField(max_digits=5, decimal_places=2)
    nomination_only = serializers.BooleanField(
        help_text="Reassessment never promotes into it: only a nomination or an operator."
    )
    grace_days = serializers.IntegerField(
        help_text="Days a member failing maintenance keeps the tier before demotion."
    )
    required_certifications = serializers.ListField(
        child=serializers.CharField(), help_text="Certifications the entry rule requires."
    )
    entry = TierRequirementSerializer(many=True, help_text="All must hold to enter the tier.")
    maintenance = TierRequirementSerializer(many=True, help_text="All must hold to keep it.")
    benefits = TierRungBenefitSerializer(
        many=True,
        help_text="Benefits attached to this rung (members also keep the lower rungs' "
        "non-exclusive ones).",
    )
    honors = TierRungHonorSerializer(
        many=True, help_text="Badges and titles awarded on reaching this tier."
    )


class TierLadderSerializer(serializers.Serializer):
    rule_set = serializers.IntegerField(
        allow_null=True, help_text="The id of the rule version in force."
    )
    rule_version = serializers.IntegerField(allow_null=True)
    effective_at = serializers.DateTimeField(allow_null=True)
    tiers = TierRungSerializer(many=True, help_text="Lowest rung first.")

    @staticmethod
    def body(
        *,
        tiers: Iterable[Tier],
        rule_set: RuleSet | None,
        rules: Rules,
        extras: Mapping[str, RungExtras],
    ) -> dict[str, Any]:
        rungs = []
        for tier in tiers:
            policy = rules.tier(tier.code)
            rung = extras.get(tier.code, RungExtras([], []))
            rungs.append(
                {
                    "code": tier.code,
                    "name": tier.name,
                    "rank": tier.rank,
                    "description": tier.description,
                    "expected_share": tier.expected_share,
                    "points_multiplier": tier.points_multiplier,
                    "nomination_only": policy.nomination_only,
                    "grace_days": policy.grace_days,
                    "required_certifications": [
                        requirement.certification
                        for requirement in policy.entry
                        if requirement.is_certification
                    ],
                    "entry": [TierRequirementSerializer.body(r) for r in policy.entry],
                    "maintenance": [TierRequirementSerializer.body(r) for r in policy.maintenance],
                    "benefits": rung.benefits,
                    "honors": rung.honors,
                }
            )
        return {
            "rule_set": rule_set.pk if rule_set else None,
            "rule_version": rule_set.version if rule_set else None,
            "effective_at": rule_set.effective_at if rule_set else None,
            "tiers": rungs,
        }


# --- A member's tier ----------------------------------------------------------------------------


class TierCheckSerializer(serializers.Serializer):
    """One requirement against the member's value."""

    metric = serializers.CharField(help_text=_METRIC_HELP)
    window_days = serializers.IntegerField(allow_null=True)
    certification = serializers.CharField(allow_null=True)
    required = PlainNumberField(help_text="The minimum (1 for a certification).")
    current = PlainNumberField(help_text="The member's value (1 or 0 for a certification).")
    met = serializers.BooleanField()


class MemberTierQuerySerializer(StrictInputSerializer):
    at = serializers.DateField(
        required=False,
        help_text="A past date (program time zone): the tier held at the end of that day.",
    )


class MemberTierSerializer(serializers.Serializer):
    member_id = serializers.UUIDField()
    as_of = serializers.DateField(
        allow_null=True,
        help_text="The date asked for with `at` (the tier held at its end); null for now.",
    )
    tier = serializers.CharField(help_text="Tier code.")
    since = serializers.DateTimeField(allow_null=True, help_text="When the member got the tier.")
    pin_tier = serializers.CharField(
        allow_null=True, help_text="Never demoted below this tier until `pinned_until`."
    )
    pinned_until = serializers.DateTimeField(allow_null=True)
    grace_until = serializers.DateTimeField(
        allow_null=True, help_text="Maintenance is failing: demotion is due at this time."
    )
    probation_until = serializers.DateTimeField(
        allow_null=True, help_text="A nomination's probation ends (confirmed or rolled back)."
    )
    next_tier = serializers.CharField(allow_null=True)
    next_tier_nomination_only = serializers.BooleanField(
        help_text="The next tier is reached by nomination only, not by meeting `requirements`."
    )
    requirements = TierCheckSerializer(
        many=True, help_text="The next tier's entry rule: each requirement, required and current."
    )
    keep_requirements = TierCheckSerializer(
        many=True, help_text="The current tier's maintenance rule: what it takes to keep it."
    )
    at_risk = serializers.BooleanField(
        help_text="In grace, or failing maintenance: the next assessment may start a grace period."
    )
    rule_version = serializers.IntegerField(allow_null=True)

    @staticmethod
    def body(standing: TierStanding) -> dict[str, Any]:
        return {
            "member_id": standing.member_id,
            "as_of": None,
            "tier": standing.tier,
            "since": standing.since,
            "pin_tier": standing.pin,
            "pinned_until": standing.pinned_until,
            "grace_until": standing.grace_until,
            "probation_until": standing.probation_until,
            "next_tier": standing.next_tier,
            "next_tier_nomination_only": standing.next_tier_nomination_only,
            "requirements": [check.as_dict() for check in standing.requirements],
            "keep_requirements": [check.as_dict() for check in standing.keep_requirements],
            "at_risk": standing.at_risk,
            "rule_version": standing.rule_version,
        }

    @staticmethod
    def held_body(
        *, member: Member, day: date, tier: str, since: datetime | None
    ) -> dict[str, Any]:
        """The tier held at the end of a past day: only the history is known for it."""
        return {
            "member_id": member.pk,
            "as_of": day,
            "tier": tier,
            "since": since,
            "pin_tier": None,
            "pinned_until": None,
            "grace_until": None,
            "probation_until": None,
            "next_tier": None,
            "next_tier_nomination_only": False,
            "requirements": [],
            "keep_requirements": [],
            "at_risk": False,
            "rule_version": None,
        }


class TierChangeSerializer(serializers.ModelSerializer):
    """One row of a member's tier history, with why."""

    member = serializers.UUIDField(source="member_id", read_only=True)
    from_tier = serializers.CharField(source="from_tier_id", read_only=True, allow_null=True)
    to_tier = serializers.CharField(source="to_tier_id", read_only=True)
    rule_version = serializers.SerializerMethodField()
    checks = serializers.SerializerMethodField()

    class Meta:
        model = TierChange
        fields = (
            "id",
            "member",
            "from_tier",
            "to_tier",
            "reason",
            "actor",
            "note",
            "rule_version",
            "pinned_until",
            "checks",
            "details",
            "created_at",
        )
        read_only_fields = fields
        extra_kwargs = {
            "details": {
                "help_text": "What decided it: the requirement checks, the metrics and dates, or "
                "the operator's reason."
            }
        }

    def get_rule_version(self, change: TierChange) -> int | None:
        if change.rule_set_id is not None:
            return change.rule_set.version  # type: ignore[union-attr]
        version = (change.details or {}).get("rule_version")
        return version if isinstance(version, int) else None

    @extend_schema_field(TierCheckSerializer(many=True))
    def get_checks(self, change: TierChange) -> list[dict[str, Any]]:
        checks = (change.details or {}).get("checks") or []
        return TierCheckSerializer(checks, many=True).data  # type: ignore[return-value]


class TierPromotionSerializer(StrictInputSerializer):
    tier = serializers.SlugField(max_length=32, help_text="The tier code to set.")
    reason = serializers.CharField(max_length=500, help_text="Why (kept in the history).")
    pin_days = serializers.IntegerField(
        min_value=1,
        max_value=settings.LOYALTY_TIER_MAX_PIN_DAYS,
        required=False,
        allow_null=True,
        default=None,
        help_text="Pin the tier for this many days: reassessment never demotes below it.",
    )


# --- Nominations --------------------------------------------------------------------------------


class NominationSerializer(serializers.ModelSerializer):
    member = serializers.UUIDField(source="member_id", read_only=True)
    member_external_id = serializers.CharField(source="member.external_id", read_only=True)
    tier = serializers.CharField(source="tier_id", read_only=True)
    from_tier = serializers.CharField(
        source="from_tier_id",
        read_only=True,
        allow_null=True,
        help_text="The tier held when approved; a rollback returns to it.",
    )

    class Meta:
        model = Nomination
        fields = (
            "id",
            "member",
            "member_external_id",
            "tier",
            "from_tier",
            "status",
            "evidence",
            "evidence_urls",
            "nominated_by",
            "reviewed_by",
            "review_note",
            "reviewed_at",
            "probation_until",
            "decided_at",
            "created_at",
        )
        read_only_fields = fields


class NominationCreateSerializer(StrictInputSerializer):
    member = serializers.UUIDField(help_text="The member's id.")
    tier = serializers.SlugField(max_length=32, help_text="A nomination-only tier above theirs.")
    evidence = serializers.CharField(max_length=5000)
    evidence_urls = serializers.ListField(
        child=serializers.URLField(max_length=2000), max_length=20, required=False, default=list
    )


class NominationReviewSerializer(StrictInputSerializer):
    decision = serializers.ChoiceField(choices=("approve", "reject"))
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    probation_days = serializers.IntegerField(
        min_value=0,
        max_value=366,
        required=False,
        allow_null=True,
        default=None,
        help_text="Approval only: the probation's length (default LOYALTY_TIER_PROBATION_DAYS).",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["decision"] != "approve" and attrs["probation_days"] is not None:
            raise serializers.ValidationError(
                {"probation_days": ["Only an approval starts a probation."]}
            )
        return attrs


# --- Rule versions ------------------------------------------------------------------------------


class TierRuleSetTierSerializer(serializers.Serializer):
    """One tier's rule within a version."""

    tier = serializers.CharField()
    nomination_only = serializers.BooleanField()
    grace_days = serializers.IntegerField()
    entry = TierRequirementSerializer(many=True)
    maintenance = TierRequirementSerializer(many=True)


class TierRuleSetSerializer(serializers.ModelSerializer):
    tiers = serializers.SerializerMethodField()

    class Meta:
        model = RuleSet
        fields = (
            "id",
            "version",
            "name",
            "note",
            "status",
            "effective_at",
            "published_at",
            "published_by",
            "created_by",
            "created_at",
            "tiers",
        )
        read_only_fields = fields

    @extend_schema_field(TierRuleSetTierSerializer(many=True))
    def get_tiers(self, rule_set: RuleSet) -> list[dict[str, Any]]:
        """From the prefetched rules and requirements (no query per row)."""
        requirements: dict[tuple[str, str], list[dict[str, Any]]] = {}
        row: TierRequirement
        for row in rule_set.requirements.all():
            requirement = Requirement(
                metric=row.metric,
                window_days=row.window_days,
                minimum=row.minimum,
                certification=row.certification,
            )
            requirements.setdefault((row.tier_id, row.purpose), []).append(
                TierRequirementSerializer.body(requirement)
            )
        body = [
            {
                "tier": rule.tier_id,
                "nomination_only": rule.nomination_only,
                "grace_days": rule.grace_days,
                "entry": requirements.get((rule.tier_id, RequirementPurpose.ENTRY), []),
                "maintenance": requirements.get((rule.tier_id, RequirementPurpose.MAINTENANCE), []),
            }
            for rule in rule_set.tier_rules.all()
        ]
        return TierRuleSetTierSerializer(body, many=True).data  # type: ignore[return-value]


class TierRequirementInputSerializer(StrictInputSerializer):
    # Metric, window and minimum are checked by the rules service, so one response lists every
    # problem of the version (unknown metric, negative minimum, maintenance stricter than entry).
    metric = serializers.CharField(max_length=32, help_text=_METRIC_HELP)
    window_days = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        help_text="1 to 366 days; null for certification and tenure_days.",
    )
    minimum = serializers.DecimalField(
        max_digits=14, decimal_places=2, required=False, default=Decimal(0)
    )
    certification = serializers.SlugField(
        max_length=64, required=False, allow_blank=True, default=""
    )


class TierRuleInputSerializer(StrictInputSerializer):
    tier = serializers.SlugField(max_length=32)
    nomination_only = serializers.BooleanField(required=False, default=False)
    grace_days = serializers.IntegerField(
        required=False, default=30, help_text="0 to 366 days (default 30)."
    )
    entry = TierRequirementInputSerializer(
        many=True, max_length=_MAX_REQUIREMENTS, required=False, default=list
    )
    maintenance = TierRequirementInputSerializer(
        many=True, max_length=_MAX_REQUIREMENTS, required=False, default=list
    )


def tier_rules_from(data: Iterable[Mapping[str, Any]]) -> list[TierRuleInput]:
    """The rules service's input from validated ``tiers`` items."""

    def requirements(items: Iterable[Mapping[str, Any]]) -> tuple[Requirement, ...]:
        return tuple(
            Requirement(
                metric=item["metric"],
                window_days=item["window_days"],
                minimum=item["minimum"],
                certification=item["certification"],
            )
            for item in items
        )

    return [
        TierRuleInput(
            tier=item["tier"],
            nomination_only=item["nomination_only"],
            grace_days=item["grace_days"],
            entry=requirements(item["entry"]),
            maintenance=requirements(item["maintenance"]),
        )
        for item in data
    ]


def _tiers_field() -> TierRuleInputSerializer:
    return TierRuleInputSerializer(
        many=True,
        max_length=20,
        required=False,
        help_text="Every tier above the lowest, each with its entry and maintenance rules.",
    )


class TierRuleSetCreateSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    note = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="")
    based_on = serializers.PrimaryKeyRelatedField(
        queryset=RuleSet.objects.all(),
        required=False,
        allow_null=True,
        default=None,
        help_text="Copy this version's rules (default: the version in force). Not with `tiers`.",
    )
    tiers = _tiers_field()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("based_on") is not None and "tiers" in attrs:
            raise serializers.ValidationError(
                {"based_on": ["Give either based_on or tiers, not both."]}
            )
        return attrs


class TierRuleSetUpdateSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    note = serializers.CharField(max_length=5000, required=False, allow_blank=True)
    tiers = _tiers_field()


class TierRuleSetPublicationSerializer(StrictInputSerializer):
    effective_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        default=None,
        help_text="When it takes effect (default now; never in the past).",
    )


# --- Reassessment and simulation ------------------------------------------------------------------


class TierReassessmentReportSerializer(serializers.Serializer):
    matrix = serializers.DictField(
        child=serializers.DictField(child=serializers.IntegerField()),
        help_text="Members by tier before (outer key) and after (inner key), over finished chunks.",
    )
    counts = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="assessed, changed, grace_started, confirmed, rolled_back, skipped_concurrent.",
    )


class TierReassessmentSerializer(serializers.ModelSerializer):
    progress = serializers.FloatField(read_only=True, help_text="Share of chunks done, 0 to 1.")
    as_of = serializers.SerializerMethodField()
    rule_set = serializers.SerializerMethodField()
    rule_version = serializers.SerializerMethodField()
    report = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = (
            "id",
            "status",
            "progress",
            "chunks_total",
            "chunks_done",
            "items_total",
            "items_done",
            "items_changed",
            "as_of",
            "rule_set",
            "rule_version",
            "requested_by",
            "created_at",
            "started_at",
            "finished_at",
            "error",
            "report",
        )
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.DATETIME)
    def get_as_of(self, job: Job) -> str | None:
        """The assessment time every chunk uses (fixed when the job was created)."""
        as_of = parse_datetime(job.params.get("as_of") or "")
        return serializers.DateTimeField().to_representation(as_of) if as_of else None

    def get_rule_set(self, job: Job) -> int | None:
        return job.params.get("rule_set_id")

    def get_rule_version(self, job: Job) -> int | None:
        return job.params.get("rule_version")

    @extend_schema_field(TierReassessmentReportSerializer(allow_null=True))
    def get_report(self, job: Job) -> dict[str, Any] | None:
        """The detail's from-to matrix and counts; null in lists and in the 202 response."""
        report = self.context.get("report")
        return TierReassessmentReportSerializer(report).data if report is not None else None  # type: ignore[return-value]


class TierReassessmentCreateSerializer(StrictInputSerializer):
    """Starting a reassessment takes no options: it runs now under the rules in force."""


class TierSimulationSerializer(StrictInputSerializer):
    rule_set = serializers.PrimaryKeyRelatedField(
        queryset=RuleSet.objects.all(), help_text="The rule version to try (typically a draft)."
    )
    sample_size = serializers.IntegerField(
        min_value=1,
        max_value=50,
        required=False,
        allow_null=True,
        default=None,
        help_text="Sample members per from-to cell (default LOYALTY_TIER_SIMULATION_SAMPLE_SIZE).",
    )


class TierSimulationSampleSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    external_id = serializers.CharField()


class TierSimulationResultSerializer(serializers.Serializer):
    rule_set = serializers.IntegerField()
    rule_version = serializers.IntegerField()
    at = serializers.DateTimeField(help_text="The assessment time simulated.")
    members = serializers.IntegerField(help_text="Members assessed (erased members left out).")
    changed = serializers.IntegerField(help_text="Members whose tier would change.")
    matrix = serializers.DictField(
        child=serializers.DictField(child=serializers.IntegerField()),
        help_text="Members by tier now (outer key) and under the simulated rules (inner key).",
    )
    samples = serializers.DictField(
        child=serializers.DictField(child=TierSimulationSampleSerializer(many=True)),
        help_text="Up to `sample_size` members per from-to cell.",
    )

    @staticmethod
    def body(result: SimulationResult) -> dict[str, Any]:
        return {
            "rule_set": result.rule_set.pk,
            "rule_version": result.rule_set.version,
            "at": result.at,
            **result.as_dict(),
        }
