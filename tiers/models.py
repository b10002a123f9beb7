"""The community tiers: the rungs of the capability - benefit - honor ladder."""

from decimal import Decimal

from django.db import models

BASIC = "basic"
ACTIVE = "active"
KOC = "koc"
KOL = "kol"

# The seeded ladder, lowest to highest (SPEC §2). The data migration writes it; later work edits
# rules, requirements, benefits and honors per rung, but codes are stable identifiers.
TIER_CODES = (BASIC, ACTIVE, KOC, KOL)
DEFAULT_TIER = BASIC


class Tier(models.Model):
    code = models.SlugField(max_length=32, primary_key=True)
    name = models.CharField(max_length=100)
    rank = models.PositiveSmallIntegerField(unique=True, help_text="0 is the lowest rung.")
    description = models.TextField(blank=True)
    expected_share = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        default=Decimal(0),
        help_text="The share of members a healthy community expects at this tier (0 to 1).",
    )

    points_multiplier = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=Decimal(1),
        help_text="Earning rules multiply points by this (floored to whole points).",
    )

    class Meta:
        ordering = ("rank",)
        constraints = (
            models.CheckConstraint(
                condition=models.Q(expected_share__gte=0, expected_share__lte=1),
                name="tier_expected_share_between_0_and_1",
            ),
            models.CheckConstraint(
                condition=models.Q(points_multiplier__gte=1), name="tier_points_multiplier_gte_1"
            ),
        )

    def __str__(self) -> str:
        return self.name


class RuleSetStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PUBLISHED = "published", "Published"


class RuleSet(models.Model):
    """A version of the tier rules: every tier's entry and maintenance requirements, grace and
    nomination-only flag. Drafts are edited and simulated; publishing fixes the version (no
    further edits) with an effective time. The version in force at a time is the published one
    with the latest effective time not after it, so history stays explainable."""

    version = models.PositiveIntegerField(unique=True)
    name = models.CharField(max_length=100, blank=True)
    note = models.TextField(blank=True)
    status = models.CharField(
        max_length=16, choices=RuleSetStatus.choices, default=RuleSetStatus.DRAFT
    )
    effective_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    published_by = models.CharField(max_length=200, blank=True)
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ("-version",)
        permissions = (("publish_ruleset", "Can publish a tier rule version"),)
        constraints = (
            models.CheckConstraint(
                condition=models.Q(status=RuleSetStatus.DRAFT, effective_at__isnull=True)
                | models.Q(status=RuleSetStatus.PUBLISHED, effective_at__isnull=False),
                name="rule_set_published_has_effective_time",
            ),
            # Two versions taking effect at the same instant would make "the one in force" ambiguous.
            models.UniqueConstraint(
                fields=("effective_at",),
                condition=models.Q(status=RuleSetStatus.PUBLISHED),
                name="rule_set_one_per_effective_time",
            ),
        )

    def __str__(self) -> str:
        return f"v{self.version} ({self.get_status_display().lower()})"

    @property
    def is_draft(self) -> bool:
        return self.status == RuleSetStatus.DRAFT


class TierRule(models.Model):
    """One tier's settings within a rule set (its requirements are ``TierRequirement`` rows)."""

    rule_set = models.ForeignKey(RuleSet, on_delete=models.CASCADE, related_name="tier_rules")
    tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="rules")
    nomination_only = models.BooleanField(
        default=False,
        help_text="Reassessment never promotes into this tier; only a nomination or an "
        "operator's promotion does.",
    )
    grace_days = models.PositiveSmallIntegerField(
        default=30,
        help_text="Days a member who stops meeting maintenance keeps the tier before demotion.",
    )

    class Meta:
        ordering = ("rule_set", "tier__rank")
        constraints = (
            models.UniqueConstraint(fields=("rule_set", "tier"), name="tier_rule_unique"),
            models.CheckConstraint(
                condition=models.Q(grace_days__lte=366), name="tier_rule_grace_days_lte_366"
            ),
        )

    def __str__(self) -> str:
        return f"{self.rule_set} {self.tier_id}"


class RequirementPurpose(models.TextChoices):
    ENTRY = "entry", "Entry"
    MAINTENANCE = "maintenance", "Maintenance"


class TierRequirement(models.Model):
    """One condition of a tier's entry or maintenance rule: a metric over a window of days at
    least ``minimum``, or (metric ``certification``) holding the certification ``certification``."""

    rule_set = models.ForeignKey(RuleSet, on_delete=models.CASCADE, related_name="requirements")
    tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="requirements")
    purpose = models.CharField(max_length=16, choices=RequirementPurpose.choices)
    metric = models.CharField(max_length=32)
    window_days = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Rolling window ending on the assessment day."
    )
    minimum = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal(0))
    certification = models.SlugField(max_length=64, blank=True)

    class Meta:
        ordering = ("rule_set", "tier__rank", "purpose", "metric", "window_days", "certification")
        constraints = (
            models.UniqueConstraint(
                fields=("rule_set", "tier", "purpose", "metric", "window_days", "certification"),
                name="tier_requirement_unique",
            ),
            models.CheckConstraint(
                condition=models.Q(minimum__gte=0), name="tier_requirement_minimum_gte_0"
            ),
        )

    def __str__(self) -> str:
        if self.certification:
            return f"{self.purpose}: certification {self.certification}"
        return f"{self.purpose}: {self.metric} >= {self.minimum} in {self.window_days} days"


class TierChangeReason(models.TextChoices):
    REASSESSMENT = "reassessment", "Reassessment (met the entry rule)"
    PROMOTION = "promotion", "Operator's promotion"
    DEMOTION = "demotion", "Operator's demotion"
    GRACE_EXPIRED = "grace_expired", "Grace period expired"
    PIN_EXPIRED = "pin_expired", "Pin expired"
    NOMINATION_APPROVED = "nomination_approved", "Nomination approved (probation)"
    NOMINATION_CONFIRMED = "nomination_confirmed", "Nomination confirmed after probation"
    NOMINATION_ROLLED_BACK = "nomination_rolled_back", "Nomination rolled back after probation"


class TierChange(models.Model):
    """The history of a member's tier: one row per change (and per nomination step), with why.

    ``details`` keeps what decided it: the requirement checks with required and actual values
    for a rule-driven change, or the operator's reason. A reassessment job writes at most one
    row per member (unique ``(job, member)``), so re-running a chunk cannot write a second.
    """

    member = models.ForeignKey(
        "members.Member", on_delete=models.CASCADE, related_name="tier_changes"
    )
    from_tier = models.ForeignKey(
        Tier, on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )
    to_tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="+")
    reason = models.CharField(max_length=32, choices=TierChangeReason.choices)
    actor = models.CharField(max_length=200)
    note = models.CharField(max_length=500, blank=True)
    rule_set = models.ForeignKey(
        RuleSet, on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )
    job = models.ForeignKey(
        "core.Job", on_delete=models.SET_NULL, related_name="+", null=True, blank=True
    )
    pinned_until = models.DateTimeField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        permissions = (
            ("promote_member", "Can promote or demote members"),
            ("run_reassessment", "Can start a population tier reassessment"),
        )
        constraints = (
            models.UniqueConstraint(
                fields=("job", "member"),
                condition=models.Q(job__isnull=False),
                name="tier_change_one_per_job_member",
            ),
        )
        indexes = (
            models.Index(fields=("member", "-created_at", "-id"), name="tier_change_member_idx"),
            models.Index(fields=("-created_at", "-id"), name="tier_change_created_idx"),
        )

    def __str__(self) -> str:
        return f"{self.member_id}: {self.from_tier_id} -> {self.to_tier_id}"


class NominationStatus(models.TextChoices):
    PENDING = "pending", "Pending review"
    REJECTED = "rejected", "Rejected"
    PROBATION = "probation", "Approved, on probation"
    CONFIRMED = "confirmed", "Confirmed"
    ROLLED_BACK = "rolled_back", "Rolled back"
    WITHDRAWN = "withdrawn", "Withdrawn"


OPEN_NOMINATION_STATUSES = (NominationStatus.PENDING, NominationStatus.PROBATION)


class Nomination(models.Model):
    """A proposal to promote a member into a nomination-only tier, with evidence; reviewed,
    then (approved) a probation that the reassessment job confirms or rolls back."""

    member = models.ForeignKey(
        "members.Member", on_delete=models.CASCADE, related_name="nominations"
    )
    tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="nominations")
    from_tier = models.ForeignKey(
        Tier,
        on_delete=models.PROTECT,
        related_name="+",
        null=True,
        blank=True,
        help_text="The tier held when approved; a rollback returns to it.",
    )
    status = models.CharField(
        max_length=16, choices=NominationStatus.choices, default=NominationStatus.PENDING
    )
    evidence = models.TextField()
    evidence_urls = models.JSONField(default=list, blank=True)
    nominated_by = models.CharField(max_length=200)
    reviewed_by = models.CharField(max_length=200, blank=True)
    review_note = models.CharField(max_length=500, blank=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    probation_until = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(
        null=True, blank=True, help_text="When probation ended (confirmed or rolled back)."
    )
    created_at = models.DateTimeField()

    class Meta:
        constraints = (
            models.UniqueConstraint(
                fields=("member",),
                condition=models.Q(status__in=OPEN_NOMINATION_STATUSES),
                name="nomination_one_open_per_member",
            ),
            models.CheckConstraint(
                condition=~models.Q(status=NominationStatus.PROBATION)
                | models.Q(probation_until__isnull=False),
                name="nomination_probation_has_end",
            ),
        )
        indexes = (
            models.Index(fields=("status", "-created_at", "-id"), name="nomination_status_idx"),
        )

    def __str__(self) -> str:
        return f"{self.member_id} -> {self.tier_id} ({self.status})"
