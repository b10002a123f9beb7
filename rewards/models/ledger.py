"""The points ledger: accounts, append-only entries, lots and their consumption, the program's
system accounts; earning rules and daily check-ins.

The ledger is double-entry: every entry moves points between a member's account and one system
account (its ``counter_account``), so members and system accounts together always sum to zero.

Invariants (shared/research/reliability.md §a'), held by constraints here and by the single write
path in ``rewards.services.ledger``, and audited by ``rewards.selectors.ledger_violations``:

- I1 an account's balance (available + pending) is the sum of its entries;
- I2 entries chain per member: versions 1, 2, 3, ... and ``balance_after`` = previous + points;
- I3 lots match the balance, and every consumed point of a lot is recorded;
- I4 only a reversal may take the balance below zero (debt);
- I5 conservation: members' and system accounts' balances sum to zero; each system account
  holds minus the points of the entries posted against it; an entry's counter account follows
  its kind (a reversal posts against the account of the entry it reverses);
- I8 a lot never gives out more than it had;
- I9 a reversal negates at most its target, with the opposite sign;
- I11 lifetime earned is the sum of earn entries.

I6, I7 and I10 (one effect per idempotency key, one earn per reference, one check-in per member
and day) are unique constraints alone.
"""

from functools import reduce
from operator import or_

from django.db import models
from django.db.models import F, Q


class PointsAccount(models.Model):
    """A member's points. ``available`` may be negative only after a refund reversal (debt)."""

    member = models.OneToOneField(
        "members.Member", on_delete=models.PROTECT, primary_key=True, related_name="points_account"
    )
    available = models.BigIntegerField(default=0)
    pending = models.BigIntegerField(default=0)
    lifetime_earned = models.BigIntegerField(default=0)
    version = models.BigIntegerField(default=0, help_text="The number of entries so far.")
    updated_at = models.DateTimeField()

    class Meta:
        constraints = (
            models.CheckConstraint(
                condition=Q(pending__gte=0), name="points_account_pending_gte_0"
            ),
            models.CheckConstraint(
                condition=Q(lifetime_earned__gte=0), name="points_account_lifetime_gte_0"
            ),
            models.CheckConstraint(
                condition=Q(version__gte=0), name="points_account_version_gte_0"
            ),
        )

    def __str__(self) -> str:
        return f"{self.member_id}: {self.available} (+{self.pending} pending)"

    @property
    def balance(self) -> int:
        """Available plus pending: what the entries sum to."""
        return self.available + self.pending


class EntryKind(models.TextChoices):
    EARN = "earn", "Earn"
    REDEEM = "redeem", "Redeem"
    EXPIRE = "expire", "Expire"
    ADJUST = "adjust", "Adjust"
    REVERSE = "reverse", "Reverse"


class SystemAccount(models.TextChoices):
    """The program's side of every posting (double entry)."""

    ISSUANCE = "issuance", "Issuance"
    REDEMPTION = "redemption", "Redemption"
    EXPIRY = "expiry", "Expiry"
    ADJUSTMENT = "adjustment", "Adjustment"


# The counter account of each kind. A reversal is absent: it posts back against the account of
# the entry it reverses, so the original's system account is the one made whole.
COUNTER_ACCOUNT_OF_KIND: dict[str, str] = {
    EntryKind.EARN: SystemAccount.ISSUANCE,
    EntryKind.REDEEM: SystemAccount.REDEMPTION,
    EntryKind.EXPIRE: SystemAccount.EXPIRY,
    EntryKind.ADJUST: SystemAccount.ADJUSTMENT,
}


class Reason(models.TextChoices):
    MANUAL = "manual", "Operator's award or deduction"
    CHECKIN = "checkin", "Daily check-in"
    EVENT = "event", "Activity event"
    PURCHASE = "purchase", "Purchase"
    REDEMPTION = "redemption", "Reward redemption"
    REFUND = "refund", "Refund"
    EXPIRY = "expiry", "Expiry"
    PARTNER = "partner", "Partner award"
    CORRECTION = "correction", "Correction"


class PointsEntry(models.Model):
    """One immutable posting. ``balance_after`` chains: it equals the previous entry's plus
    ``points``, and ``version`` counts 1, 2, 3, ... per member with no gaps."""

    member = models.ForeignKey(
        "members.Member", on_delete=models.PROTECT, related_name="points_entries"
    )
    version = models.BigIntegerField()
    kind = models.CharField(max_length=16, choices=EntryKind.choices)
    points = models.BigIntegerField()
    # The default fits earns (most entries) and rows written outside the ledger's services (the
    # benchmark's reference view); the check below refuses it for any other kind but a reversal.
    counter_account = models.CharField(
        max_length=16,
        choices=SystemAccount.choices,
        default=SystemAccount.ISSUANCE,
        help_text="The system account on the other side: it moves by minus these points.",
    )
    balance_after = models.BigIntegerField(help_text="Available plus pending after this entry.")
    reason = models.CharField(max_length=32, choices=Reason.choices)
    note = models.CharField(max_length=500, blank=True)
    reference = models.CharField(
        max_length=200,
        blank=True,
        help_text="What caused it, e.g. event:<source>:<id>, checkin:<date>, redemption:<id>.",
    )
    actor = models.CharField(max_length=80)
    idempotency_key = models.CharField(max_length=255, blank=True)
    reverses = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="reversed_by"
    )
    expired_lot = models.OneToOneField(
        "PointsLot", null=True, blank=True, on_delete=models.PROTECT, related_name="expiry_entry"
    )
    created_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "points entries"
        permissions = (
            ("award_points", "Can award points"),
            ("deduct_points", "Can deduct points"),
            ("reverse_points", "Can reverse a points entry"),
        )
        constraints = (
            models.UniqueConstraint(
                fields=("member", "version"), name="points_entry_version_unique"
            ),
            models.CheckConstraint(condition=~Q(points=0), name="points_entry_points_not_0"),
            models.CheckConstraint(
                condition=~Q(kind=EntryKind.EARN) | Q(points__gt=0),
                name="points_entry_earn_positive",
            ),
            models.CheckConstraint(
                condition=~Q(kind__in=(EntryKind.REDEEM, EntryKind.EXPIRE)) | Q(points__lt=0),
                name="points_entry_spend_negative",
            ),
            models.CheckConstraint(
                condition=~Q(kind=EntryKind.REVERSE) | Q(reverses__isnull=False),
                name="points_entry_reverse_has_target",
            ),
            models.CheckConstraint(
                condition=~Q(kind=EntryKind.EXPIRE) | Q(expired_lot__isnull=False),
                name="points_entry_expire_has_lot",
            ),
            # A reversal may name any system account; the audit checks it is its target's.
            models.CheckConstraint(
                condition=reduce(
                    or_,
                    (
                        Q(kind=kind, counter_account=account)
                        for kind, account in COUNTER_ACCOUNT_OF_KIND.items()
                    ),
                )
                | Q(kind=EntryKind.REVERSE, counter_account__in=SystemAccount.values),
                name="points_entry_counter_account_of_kind",
            ),
            models.UniqueConstraint(
                fields=("reference",),
                condition=Q(kind=EntryKind.EARN) & ~Q(reference=""),
                name="points_entry_one_earn_per_reference",
            ),
            models.UniqueConstraint(
                fields=("actor", "idempotency_key"),
                condition=~Q(idempotency_key=""),
                name="points_entry_idempotency_unique",
            ),
        )
        indexes = (
            models.Index(fields=("member", "-created_at", "-id"), name="points_entry_member_idx"),
            models.Index(fields=("-created_at", "-id"), name="points_entry_created_idx"),
        )

    def __str__(self) -> str:
        return f"{self.kind} {self.points:+d} ({self.reason})"


class SystemAccountBalance(models.Model):
    """One shard of a system account's balance: the account's balance is the sum of its shards.

    A member's postings always use the same shard (``LOYALTY_SYSTEM_ACCOUNT_SHARDS``, picked from
    the member id), so concurrent awards to different members rarely wait for one another on a
    single hot row. A shard alone means nothing; only the sum per account does.
    """

    account = models.CharField(max_length=16, choices=SystemAccount.choices)
    shard = models.PositiveSmallIntegerField()
    balance = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = "system account balance"
        constraints = (
            # Also the conflict target of the postings' upsert.
            models.UniqueConstraint(
                fields=("account", "shard"), name="system_account_balance_unique"
            ),
        )

    def __str__(self) -> str:
        return f"{self.account} #{self.shard}: {self.balance}"


class PointsLot(models.Model):
    """Points from one positive entry, spent oldest-first and expiring at ``expires_at``.

    ``remaining`` is the only mutable ledger column, changed under the account's row lock.
    """

    entry = models.OneToOneField(
        PointsEntry, on_delete=models.PROTECT, primary_key=True, related_name="lot"
    )
    member = models.ForeignKey(
        "members.Member", on_delete=models.PROTECT, related_name="points_lots"
    )
    points = models.BigIntegerField()
    remaining = models.BigIntegerField()
    expires_at = models.DateTimeField()
    pending_until = models.DateTimeField(null=True, blank=True)
    is_pending = models.BooleanField(default=False)
    created_at = models.DateTimeField()

    class Meta:
        constraints = (
            models.CheckConstraint(
                condition=Q(remaining__gte=0) & Q(remaining__lte=F("points")),
                name="points_lot_remaining_between_0_and_points",
            ),
            models.CheckConstraint(condition=Q(points__gt=0), name="points_lot_points_positive"),
        )
        indexes = (
            models.Index(
                fields=("member", "expires_at"),
                condition=Q(remaining__gt=0),
                name="points_lot_open_idx",
            ),
            models.Index(
                fields=("expires_at",),
                condition=Q(remaining__gt=0, is_pending=False),
                name="points_lot_expiry_idx",
            ),
            models.Index(
                fields=("pending_until",),
                condition=Q(is_pending=True),
                name="points_lot_pending_idx",
            ),
        )

    def __str__(self) -> str:
        return f"lot {self.entry_id}: {self.remaining}/{self.points}"


class LotConsumption(models.Model):
    """Which lots a negative entry took its points from (append-only)."""

    entry = models.ForeignKey(PointsEntry, on_delete=models.PROTECT, related_name="consumptions")
    lot = models.ForeignKey(PointsLot, on_delete=models.PROTECT, related_name="consumptions")
    points = models.BigIntegerField()

    class Meta:
        constraints = (
            models.CheckConstraint(
                condition=Q(points__gt=0), name="lot_consumption_points_positive"
            ),
            models.UniqueConstraint(
                fields=("entry", "lot"), name="lot_consumption_entry_lot_unique"
            ),
        )

    def __str__(self) -> str:
        return f"{self.points} from lot {self.lot_id}"


class EarningRule(models.Model):
    """Turns an activity event into points: a fixed amount, or points per currency unit."""

    event_type = models.SlugField(max_length=64, unique=True)
    points = models.PositiveIntegerField(
        help_text="Points per event, or per currency unit when 'per currency unit' is set."
    )
    per_currency_unit = models.BooleanField(
        default=False, help_text="Multiply by the event's purchase amount (floored)."
    )
    daily_cap = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Most points a member earns from this rule per business day.",
    )
    hourly_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most awarded events of this type per member per hour."
    )
    min_tier = models.ForeignKey(
        "tiers.Tier", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    pending_days = models.PositiveIntegerField(
        default=0, help_text="Days the points stay pending (a purchase's return window)."
    )
    expiry_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Lot lifetime; empty uses LOYALTY_POINTS_EXPIRY_DAYS."
    )
    is_active = models.BooleanField(default=True)
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ("event_type",)
        constraints = (
            models.CheckConstraint(condition=Q(points__gt=0), name="earning_rule_points_positive"),
        )

    def __str__(self) -> str:
        return f"{self.event_type}: {self.points}"


class DailyEarning(models.Model):
    """Points a member earned from one rule on one business day: the daily cap's counter."""

    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="+")
    event_type = models.SlugField(max_length=64)
    business_date = models.DateField()
    points = models.BigIntegerField(default=0)
    awards_count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = (
            models.UniqueConstraint(
                fields=("member", "event_type", "business_date"), name="daily_earning_unique"
            ),
        )

    def __str__(self) -> str:
        return f"{self.member_id} {self.event_type} {self.business_date}: {self.points}"


class CheckIn(models.Model):
    """One per member per business day in the program's time zone."""

    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="check_ins")
    business_date = models.DateField()
    streak = models.PositiveIntegerField()
    points_awarded = models.BigIntegerField(default=0)
    entry = models.OneToOneField(
        PointsEntry, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField()

    class Meta:
        constraints = (
            models.UniqueConstraint(
                fields=("member", "business_date"), name="check_in_once_per_day"
            ),
        )
        indexes = (models.Index(fields=("member", "-business_date"), name="check_in_member_idx"),)

    def __str__(self) -> str:
        return f"{self.member_id} {self.business_date} (streak {self.streak})"
