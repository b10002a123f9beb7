"""Cross-cutting tables: partners and their API keys, idempotency records."""

import uuid6
from django.core.exceptions import ValidationError
from django.db import models
from rest_framework_api_key.models import AbstractAPIKey, APIKeyManager

SYSTEM_NAMESPACE = "system"


class Scope(models.TextChoices):
    MEMBERS_READ = "members:read", "Read members"
    MEMBERS_WRITE = "members:write", "Create and edit members"
    MEMBERS_TOKEN = "members:token", "Mint member tokens"
    TAGS_WRITE = "tags:write", "Write tags in the partner's namespace"
    EVENTS_WRITE = "events:write", "Send activity events"
    POINTS_AWARD = "points:award", "Award points"
    WEBHOOKS_MANAGE = "webhooks:manage", "Manage webhook subscriptions"


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
                condition=~models.Q(namespace=SYSTEM_NAMESPACE), name="partner_namespace_not_system"
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

    class Meta:
        constraints = (
            models.UniqueConstraint(
                fields=("event_type", "dedupe_key"), name="outbox_event_type_dedupe_unique"
            ),
        )
        indexes = (
            models.Index(fields=("-created_at", "-id"), name="outbox_created_idx"),
            models.Index(fields=("aggregate_id", "-created_at"), name="outbox_aggregate_idx"),
        )

    def __str__(self) -> str:
        return f"{self.event_type} {self.aggregate_id}"
