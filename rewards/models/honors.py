"""Benefits (the entitlements of each tier rung) and honors (badges, titles and their awards)."""

from django.db import models
from django.db.models import Q


class BenefitKind(models.TextChoices):
    POINTS_MULTIPLIER = "points_multiplier", "Points multiplier"
    MONTHLY_COUPON_ALLOWANCE = "monthly_coupon_allowance", "Monthly coupon allowance"
    NEW_PRODUCT_TRIAL = "new_product_trial", "New-product trials"
    PRIORITY_SUPPORT = "priority_support", "Priority support"
    EXCLUSIVE_EVENTS = "exclusive_events", "Exclusive events"
    DEDICATED_ADVISOR = "dedicated_advisor", "Dedicated advisor"
    COCREATION_COMMITTEE_SEAT = "cocreation_committee_seat", "Co-creation committee seat"


class Benefit(models.Model):
    """An entitlement attached to a tier rung. Benefits grow with the tier: a member has the
    benefits of their tier and of every tier below, except those ``exclusive_to_tier`` (an
    allowance a higher rung replaces rather than adds to, like the multiplier or coupons).

    The points multiplier has no value of its own: it shows ``Tier.points_multiplier``, the
    number the earning rules read, so what members are told is what they earn
    (``rewards.services.honors.benefit_save`` edits both through one form).
    """

    code = models.SlugField(max_length=64, primary_key=True)
    tier = models.ForeignKey("tiers.Tier", on_delete=models.PROTECT, related_name="benefits")
    kind = models.CharField(max_length=32, choices=BenefitKind.choices)
    value = models.DecimalField(
        max_digits=10,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="The amount where the kind has one (coupons a month); empty otherwise. A "
        "points multiplier shows the tier's own multiplier.",
    )
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    exclusive_to_tier = models.BooleanField(
        default=False, help_text="Only members of this tier have it, not those of higher tiers."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ("tier__rank", "kind", "code")
        constraints = (
            models.CheckConstraint(
                condition=~Q(kind=BenefitKind.POINTS_MULTIPLIER)
                | Q(value__isnull=True, exclusive_to_tier=True),
                name="benefit_multiplier_from_tier",
            ),
            models.CheckConstraint(
                condition=Q(value__isnull=True) | Q(value__gte=0), name="benefit_value_gte_0"
            ),
            # The tier has one multiplier: one benefit shows it.
            models.UniqueConstraint(
                fields=("tier",),
                condition=Q(kind=BenefitKind.POINTS_MULTIPLIER),
                name="benefit_one_multiplier_per_tier",
            ),
        )
        indexes = (models.Index(fields=("tier", "kind"), name="benefit_tier_kind_idx"),)

    def __str__(self) -> str:
        return f"{self.tier_id}: {self.name}"


class BadgeKind(models.TextChoices):
    MANUAL = "manual", "Manual (awarded by operators or partners)"
    AUTOMATIC = "automatic", "Automatic (awarded by its rule)"


class Badge(models.Model):
    """An identity badge, or a title (``is_title``) shown beside the member's name.

    An automatic badge's ``rule`` is one of ``first_post``, ``checkin_streak_7``,
    ``checkin_streak_30``, ``reached_tier:<tier code>`` (that tier or higher) and
    ``certification:<code>`` (held); ``rewards.services.honors.badge_rule_parse`` reads it.
    """

    code = models.SlugField(max_length=64, primary_key=True)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=16, choices=BadgeKind.choices, default=BadgeKind.MANUAL)
    rule = models.CharField(max_length=100, blank=True)
    is_title = models.BooleanField(default=False, help_text="Shown beside the member's name.")
    level = models.PositiveSmallIntegerField(
        default=0, help_text="Prestige: the highest title held is the one shown."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ("-level", "code")
        constraints = (
            models.CheckConstraint(
                condition=Q(kind=BadgeKind.MANUAL, rule="")
                | (Q(kind=BadgeKind.AUTOMATIC) & ~Q(rule="")),
                name="badge_rule_only_when_automatic",
            ),
        )

    def __str__(self) -> str:
        return self.name


class MemberBadge(models.Model):
    """A badge a member holds: one row per member and badge, so awarding is idempotent."""

    # No single-column indexes of their own: ``member_badge_unique`` leads with the member, and
    # the badge has a plain index below (a varchar foreign key's default index comes with a
    # second, LIKE-pattern copy nothing queries). Every award writes one index entry fewer or two.
    member = models.ForeignKey(
        "members.Member", on_delete=models.CASCADE, related_name="badge_awards", db_index=False
    )
    badge = models.ForeignKey(
        Badge, on_delete=models.PROTECT, related_name="awards", db_index=False
    )
    awarded_at = models.DateTimeField()
    awarded_by = models.CharField(max_length=200)
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = (
            # Also the conflict target of the awards' INSERT ... ON CONFLICT DO NOTHING.
            models.UniqueConstraint(fields=("member", "badge"), name="member_badge_unique"),
        )
        indexes = (
            # The honors wall: the latest awards first.
            models.Index(fields=("-awarded_at", "-id"), name="member_badge_awarded_idx"),
            # Who holds a badge (the admin's filter, the badge's protection on delete).
            models.Index(fields=("badge",), name="member_badge_badge_idx"),
        )
        permissions = (("award_badge", "Can award badges to members"),)

    def __str__(self) -> str:
        return f"{self.member_id}: {self.badge_id}"
