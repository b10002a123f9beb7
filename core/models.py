"""Cross-cutting tables: partners and their API keys, idempotency records, the outbox and webhooks."""

import uuid6
from django.core.exceptions import ValidationError
from django.db import models
from rest_framework_api_key.models import AbstractAPIKey, APIKeyManager

SYSTEM_NAMESPACE = "system"
# Event sources and tag namespaces a partner may never own: the API's own, members' self-posted
# events and operators' events share the (source, event id) space with partners.
RESERVED_NAMESPACES = (SYSTEM_NAMESPACE, "member", "operator")


class Scope(models.TextChoices):
    MEMBERS_READ = "members:read", "Read members"
    MEMBERS_WRITE = "members:write", "Create and edit members"
    MEMBERS_TOKEN = "members:token", "Mint member tokens"
    TAGS_WRITE = "tags:write", "Write tags in the partner's namespace"
    EVENTS_WRITE = "events:write", "Send activity events"
    POINTS_AWARD = "points:award", "Award points"
    WEBHOOKS_MANAGE = "webhooks:manage", "Manage webhook subscriptions"
    ANALYTICS_READ = "analytics:read", "Read the analytics"


def validate_scopes(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError("Scopes must be a list of scope codes.")
    unknown = sorted(set(value) - set(Scope.values))
    if unknown:
        raise ValidationError(f"Unknown scopes: {', '.join(unknown)}.")


class Partner(models.Model):
    """A partner system (shop, CRM, content platform, login service) with scoped API keys."""

    name = models.CharField(max_length=100, unique=True)
    namespace = models.SlugField(
        max_length=64,
        unique=True,
        help_text="The tag namespace this partner owns and alone may write.",
    )
    scopes = models.JSONField(default=list, blank=True, validators=[validate_scopes])
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ("name",)
        constraints = (
            models.CheckConstraint(
                condition=~models.Q(namespace__in=RESERVED_NAMESPACES),
                name="partner_namespace_not_reserved",
            ),
        )

    def __str__(self) -> str:
        return self.name


class PartnerAPIKeyManager(APIKeyManager):
    def get_usable_keys(self) -> models.QuerySet["PartnerAPIKey"]:
        # One query authenticates a request: the key row together with its partner.
        return super().get_usable_keys().select_related("partner")


class PartnerAPIKey(AbstractAPIKey):
    """A hashed API key of a partner; the plain key is shown once, at creation."""

    objects = PartnerAPIKeyManager()
    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="api_keys")

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "partner API key"
        verbose_name_plural = "partner API keys"


class IdempotencyRecord(models.Model):
    """The first response to an effectful request, stored in the same transaction as its effect."""

    owner = models.CharField(max_length=80)
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    fingerprint = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField()
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = (
            models.UniqueConstraint(fields=("owner", "key"), name="idempotency_owner_key_unique"),
        )
        indexes = (models.Index(fields=("created_at",), name="idempotency_created_idx"),)

    def __str__(self) -> str:
        return f"{self.owner} {self.key}"


class OutboxEvent(models.Model):
    """A domain event, written in the same transaction as the change that caused it.

    Webhook delivery and the partners' polling feed read from here; ``dedupe_key`` makes an
    event that must happen once per occurrence (a warning, a scenario) impossible to write twice.
    """

    id = models.UUIDField(primary_key=True, default=uuid6.uuid7, editable=False)
    event_type = models.CharField(max_length=64)
    aggregate_id = models.CharField(max_length=64, help_text="The member (or other) it concerns.")
    dedupe_key = models.CharField(max_length=200)
    payload = models.JSONField(default=dict)
    occurred_at = models.DateTimeField()
    created_at = models.DateTimeField()
    # Assigned by the webhook dispatcher, one dispatcher at a time, so positions grow in commit
    # order: a partner following the feed by position never skips an event that committed late.
    # Null until dispatched (fanned out to the webhook subscriptions). Unique among the
    # dispatched only (``outbox_position_unique``): an event is written without an entry there.
    position = models.BigIntegerField(null=True, blank=True, editable=False)

    class Meta:
        constraints = (
            models.UniqueConstraint(
                fields=("event_type", "dedupe_key"), name="outbox_event_type_dedupe_unique"
            ),
            models.UniqueConstraint(
                fields=("position",),
                condition=models.Q(position__isnull=False),
                name="outbox_position_unique",
            ),
        )
        indexes = (
            models.Index(fields=("-created_at", "-id"), name="outbox_created_idx"),
            models.Index(fields=("aggregate_id", "-created_at"), name="outbox_aggregate_idx"),
            models.Index(
                fields=("id",),
                condition=models.Q(position__isnull=True),
                name="outbox_undispatched_idx",
            ),
        )

    def __str__(self) -> str:
        return f"{self.event_type} {self.aggregate_id}"


class WebhookSubscription(models.Model):
    """A partner's URL subscribed to event types; deliveries are signed with its secret.

    The secret is kept in plain text because signing needs it; it is shown once (at creation or
    rotation) and never returned or displayed again. During a rotation's grace period deliveries
    carry a signature with the previous secret too, so receivers can switch without a gap.
    """

    id = models.UUIDField(primary_key=True, default=uuid6.uuid7, editable=False)
    partner = models.ForeignKey(
        Partner, on_delete=models.CASCADE, related_name="webhook_subscriptions"
    )
    url = models.CharField(max_length=2000)
    event_types = models.JSONField(default=list, help_text='Event types, or ["*"] for all.')
    description = models.CharField(max_length=200, blank=True)
    secret = models.CharField(max_length=100, editable=False)
    previous_secret = models.CharField(max_length=100, blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    is_active = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=200, blank=True)
    consecutive_failures = models.PositiveIntegerField(
        default=0,
        help_text="Deliveries in a row that gave up after the whole retry schedule; any "
        "successful delivery resets it.",
    )
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        indexes = (
            models.Index(fields=("partner", "-created_at", "-id"), name="webhook_sub_partner_idx"),
        )

    def __str__(self) -> str:
        return self.url


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed (gave up)"


class WebhookDelivery(models.Model):
    """One event for one subscription, attempted until a 2xx or the retry schedule ends.

    ``leased_until``/``lease_token`` say that a task message for it is queued or running: the
    dispatcher re-enqueues a pending, due delivery only once its lease has passed, which is how a
    task lost with a killed worker is recovered.
    """

    subscription = models.ForeignKey(
        WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.ForeignKey(OutboxEvent, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts_count = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    leased_until = models.DateTimeField(null=True, blank=True)
    lease_token = models.UUIDField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "webhook deliveries"
        constraints = (
            models.UniqueConstraint(
                fields=("subscription", "event"), name="webhook_delivery_subscription_event_unique"
            ),
            # A pending delivery always knows when to try next; a finished one never does.
            models.CheckConstraint(
                condition=models.Q(status=DeliveryStatus.PENDING, next_attempt_at__isnull=False)
                | (
                    models.Q(next_attempt_at__isnull=True)
                    & ~models.Q(status=DeliveryStatus.PENDING)
                ),
                name="webhook_delivery_pending_has_next_attempt",
            ),
        )
        indexes = (
            models.Index(
                fields=("next_attempt_at",),
                condition=models.Q(status=DeliveryStatus.PENDING),
                name="webhook_delivery_due_idx",
            ),
            models.Index(
                fields=("subscription", "-created_at", "-id"), name="webhook_delivery_log_idx"
            ),
        )

    def __str__(self) -> str:
        return f"delivery {self.pk} ({self.status})"


class WebhookAttempt(models.Model):
    """One HTTP attempt of a delivery, recorded after the call returns (append-only)."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempts")
    attempted_at = models.DateTimeField()
    succeeded = models.BooleanField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField()
    response_excerpt = models.CharField(
        max_length=500,
        blank=True,
        help_text="The start of the receiver's answer; shown to operators only, never in the API.",
    )

    class Meta:
        indexes = (models.Index(fields=("delivery", "attempted_at"), name="webhook_attempt_idx"),)

    def __str__(self) -> str:
        return f"attempt {self.pk} of delivery {self.delivery_id}"


class JobStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Job(models.Model):
    """A long background job split into chunks that workers run independently.

    Progress lives here (not in a result backend): each chunk, when it commits its work, marks
    itself done and adds its counts in the same transaction, so the numbers are exact after a
    crash. ``dedupe_key`` makes a scheduled job unique per slot (beat firing twice starts one).
    """

    id = models.UUIDField(primary_key=True, default=uuid6.uuid7, editable=False)
    kind = models.CharField(max_length=40)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING)
    params = models.JSONField(default=dict, blank=True)
    # Null means "no key": NULLs never collide in the unique constraint, empty strings would.
    dedupe_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    requested_by = models.CharField(max_length=200)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    items_total = models.PositiveIntegerField(default=0)
    items_done = models.PositiveIntegerField(default=0)
    items_changed = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = (
            models.UniqueConstraint(fields=("kind", "dedupe_key"), name="job_kind_dedupe_unique"),
            models.CheckConstraint(
                condition=models.Q(chunks_done__lte=models.F("chunks_total")),
                name="job_chunks_done_lte_total",
            ),
        )
        indexes = (models.Index(fields=("kind", "-created_at", "-id"), name="job_kind_idx"),)

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"

    @property
    def progress(self) -> float:
        """Done share of the work, 0 to 1 (1 once done, even with no items)."""
        if self.status == JobStatus.DONE:
            return 1.0
        return self.chunks_done / self.chunks_total if self.chunks_total else 0.0


class JobChunk(models.Model):
    """One slice of a job, a half-open range of ids ``[lower, upper)`` (null = unbounded).

    ``result`` holds the chunk's own counts (summed into the job report). A chunk is done at most
    once: the worker locks the row and skips a done chunk, so a duplicate delivery or a re-run
    after a crash writes nothing twice.
    """

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    lower = models.UUIDField(null=True, blank=True)
    upper = models.UUIDField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    items = models.PositiveIntegerField(default=0)
    changed = models.PositiveIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("job", "index")
        constraints = (models.UniqueConstraint(fields=("job", "index"), name="job_chunk_unique"),)
        indexes = (
            models.Index(
                fields=("job", "index"),
                condition=~models.Q(status="done"),
                name="job_chunk_open_idx",
            ),
        )

    def __str__(self) -> str:
        return f"{self.job_id} #{self.index}"
