"""Bulk operations across apps: one operation on a selection of members of any size.

The job itself (status, chunks, progress) is a ``core.models.Job`` with its ``JobChunk`` rows, like
the tier reassessment. ``BulkOperation`` adds what an operator asks for and the outcome counts;
``BulkItem`` is the selection, materialized once when the operation starts (``INSERT ... SELECT``
for a member filter, a bulk insert for external ids), each item numbered and assigned to a chunk,
with its own outcome.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from core.models import Job


class BulkOperationKind(models.TextChoices):
    POINTS_AWARD = "points_award", "Award points"
    CERTIFICATION_GRANT = "certification_grant", "Grant a certification"
    TIER_REASSESSMENT = "tier_reassessment", "Reassess tiers"


class SelectionKind(models.TextChoices):
    FILTER = "filter", "Member filter"
    EXTERNAL_IDS = "external_ids", "List of external ids"


class ItemStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    SKIPPED = "skipped", "Skipped"
    FAILED = "failed", "Failed"


class BulkOperation(models.Model):
    """What the operator asked for, on a job; counts of the items' outcomes so far."""

    job = models.OneToOneField(
        Job, on_delete=models.CASCADE, primary_key=True, related_name="bulk_operation"
    )
    operation = models.CharField(max_length=40, choices=BulkOperationKind.choices)
    selection = models.CharField(max_length=16, choices=SelectionKind.choices)
    requested_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    succeeded_count = models.PositiveIntegerField(default=0)
    skipped_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()

    class Meta:
        indexes = (
            models.Index(
                fields=("requested_by_user", "-created_at", "-job"), name="bulk_op_requester_idx"
            ),
        )

    def __str__(self) -> str:
        return f"{self.get_operation_display()} {self.job_id}"


class BulkItem(models.Model):
    """One member of an operation's selection (or an unknown external id) and its outcome."""

    id = models.BigAutoField(primary_key=True)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="bulk_items")
    position = models.PositiveIntegerField(help_text="1-based place in the selection.")
    chunk = models.PositiveIntegerField()
    member = models.ForeignKey(
        "members.Member",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty for an external id that names no member.",
    )
    external_id = models.CharField(max_length=128)
    status = models.CharField(max_length=16, choices=ItemStatus.choices, default=ItemStatus.PENDING)
    outcome = models.CharField(max_length=40, blank=True)
    detail = models.CharField(max_length=500, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = (
            models.UniqueConstraint(fields=("job", "position"), name="bulk_item_position_unique"),
            # A member is in a selection once: a re-run can never act on them twice.
            models.UniqueConstraint(
                fields=("job", "member"),
                condition=Q(member__isnull=False),
                name="bulk_item_member_unique",
            ),
            # Only an unknown external id has no member, and it fails.
            models.CheckConstraint(
                condition=Q(member__isnull=False) | Q(status=ItemStatus.FAILED),
                name="bulk_item_unknown_member_failed",
            ),
        )
        indexes = (
            models.Index(fields=("job", "chunk"), name="bulk_item_chunk_idx"),
            models.Index(fields=("job", "status", "position"), name="bulk_item_status_idx"),
        )

    def __str__(self) -> str:
        return f"{self.job_id} #{self.position} {self.external_id}"
