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
