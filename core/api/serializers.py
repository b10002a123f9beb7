"""Serializer bases shared by every app's API."""

from typing import Any

from rest_framework import serializers

from core.models import OutboxEvent, WebhookAttempt, WebhookDelivery, WebhookSubscription
from core.webhooks import ALL_EVENTS, EVENT_TYPES, WebhookURLError, webhook_target_resolve


class StrictInputSerializer(serializers.Serializer):
    """An input body: unknown fields are an error (400), not silently dropped."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {name: ["Unknown field."] for name in unknown}, code="unknown_field"
                )
        return super().to_internal_value(data)

    def create(self, validated_data: Any) -> Any:  # pragma: no cover - serializers never write
        raise NotImplementedError("Input serializers never write; call a service.")

    def update(self, instance: Any, validated_data: Any) -> Any:  # pragma: no cover
        raise NotImplementedError("Input serializers never write; call a service.")


class ProblemErrorSerializer(serializers.Serializer):
    attr = serializers.CharField(allow_null=True)
    pointer = serializers.CharField()
    code = serializers.CharField()
    detail = serializers.CharField()


class ProblemSerializer(serializers.Serializer):
    """RFC 9457 problem details, as every error response carries them."""

    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    code = serializers.CharField()
    instance = serializers.CharField(required=False)
    errors = ProblemErrorSerializer(many=True, required=False)


# --- Webhooks and the outbox feed --------------------------------------------------------------


class WebhookURLField(serializers.CharField):
    """A webhook URL, validated and resolved (SSRF rules); the value is a ``WebhookTarget``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 2000)
        kwargs.setdefault(
            "help_text",
            "https URL of a public host (no credentials); its host is resolved and every address "
            "must be public.",
        )
        super().__init__(**kwargs)

    def run_validation(self, data: Any = serializers.empty) -> Any:
        url = super().run_validation(data)
        try:
            return webhook_target_resolve(url)
        except WebhookURLError as error:
            raise serializers.ValidationError(error.detail, code=error.code) from None


def _event_types_field(**kwargs: Any) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.ChoiceField(choices=(*EVENT_TYPES, ALL_EVENTS)),
        min_length=1,
        max_length=len(EVENT_TYPES) + 1,
        help_text='Event types to receive, or ["*"] for every type.',
        **kwargs,
    )


class WebhookSubscriptionSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookSubscription
        fields = (
            "id",
            "partner",
            "url",
            "event_types",
            "description",
            "is_active",
            "disabled_at",
            "disabled_reason",
            "consecutive_failures",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields


class WebhookSubscriptionCreatedSerializer(WebhookSubscriptionSerializer):
    secret = serializers.CharField(
        read_only=True,
        help_text="The signing secret (Standard Webhooks, whsec_...). Shown only in this response.",
    )

    class Meta(WebhookSubscriptionSerializer.Meta):
        fields = (*WebhookSubscriptionSerializer.Meta.fields, "secret")
        read_only_fields = fields


class WebhookSubscriptionCreateSerializer(StrictInputSerializer):
    url = WebhookURLField()
    event_types = _event_types_field()
    description = serializers.CharField(
        max_length=200, required=False, default="", allow_blank=True
    )
    partner = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="Operators only (required for them): the partner that owns the subscription.",
    )


class WebhookSubscriptionUpdateSerializer(StrictInputSerializer):
    url = WebhookURLField(required=False)
    event_types = _event_types_field(required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    is_active = serializers.BooleanField(
        required=False, help_text="false pauses deliveries; true re-enables and resets failures."
    )


class WebhookSecretSerializer(serializers.Serializer):
    secret = serializers.CharField(help_text="The new signing secret. Shown only in this response.")
    previous_secret_expires_at = serializers.DateTimeField(
        help_text="Until then deliveries are signed with the previous secret too."
    )


class EmptyInputSerializer(StrictInputSerializer):
    """A POST whose body carries nothing (any field is an error)."""


class WebhookAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        # The receiver's body is never returned (SSRF hygiene); operators see it in the admin.
        fields = ("attempted_at", "succeeded", "status_code", "error", "duration_ms")
        read_only_fields = fields


class WebhookDeliverySerializer(serializers.ModelSerializer):
    event_type = serializers.CharField(source="event.event_type", read_only=True)
    attempts = WebhookAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = (
            "id",
            "event",
            "event_type",
            "status",
            "attempts_count",
            "next_attempt_at",
            "last_attempt_at",
            "last_status_code",
            "created_at",
            "attempts",
        )
        read_only_fields = fields


class OutboxEventFeedSerializer(serializers.ModelSerializer):
    """An event in the shape of a webhook body, plus its feed position."""

    type = serializers.CharField(source="event_type", read_only=True)
    timestamp = serializers.DateTimeField(source="occurred_at", read_only=True)
    data = serializers.JSONField(source="payload", read_only=True)

    class Meta:
        model = OutboxEvent
        fields = ("id", "type", "timestamp", "data", "aggregate_id", "position", "created_at")
        read_only_fields = fields
