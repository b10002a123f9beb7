"""Members, their linked identities and their tags (with an audit of every tag change)."""

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
    # Written only by lifecycle services (event ingestion, the daily lifecycle job).
    lifecycle_stage = models.CharField(
        max_length=16, choices=LifecycleStage.choices, default=LifecycleStage.NEW
    )
    lifecycle_changed_at = models.DateTimeField()
    first_interaction_at = models.DateTimeField(null=True, blank=True)
    first_purchase_at = models.DateTimeField(null=True, blank=True)
    last_activity_at = models.DateTimeField(null=True, blank=True)
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
