from django.urls import path

from core.api import webhook_views as views

urlpatterns = [
    path("webhooks/", views.WebhookListCreateView.as_view(), name="webhook-list"),
    path("webhooks/<uuid:webhook_id>/", views.WebhookDetailView.as_view(), name="webhook-detail"),
    path(
        "webhooks/<uuid:webhook_id>/secret-rotations/",
        views.WebhookSecretRotationView.as_view(),
        name="webhook-secret-rotations",
    ),
    path(
        "webhooks/<uuid:webhook_id>/deliveries/",
        views.WebhookDeliveryListView.as_view(),
        name="webhook-deliveries",
    ),
    path(
        "webhooks/<uuid:webhook_id>/deliveries/<int:delivery_id>/redeliveries/",
        views.WebhookRedeliveryView.as_view(),
        name="webhook-redeliveries",
    ),
    path("outbox-events/", views.OutboxEventFeedView.as_view(), name="outbox-events"),
]
