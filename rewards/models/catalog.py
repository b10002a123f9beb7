"""The rewards catalog: rewards members redeem with points, and their redemptions.

Invariant I12 (shared/research/reliability.md), held by the constraints here and the single write
path in ``rewards.services.catalog``, audited by ``rewards.selectors.ledger_violations``:

- stock never goes below zero (``CHECK``; taken by a conditional ``UPDATE ... WHERE stock > 0``);
- ``redeemed_count`` is the number of the reward's non-cancelled redemptions (moved by the same
  ``UPDATE`` as the stock, so a redemption that skipped the stock would show);
- non-cancelled redemptions per (member, reward) never exceed the reward's limit;
- each redemption has exactly one ``redeem`` entry of minus its points, and a cancelled one exactly
  one reversal of it (both one-to-one, so a second refund cannot be recorded).
"""

import uuid6
from django.db import models
from django.db.models import F, Q


class Reward(models.Model):
    """Something members redeem with points: a new-product trial, a coupon, an event seat."""

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    image_url = models.URLField(max_length=500, blank=True)
    points_cost = models.PositiveIntegerField()
    stock = models.PositiveIntegerField(
        null=True, blank=True, help_text="Items left to redeem; empty means unlimited."
    )
    # Changed only with the stock, in the same UPDATE, so the audit can check it.
    redeemed_count = models.PositiveIntegerField(
        default=0, editable=False, help_text="Redemptions not cancelled."
    )
    min_tier = models.ForeignKey(
        "tiers.Tier",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Members below this tier cannot redeem it.",
    )
    required_benefit = models.CharField(
        max_length=64,
        blank=True,
        help_text="A benefit kind code the member's tier must grant, e.g. new_product_trial.",
    )
    per_member_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Most non-cancelled redemptions per member; empty: no limit.",
    )
    available_from = models.DateTimeField(null=True, blank=True)
    available_until = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = (
            models.CheckConstraint(
                condition=Q(points_cost__gt=0), name="reward_points_cost_positive"
            ),
            models.CheckConstraint(
                condition=Q(stock__isnull=True) | Q(stock__gte=0), name="reward_stock_gte_0"
            ),
            models.CheckConstraint(
                condition=Q(redeemed_count__gte=0), name="reward_redeemed_count_gte_0"
            ),
            models.CheckConstraint(
                condition=Q(per_member_limit__isnull=True) | Q(per_member_limit__gt=0),
                name="reward_per_member_limit_positive",
            ),
            models.CheckConstraint(
                condition=Q(available_from__isnull=True)
                | Q(available_until__isnull=True)
                | Q(available_until__gt=F("available_from")),
                name="reward_available_until_after_from",
            ),
        )
        indexes = (models.Index(fields=("-created_at", "-id"), name="reward_created_idx"),)

    def __str__(self) -> str:
        return self.name


class RedemptionStatus(models.TextChoices):
    REQUESTED = "requested", "Requested"
    FULFILLED = "fulfilled", "Fulfilled"
    CANCELLED = "cancelled", "Cancelled"


class Redemption(models.Model):
    """A member's redemption of a reward: the points left in ``redeem_entry``; a cancellation
    gives them back in ``refund_entry`` (the reversal of the redeem entry), once."""

    # Chosen before the insert so the redeem entry can name it in its reference.
    id = models.UUIDField(primary_key=True, default=uuid6.uuid7, editable=False)
    member = models.ForeignKey(
        "members.Member", on_delete=models.PROTECT, related_name="redemptions"
    )
    reward = models.ForeignKey(Reward, on_delete=models.PROTECT, related_name="redemptions")
    points = models.PositiveIntegerField()
    status = models.CharField(
        max_length=16, choices=RedemptionStatus.choices, default=RedemptionStatus.REQUESTED
    )
    redeem_entry = models.OneToOneField(
        "rewards.PointsEntry", on_delete=models.PROTECT, related_name="redemption"
    )
    refund_entry = models.OneToOneField(
        "rewards.PointsEntry",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="refunded_redemption",
    )
    actor = models.CharField(max_length=80, help_text="Who redeemed: the member or an operator.")
    created_at = models.DateTimeField()
    fulfilled_at = models.DateTimeField(null=True, blank=True)
    fulfilled_by = models.CharField(max_length=80, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.CharField(max_length=80, blank=True)
    cancel_reason = models.CharField(max_length=500, blank=True)

    class Meta:
        permissions = (
            ("redeem_for_member", "Can redeem rewards on a member's behalf"),
            ("fulfil_redemption", "Can fulfil redemptions"),
            ("cancel_redemption", "Can cancel redemptions"),
        )
        constraints = (
            models.CheckConstraint(condition=Q(points__gt=0), name="redemption_points_positive"),
            # A cancelled redemption has its refund, and only a cancelled one has one.
            models.CheckConstraint(
                condition=(
                    Q(
                        status=RedemptionStatus.CANCELLED,
                        cancelled_at__isnull=False,
                        refund_entry__isnull=False,
                    )
                    | (
                        ~Q(status=RedemptionStatus.CANCELLED)
                        & Q(cancelled_at__isnull=True, refund_entry__isnull=True)
                    )
                ),
                name="redemption_cancelled_has_refund",
            ),
            models.CheckConstraint(
                condition=~Q(status=RedemptionStatus.FULFILLED) | Q(fulfilled_at__isnull=False),
                name="redemption_fulfilled_has_time",
            ),
        )
        indexes = (
            models.Index(fields=("-created_at", "-id"), name="redemption_created_idx"),
            models.Index(fields=("member", "-created_at", "-id"), name="redemption_member_idx"),
            # The per-member limit's count, taken under the member's account lock.
            models.Index(
                fields=("reward", "member"),
                condition=~Q(status=RedemptionStatus.CANCELLED),
                name="redemption_active_idx",
            ),
        )

    def __str__(self) -> str:
        return f"{self.reward_id} for {self.member_id} ({self.status})"
