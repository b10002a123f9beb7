"""HTTP interface of webhook subscriptions, their delivery log and the outbox feed."""

from typing import Any
from uuid import UUID

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import Cursor
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import selectors, webhooks
from core.actors import Actor
from core.api.authentication import PartnerPrincipal, actor_for_user
from core.api.idempotency import run_idempotent
from core.api.pagination import CreatedCursorPagination
from core.api.serializers import (
    EmptyInputSerializer,
    OutboxEventFeedSerializer,
    WebhookDeliverySerializer,
    WebhookSecretSerializer,
    WebhookSubscriptionCreatedSerializer,
    WebhookSubscriptionCreateSerializer,
    WebhookSubscriptionSerializer,
    WebhookSubscriptionUpdateSerializer,
)
from core.filters import OutboxEventFilter, WebhookDeliveryFilter
from core.models import OutboxEvent, Partner, Scope, WebhookDelivery, WebhookSubscription


def actor_of(request: Request) -> Actor:
    return actor_for_user(request.user)


class WebhookDeliveryPagination(CreatedCursorPagination):
    # Deliveries of one dispatch share created_at; the id is unique and grows with it.
    ordering = ("-id",)


class OutboxFeedPagination(CreatedCursorPagination):
    """Oldest first by feed position. ``next`` is always given: at the end it points just past
    the last event, so a poller stores it and follows it later for newer events."""

    ordering = ("position",)

    def get_next_link(self) -> str | None:
        if self.has_next:
            return super().get_next_link()
        if self.page:
            position = self._get_position_from_instance(self.page[-1], self.ordering)
        elif self.cursor is not None and not self.cursor.reverse:
            position = self.cursor.position
        else:
            position = None
        return self.encode_cursor(Cursor(offset=0, reverse=False, position=position))

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        response = super().get_paginated_response_schema(schema)
        response["properties"]["next"]["nullable"] = False
        response["properties"]["next"]["description"] = (
            "Follow it for the next page; at the end it resumes after the last event, for polling."
        )
        response["required"] = ["next", "results"]
        return response


def _partner_for_new_subscription(request: Request, partner_id: int | None) -> Partner:
    """A partner subscribes for itself; an operator names the partner."""
    if isinstance(request.user, PartnerPrincipal):
        if partner_id is not None:
            raise ValidationError({"partner": ["Only operators choose the partner."]})
        return request.user.partner
    if partner_id is None:
        raise ValidationError({"partner": ["This field is required."]})
    partner = Partner.objects.filter(pk=partner_id).first()
    if partner is None:
        raise ValidationError({"partner": ["No partner with this id."]})
    return partner


class WebhookListCreateView(generics.ListAPIView):
    serializer_class = WebhookSubscriptionSerializer
    operator_permissions = {
        "GET": ["core.view_webhooksubscription"],
        "POST": ["core.add_webhooksubscription"],
    }
    partner_scopes = {"GET": Scope.WEBHOOKS_MANAGE, "POST": Scope.WEBHOOKS_MANAGE}

    def get_queryset(self) -> QuerySet[WebhookSubscription]:
        return selectors.webhook_subscription_list_for_actor(actor=actor_of(self.request))

    @extend_schema(
        request=WebhookSubscriptionCreateSerializer,
        responses={201: WebhookSubscriptionCreatedSerializer},
        description=(
            "Subscribe a URL to event types. The response carries the signing secret, shown "
            "only this once."
        ),
    )
    def post(self, request: Request) -> Response:
        data = WebhookSubscriptionCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        partner = _partner_for_new_subscription(request, fields.pop("partner", None))

        def effect() -> Response:
            subscription, secret = webhooks.webhook_subscription_create(
                partner=partner,
                target=fields.pop("url"),
                at=timezone.now(),
                **fields,
            )
            body = WebhookSubscriptionCreatedSerializer(subscription).data
            body["secret"] = secret
            return Response(body, status=status.HTTP_201_CREATED)

        return run_idempotent(request, effect)


class WebhookDetailView(APIView):
    operator_permissions = {
        "GET": ["core.view_webhooksubscription"],
        "PATCH": ["core.change_webhooksubscription"],
        "DELETE": ["core.delete_webhooksubscription"],
    }
    partner_scopes = {"*": Scope.WEBHOOKS_MANAGE}

    @extend_schema(responses=WebhookSubscriptionSerializer)
    def get(self, request: Request, webhook_id: UUID) -> Response:
        subscription = selectors.webhook_subscription_get_for_actor(
            actor=actor_of(request), subscription_id=webhook_id
        )
        return Response(WebhookSubscriptionSerializer(subscription).data)

    @extend_schema(
        request=WebhookSubscriptionUpdateSerializer, responses=WebhookSubscriptionSerializer
    )
    def patch(self, request: Request, webhook_id: UUID) -> Response:
        actor = actor_of(request)
        subscription = selectors.webhook_subscription_get_for_actor(
            actor=actor, subscription_id=webhook_id
        )
        data = WebhookSubscriptionUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        subscription = webhooks.webhook_subscription_update(
            subscription=subscription,
            actor=actor,
            at=timezone.now(),
            target=fields.pop("url", None),
            **fields,
        )
        return Response(WebhookSubscriptionSerializer(subscription).data)

    @extend_schema(
        responses={204: None},
        description="Delete the subscription and its delivery log (PATCH is_active=false pauses).",
    )
    def delete(self, request: Request, webhook_id: UUID) -> Response:
        subscription = selectors.webhook_subscription_get_for_actor(
            actor=actor_of(request), subscription_id=webhook_id
        )
        webhooks.webhook_subscription_delete(subscription=subscription)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookSecretRotationView(APIView):
    operator_permissions = {"POST": ["core.change_webhooksubscription"]}
    partner_scopes = {"POST": Scope.WEBHOOKS_MANAGE}

    @extend_schema(
        request=EmptyInputSerializer,
        responses={201: WebhookSecretSerializer},
        description=(
            "Issue a new signing secret, shown only in this response. Until "
            "`previous_secret_expires_at` each delivery is signed with both secrets."
        ),
    )
    def post(self, request: Request, webhook_id: UUID) -> Response:
        subscription = selectors.webhook_subscription_get_for_actor(
            actor=actor_of(request), subscription_id=webhook_id
        )
        EmptyInputSerializer(data=request.data).is_valid(raise_exception=True)

        def effect() -> Response:
            secret, expires_at = webhooks.webhook_secret_rotate(
                subscription=subscription, at=timezone.now()
            )
            body = {"secret": secret, "previous_secret_expires_at": expires_at}
            return Response(WebhookSecretSerializer(body).data, status=status.HTTP_201_CREATED)

        return run_idempotent(request, effect)


class WebhookDeliveryListView(generics.ListAPIView):
    serializer_class = WebhookDeliverySerializer
    filterset_class = WebhookDeliveryFilter
    pagination_class = WebhookDeliveryPagination
    operator_permissions = {"GET": ["core.view_webhookdelivery"]}
    partner_scopes = {"GET": Scope.WEBHOOKS_MANAGE}

    def get_queryset(self) -> QuerySet[WebhookDelivery]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no subscription
            return WebhookDelivery.objects.none()
        subscription = selectors.webhook_subscription_get_for_actor(
            actor=actor_of(self.request), subscription_id=self.kwargs["webhook_id"]
        )
        return selectors.webhook_delivery_list(subscription=subscription)


class WebhookRedeliveryView(APIView):
    operator_permissions = {"POST": ["core.change_webhookdelivery"]}
    partner_scopes = {"POST": Scope.WEBHOOKS_MANAGE}

    @extend_schema(
        request=EmptyInputSerializer,
        responses={202: WebhookDeliverySerializer},
        description=(
            "Attempt the delivery again now, whatever its state (409 when the subscription is "
            "disabled). It is sent with the same webhook-id."
        ),
    )
    def post(self, request: Request, webhook_id: UUID, delivery_id: int) -> Response:
        actor = actor_of(request)
        subscription = selectors.webhook_subscription_get_for_actor(
            actor=actor, subscription_id=webhook_id
        )
        delivery = selectors.webhook_delivery_get(
            subscription=subscription, delivery_id=delivery_id
        )
        EmptyInputSerializer(data=request.data).is_valid(raise_exception=True)

        def effect() -> Response:
            webhooks.webhook_delivery_redeliver(delivery=delivery, at=timezone.now())
            # Re-read: the attempt itself runs after the commit (inline in the demo).
            queued = selectors.webhook_delivery_get(
                subscription=subscription, delivery_id=delivery_id
            )
            return Response(WebhookDeliverySerializer(queued).data, status=status.HTTP_202_ACCEPTED)

        return run_idempotent(request, effect)


class OutboxEventFeedView(generics.ListAPIView):
    """The brand's domain events, oldest first, for partners that poll instead of (or besides)
    receiving webhooks. An event appears once the dispatcher has given it a position (within
    about a minute); positions grow in commit order, so following ``next`` misses nothing."""

    serializer_class = OutboxEventFeedSerializer
    filterset_class = OutboxEventFilter
    pagination_class = OutboxFeedPagination
    operator_permissions = {"GET": ["core.view_outboxevent"]}
    partner_scopes = {"GET": Scope.WEBHOOKS_MANAGE}

    def get_queryset(self) -> QuerySet[OutboxEvent]:
        return selectors.outbox_event_feed(actor=actor_of(self.request))
