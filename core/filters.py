"""Query filters of the webhook delivery log and the outbox feed."""

import django_filters

from core.models import DeliveryStatus, OutboxEvent, WebhookDelivery


class WebhookDeliveryFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=DeliveryStatus.choices)
    event_type = django_filters.CharFilter(field_name="event__event_type", max_length=64)

    class Meta:
        model = WebhookDelivery
        fields = ()


class OutboxEventFilter(django_filters.FilterSet):
    type = django_filters.CharFilter(field_name="event_type", max_length=64)
    aggregate_id = django_filters.CharFilter(max_length=64)

    class Meta:
        model = OutboxEvent
        fields = ()
