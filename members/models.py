"""Members, their linked identities and their tags (with an audit of every tag change); activity
events, their registered types and the daily activity rollups."""

import uuid6
from django.conf import settings
from django.db import models

from tiers.models import DEFAULT_TIER


class LifecycleStage(models.TextChoices):
    NEW = "new", "New"
    ACTIVE = "active", "Active"
    SILENT = "silent", "Silent"
    DORMANT = "dormant", "Dormant"
    CHURNED = "churned", "Churned"


class Member(models.Model):
    """One person across platforms, addressed by UUID; ``external_id`` is the brand's own id."""

    id = models.UUIDField(primary_key=True, default=uuid6.uuid7, editable=False)
    external_id = models.CharField(max_length=128, unique=True)
    display_name = models.CharField(max_length=150)
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=32, blank=True)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="member",
        help_text="Login account for username/password sign-in (optional).",
    )
    joined_at = models.DateTimeField(db_index=True)
    # Written only by tier services (reassessment, promotions), never by clients.
    tier = models.ForeignKey(
        "tiers.Tier",
        on_delete=models.PROTECT,
        default=DEFAULT_TIER,
        related_name="members",
        db_column="tier_code",
    )
    tier_since = models.DateTimeField()
    # The member's tier state, beside the tier itself so one read of the member row gives the
    # evaluation all it needs: a grace period running out, an operator's pin, a probation.
    tier_grace_until = models.DateTimeField(
        null=True, blank=True, help_text="Maintenance is failing: demotion is due at this time."
    )
    tier_pin = models.ForeignKey(
        "tiers.Tier",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_column="tier_pin_code",
        help_text="Never demoted below this tier until the pin ends.",
    )
    tier_pinned_until = models.DateTimeField(null=True, blank=True)
    tier_probation_until = models.DateTimeField(
        null=True, blank=True, help_text="A nomination's probation ends at this time."
    )
    # Bumped by every write of the tier state: the reassessment job writes only members whose
    # version is still the one it read (compare-and-set), so it never overwrites a promotion
    # that committed while it was computing, and it holds no row locks while it computes.
    tier_version = models.PositiveIntegerField(default=0)
    # Written only by lifecycle services (event ingestion, the daily lifecycle job).
    lifecycle_stage = models.CharField(
        max_length=16, choices=LifecycleStage.choices, default=LifecycleStage.NEW
    )
    lifecycle_changed_at = models.DateTimeField()
    previous_lifecycle_stage = models.CharField(
        max_length=16, choices=LifecycleStage.choices, blank=True
    )
    # Activity times, written by event ingestion only (first_* never move later, last_* never
    # earlier, so late events cannot rewind them). "Interaction" is every event type flagged
    # ``counts_as_interaction`` (all but login and purchase by default).
    first_interaction_at = models.DateTimeField(null=True, blank=True)
    last_interaction_at = models.DateTimeField(null=True, blank=True)
    first_purchase_at = models.DateTimeField(null=True, blank=True)
    last_purchase_at = models.DateTimeField(null=True, blank=True)
    last_activity_at = models.DateTimeField(
        null=True, blank=True, help_text="The latest event of any type (a visit)."
    )
    last_login_at = models.DateTimeField(null=True, blank=True)
    public_recognition = models.BooleanField(
        default=False, help_text="Opted in to the public honors wall."
    )
    erased_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        indexes = (
            models.Index(fields=("-created_at", "-id"), name="member_created_idx"),
            models.Index(fields=("tier", "lifecycle_stage"), name="member_tier_stage_idx"),
            models.Index(fields=("lifecycle_stage",), name="member_stage_idx"),
        )
        constraints = (
            models.CheckConstraint(
                condition=models.Q(tier_pin__isnull=True, tier_pinned_until__isnull=True)
                | models.Q(tier_pin__isnull=False, tier_pinned_until__isnull=False),
                name="member_tier_pin_has_end",
            ),
        )

    def __str__(self) -> str:
        return f"{self.display_name} ({self.external_id})"

    @property
    def is_erased(self) -> bool:
        return self.erased_at is not None


class Identity(models.Model):
    """A platform identity linked to a member: a mini-program openid, a union id, a shop id."""

    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="identities")
    provider = models.SlugField(max_length=64)
    value = models.CharField(max_length=255)
    created_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "identities"
        constraints = (
            models.UniqueConstraint(
                fields=("provider", "value"), name="identity_provider_value_unique"
            ),
        )
        indexes = (models.Index(fields=("member", "provider"), name="identity_member_idx"),)

    def __str__(self) -> str:
        return f"{self.provider}:{self.value}"


class TagCategory(models.TextChoices):
    SHOPPING = "shopping", "Shopping (browsing, purchases)"
    SOCIAL = "social", "Social (interaction frequency)"
    DEMAND = "demand", "Demand (support inquiries)"
    CUSTOM = "custom", "Custom"


class TagSource(models.TextChoices):
    API = "api", "API"
    TAG_SYNC = "tag_sync", "Bulk tag sync"
    ADMIN = "admin", "Admin"
    CSV_IMPORT = "csv_import", "CSV import"
    SYSTEM = "system", "Computed by the API"


class MemberTag(models.Model):
    """A label on a member in a namespace: ``system`` (computed) or one partner's own."""

    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="tags")
    namespace = models.SlugField(max_length=64)
    key = models.CharField(max_length=128)
    value = models.CharField(max_length=256, blank=True)
    category = models.CharField(
        max_length=16, choices=TagCategory.choices, default=TagCategory.CUSTOM
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=16, choices=TagSource.choices)
    written_by = models.CharField(max_length=80, help_text="The actor that last wrote the tag.")
    synced_at = models.DateTimeField()
    created_at = models.DateTimeField()

    class Meta:
        constraints = (
            models.UniqueConstraint(
                fields=("member", "namespace", "key"), name="member_tag_namespace_key_unique"
            ),
        )
        indexes = (
            models.Index(fields=("namespace", "key", "member"), name="member_tag_lookup_idx"),
        )

    def __str__(self) -> str:
        return f"{self.namespace}:{self.key}" + (f"={self.value}" if self.value else "")


class TagChangeAction(models.TextChoices):
    ADDED = "added", "Added"
    UPDATED = "updated", "Updated"
    REMOVED = "removed", "Removed"


class TagChange(models.Model):
    """Audit of tag writes: who changed which tag of which member, from what to what."""

    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="tag_changes")
    namespace = models.SlugField(max_length=64)
    key = models.CharField(max_length=128)
    action = models.CharField(max_length=16, choices=TagChangeAction.choices)
    old_value = models.JSONField(null=True, blank=True)
    new_value = models.JSONField(null=True, blank=True)
    source = models.CharField(max_length=16, choices=TagSource.choices)
    actor = models.CharField(max_length=80)
    created_at = models.DateTimeField()

    class Meta:
        indexes = (models.Index(fields=("member", "-created_at"), name="tag_change_member_idx"),)

    def __str__(self) -> str:
        return f"{self.action} {self.namespace}:{self.key}"


# --- Activity ------------------------------------------------------------------------------------


class EventType(models.Model):
    """A registered activity event type: the built-ins of SPEC §2 (seeded) and custom ones that
    operators add in the admin. Events of an unregistered or inactive type are rejected."""

    code = models.SlugField(max_length=64, primary_key=True)
    name = models.CharField(max_length=100)
    counts_as_interaction = models.BooleanField(
        default=True,
        help_text="Counts as an interaction: keeps the member from going silent, makes an active "
        "day and counts in the 'interactions' metric.",
    )
    members_may_post = models.BooleanField(
        default=False, help_text="Members may send it about themselves through me/events/."
    )
    is_builtin = models.BooleanField(default=False, editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ("code",)

    def __str__(self) -> str:
        return self.code


# Event sources besides partner namespaces.
EVENT_SOURCE_MEMBER = "member"
EVENT_SOURCE_OPERATOR = "operator"


class ActivityEvent(models.Model):
    """One activity event, stored once per (source, event id) with the points it earned.

    ``source`` is the sending partner's namespace, ``operator``, or ``member`` (self-posted; the
    member's id prefixes the client's event id so members' ids never collide).
    """

    id = models.BigAutoField(primary_key=True)
    source = models.CharField(max_length=64)
    event_id = models.CharField(max_length=128)
    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="activity_events")
    type = models.SlugField(max_length=64)
    occurred_at = models.DateTimeField()
    business_date = models.DateField(help_text="The day of occurred_at in the program time zone.")
    properties = models.JSONField(default=dict, blank=True)
    points_awarded = models.BigIntegerField(default=0)
    received_at = models.DateTimeField()

    class Meta:
        constraints = (
            models.UniqueConstraint(
                fields=("source", "event_id"), name="activity_event_source_event_unique"
            ),
            models.CheckConstraint(
                condition=models.Q(points_awarded__gte=0), name="activity_event_points_gte_0"
            ),
        )
        indexes = (
            models.Index(
                fields=("member", "-occurred_at", "-id"), name="activity_event_member_idx"
            ),
            # The hourly velocity count of awarded events per member and type.
            models.Index(
                fields=("member", "type", "received_at"),
                condition=models.Q(points_awarded__gt=0),
                name="activity_event_velocity_idx",
            ),
        )

    def __str__(self) -> str:
        return f"{self.type} {self.source}:{self.event_id}"

    @property
    def client_event_id(self) -> str:
        """The id the sender chose (self-posted ids are stored prefixed with the member's id)."""
        prefix = f"{self.member_id}:"
        if self.source == EVENT_SOURCE_MEMBER and self.event_id.startswith(prefix):
            return self.event_id[len(prefix) :]
        return self.event_id


class MemberDailyActivity(models.Model):
    """One member's activity on one business day, maintained at ingestion by atomic increments.

    Rolling-window metrics (SPEC §2) are sums over these rows. ``interactions`` counts the events
    whose type counts as an interaction; an active day is a row with ``interactions > 0``.
    """

    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="daily_activity")
    business_date = models.DateField()
    interactions = models.PositiveIntegerField(default=0)
    logins = models.PositiveIntegerField(default=0)
    checkins = models.PositiveIntegerField(default=0)
    posts = models.PositiveIntegerField(default=0)
    comments = models.PositiveIntegerField(default=0)
    likes = models.PositiveIntegerField(default=0)
    shares = models.PositiveIntegerField(default=0)
    purchases = models.PositiveIntegerField(default=0)
    purchase_amount = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    support_inquiries = models.PositiveIntegerField(default=0)
    courses_completed = models.PositiveIntegerField(default=0)
    other_events = models.PositiveIntegerField(default=0, help_text="Events of custom types.")
    points_earned = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "member daily activity"
        constraints = (
            models.UniqueConstraint(
                fields=("member", "business_date"), name="member_daily_activity_unique"
            ),
        )
        indexes = (
            models.Index(fields=("business_date", "member"), name="member_daily_activity_date_idx"),
        )

    def __str__(self) -> str:
        return f"{self.member_id} {self.business_date}"


# The rollup column each built-in event type counts in; custom types count in ``other_events``.
ROLLUP_COLUMNS = {
    "login": "logins",
    "checkin": "checkins",
    "post": "posts",
    "comment": "comments",
    "like": "likes",
    "share": "shares",
    "purchase": "purchases",
    "support_inquiry": "support_inquiries",
    "course_completed": "courses_completed",
}
ROLLUP_OTHER_COLUMN = "other_events"
