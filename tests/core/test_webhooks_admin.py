"""The admin as an operator tool for webhooks: subscriptions (secret shown once, never again),
disabled ones flagged, the delivery log with attempts, redelivery, and the outbox."""

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.utils import timezone

from core.models import DeliveryStatus, OutboxEvent, WebhookDelivery, WebhookSubscription
from core.schedules import SCHEDULES
from core.webhooks import webhooks_dispatch

SUBSCRIPTIONS = "/admin/core/webhooksubscription/"
DELIVERIES = "/admin/core/webhookdelivery/"
OUTBOX = "/admin/core/outboxevent/"


def _messages(response):
    return [str(message) for message in get_messages(response.wsgi_request)]


def _operator(client, *perms):
    user = User.objects.create_user(f"op-{User.objects.count()}", is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client.force_login(user)
    return user


@pytest.fixture
def admin_client_(client, superuser):
    client.force_login(superuser)
    return client


def test_adding_a_subscription_shows_the_secret_once(admin_client_, fake_dns, webhook_partner):
    response = admin_client_.post(
        f"{SUBSCRIPTIONS}add/",
        {
            "partner": webhook_partner.pk,
            "url": "https://hooks.example.com/in",
            "event_types": ["points.awarded", "member.tier_changed"],
            "description": "CRM",
        },
        follow=True,
    )

    subscription = WebhookSubscription.objects.get()
    assert subscription.event_types == ["member.tier_changed", "points.awarded"]
    assert any(subscription.secret in message for message in _messages(response))
    change_page = admin_client_.get(f"{SUBSCRIPTIONS}{subscription.pk}/change/")
    assert change_page.status_code == 200
    assert subscription.secret not in change_page.content.decode()
    assert "Hidden: it was shown once." in change_page.content.decode()
    listing = admin_client_.get(SUBSCRIPTIONS)
    assert subscription.secret not in listing.content.decode()


def test_the_admin_refuses_unsafe_urls(admin_client_, fake_dns, webhook_partner):
    response = admin_client_.post(
        f"{SUBSCRIPTIONS}add/",
        {"partner": webhook_partner.pk, "url": "https://10.0.0.1/in", "event_types": ["*"]},
    )

    assert response.status_code == 200
    assert "non-public" in response.content.decode()
    assert WebhookSubscription.objects.count() == 0


def test_disabled_subscriptions_are_flagged_and_can_be_enabled(
    admin_client_, fake_dns, make_subscription
):
    subscription, _ = make_subscription("https://hooks.example.com/in")
    WebhookSubscription.objects.update(
        is_active=False,
        disabled_at=timezone.now(),
        disabled_reason="5 deliveries in a row failed after every retry.",
        consecutive_failures=5,
    )

    listing = admin_client_.get(SUBSCRIPTIONS)
    change = admin_client_.get(f"{SUBSCRIPTIONS}{subscription.pk}/change/")
    enabled = admin_client_.post(
        SUBSCRIPTIONS, {"action": "enable", "_selected_action": [subscription.pk]}, follow=True
    )

    assert "1 webhook subscription(s) are disabled" in " ".join(_messages(listing))
    assert "DISABLED" in listing.content.decode()
    assert "This subscription is DISABLED: 5 deliveries" in " ".join(_messages(change))
    assert "Enabled 1 subscription(s)." in _messages(enabled)
    subscription.refresh_from_db()
    assert (subscription.is_active, subscription.consecutive_failures) == (True, 0)


def test_rotating_the_secret_from_the_admin_shows_the_new_one(
    admin_client_, fake_dns, make_subscription
):
    subscription, old_secret = make_subscription("https://hooks.example.com/in")

    response = admin_client_.post(
        SUBSCRIPTIONS,
        {"action": "rotate_secret", "_selected_action": [subscription.pk]},
        follow=True,
    )

    subscription.refresh_from_db()
    assert subscription.secret != old_secret
    assert subscription.previous_secret == old_secret
    assert any(subscription.secret in message for message in _messages(response))


@pytest.fixture
def failed_delivery(allow_loopback_webhooks, httpserver, make_subscription, record_event):
    httpserver.expect_request("/hook").respond_with_data("thanks-from-the-receiver")
    subscription, _ = make_subscription(f"http://127.0.0.1:{httpserver.port}/hook")
    record_event()
    webhooks_dispatch(at=timezone.now())
    WebhookDelivery.objects.update(
        status=DeliveryStatus.FAILED, attempts_count=8, next_attempt_at=None, leased_until=None
    )
    return subscription, WebhookDelivery.objects.get()


def test_redeliver_failed_deliveries_of_a_subscription(
    admin_client_, failed_delivery, httpserver, django_capture_on_commit_callbacks
):
    subscription, delivery = failed_delivery

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(
            SUBSCRIPTIONS,
            {"action": "redeliver_failed", "_selected_action": [subscription.pk]},
            follow=True,
        )

    assert "Queued 1 failed deliveries again." in _messages(response)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert len(httpserver.log) == 1


def test_the_delivery_log_is_read_only_with_attempts_and_a_redeliver_action(
    admin_client_, failed_delivery, httpserver, django_capture_on_commit_callbacks
):
    _, delivery = failed_delivery

    listing = admin_client_.get(DELIVERIES, {"status": "failed"})
    with django_capture_on_commit_callbacks(execute=True):
        redelivered = admin_client_.post(
            DELIVERIES, {"action": "redeliver", "_selected_action": [delivery.pk]}, follow=True
        )
    detail = admin_client_.get(f"{DELIVERIES}{delivery.pk}/change/")
    searched = admin_client_.get(DELIVERIES, {"q": "member-1"})

    assert listing.status_code == 200
    assert list(listing.context["cl"].result_list) == [delivery]
    assert "Queued 1 deliveries again." in _messages(redelivered)
    assert detail.status_code == 200
    assert "thanks-from-the-receiver" in detail.content.decode()  # operators see the excerpt
    assert list(searched.context["cl"].result_list) == [delivery]
    assert admin_client_.get(f"{DELIVERIES}add/").status_code == 403


def test_redelivery_needs_the_change_permission(client, failed_delivery):
    _, delivery = failed_delivery
    _operator(client, "core.view_webhookdelivery")

    listing = client.get(DELIVERIES)
    client.post(DELIVERIES, {"action": "redeliver", "_selected_action": [delivery.pk]})

    assert listing.status_code == 200
    assert listing.context["action_form"] is None  # no action this operator may run
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED


def test_the_outbox_is_listed_read_only_with_filters(admin_client_, record_event):
    awarded = record_event("points.awarded")
    record_event("points.expired")

    filtered = admin_client_.get(OUTBOX, {"event_type": "points.awarded"})
    searched = admin_client_.get(OUTBOX, {"q": "member-1"})
    detail = admin_client_.get(f"{OUTBOX}{awarded.pk}/change/")

    assert list(filtered.context["cl"].result_list) == [awarded]
    assert len(searched.context["cl"].result_list) == 2
    assert detail.status_code == 200
    assert admin_client_.get(f"{OUTBOX}add/").status_code == 403
    assert OutboxEvent.objects.count() == 2


def test_dispatch_is_scheduled_every_minute_and_has_a_command(db, fake_dns, capsys):
    [schedule] = [item for item in SCHEDULES if item.task == "core.webhooks_dispatch"]

    call_command("deliver_webhooks")

    assert (schedule.minute, schedule.hour) == ("*", "*")
    assert "Dispatched 0 events" in capsys.readouterr().out
