"""Webhook signing, target validation, the dispatcher and deliveries against real receivers."""

import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
import requests
import time_machine
from django.db import IntegrityError, connection, transaction
from django.test import override_settings
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from werkzeug import Request, Response

from core.models import DeliveryStatus, OutboxEvent, WebhookAttempt, WebhookDelivery
from core.webhooks import (
    MAX_ATTEMPTS,
    RETRY_DELAYS,
    WebhookURLError,
    _HttpResult,
    _PinnedAddressAdapter,
    retry_delay,
    sign,
    webhook_body,
    webhook_deliver,
    webhook_headers,
    webhook_secret_generate,
    webhook_secret_rotate,
    webhook_subscription_delete,
    webhook_target_resolve,
    webhooks_dispatch,
)
from tests.core.conftest import PUBLIC_ADDRESS

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _dispatch(capture, at=None):
    """Run the dispatcher; its enqueued deliveries run inline after the commit (eager mode)."""
    with capture(execute=True):
        return webhooks_dispatch(at=at or timezone.now())


def _verified(request: Request, secret: str) -> dict:
    return Webhook(secret).verify(request.get_data(), dict(request.headers))


# --- Signing -----------------------------------------------------------------------------------


def test_signature_matches_the_reference_implementation():
    secret = webhook_secret_generate()
    body = '{"id":"evt_1","type":"points.awarded"}'

    ours = sign(secret, "evt_1", 1_700_000_000, body)

    reference = Webhook(secret).sign("evt_1", datetime.fromtimestamp(1_700_000_000, UTC), body)
    assert ours == reference
    assert secret.startswith("whsec_")
    assert len(secret) == len("whsec_") + 44  # 32 random bytes, base64


def test_reference_verifier_accepts_our_headers_and_rejects_a_tampered_body(
    db, make_subscription, fake_dns, record_event
):
    subscription, secret = make_subscription("https://hooks.example.com/in")
    event = record_event("points.awarded", {"points": 5})
    now = timezone.now()
    body = webhook_body(event)

    headers = webhook_headers(
        subscription=subscription,
        msg_id=str(event.pk),
        timestamp=int(now.timestamp()),
        body=body,
        at=now,
    )

    assert Webhook(secret).verify(body, headers) == {
        "id": str(event.pk),
        "type": "points.awarded",
        "timestamp": event.occurred_at.isoformat(),
        "data": {"points": 5},
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace('"points":5', '"points":500'), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhook_secret_generate()).verify(body, headers)


def test_after_rotation_both_secrets_verify_until_the_grace_period_ends(
    db, make_subscription, fake_dns
):
    subscription, old_secret = make_subscription("https://hooks.example.com/in")
    new_secret, expires_at = webhook_secret_rotate(subscription=subscription, at=T0)
    subscription.refresh_from_db()
    body = '{"x":1}'

    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        during = webhook_headers(
            subscription=subscription,
            msg_id="m",
            timestamp=int(T0.timestamp()) + 3600,
            body=body,
            at=T0 + timedelta(hours=1),
        )
        assert Webhook(new_secret).verify(body, during) == {"x": 1}
        assert Webhook(old_secret).verify(body, during) == {"x": 1}
    after_at = expires_at + timedelta(seconds=1)
    with time_machine.travel(after_at, tick=False):
        after = webhook_headers(
            subscription=subscription,
            msg_id="m",
            timestamp=int(after_at.timestamp()),
            body=body,
            at=after_at,
        )
        assert Webhook(new_secret).verify(body, after) == {"x": 1}
        with pytest.raises(WebhookVerificationError):
            Webhook(old_secret).verify(body, after)
    assert expires_at == T0 + timedelta(hours=24)
    assert len(during["webhook-signature"].split(" ")) == 2
    assert len(after["webhook-signature"].split(" ")) == 1


# --- Retry schedule (pure) ---------------------------------------------------------------------


@pytest.mark.parametrize("jitter", [0.0, 0.5, 0.999999])
def test_retry_schedule_spans_more_than_a_day_whatever_the_jitter(jitter):
    delays = [retry_delay(attempt_number=n, jitter=jitter) for n in range(1, MAX_ATTEMPTS)]

    assert sum(delays, timedelta()) >= timedelta(hours=24)
    assert delays == sorted(delays)
    assert len(delays) == len(RETRY_DELAYS) == MAX_ATTEMPTS - 1


def test_retry_delay_jitter_is_within_ten_percent_and_retry_after_only_lengthens():
    low = retry_delay(attempt_number=2, jitter=0.0)
    high = retry_delay(attempt_number=2, jitter=0.999999)

    assert low == timedelta(minutes=4, seconds=30)
    assert timedelta(minutes=5, seconds=29) < high < timedelta(minutes=5, seconds=30)
    assert retry_delay(attempt_number=1, jitter=0.5, retry_after=60) == timedelta(seconds=60)
    assert retry_delay(attempt_number=2, jitter=0.5, retry_after=1) == timedelta(minutes=5)
    assert retry_delay(attempt_number=1, jitter=0.5, retry_after=10**9) == timedelta(hours=24)


# --- Target validation (SSRF) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1/hook", "non-public"),
        ("http://10.0.0.1/hook", "non-public"),
        ("http://192.168.1.10/hook", "non-public"),
        ("http://100.64.0.1/hook", "non-public"),
        ("http://169.254.169.254/latest/meta-data", "non-public"),
        ("http://[::1]/hook", "non-public"),
        ("http://[::ffff:127.0.0.1]/hook", "non-public"),
        ("http://[fd00::1]/hook", "non-public"),
        ("http://0.0.0.0/hook", "non-public"),
        ("http://224.0.0.1/hook", "non-public"),
        ("http://2130706433/hook", "non-public"),
        ("http://0x7f000001/hook", "non-public"),
        ("http://localhost:8000/hook", "non-public"),
        ("http://user:pw@hooks.example.com/hook", "credentials"),
        ("https://hooks.example.com@127.0.0.1/hook", "credentials"),
        ("ftp://hooks.example.com/hook", "must use"),
        ("file:///etc/passwd", "must use"),
        ("gopher://hooks.example.com/", "must use"),
        ("https://nowhere.invalid/hook", "cannot be resolved"),
        ("https://hooks.example.com:99999/hook", "malformed"),
        ("https://hooks.example.com/a b", "no spaces"),
        ("https://hooks.example.com/hook#frag", "fragment"),
        ("https:///hook", "no host"),
    ],
)
def test_forbidden_targets_are_refused(settings, fake_dns, url, message):
    settings.LOYALTY_WEBHOOK_ALLOW_HTTP = True

    with pytest.raises(WebhookURLError, match=message):
        webhook_target_resolve(url)


def test_a_host_with_any_private_address_is_refused(settings, fake_dns):
    fake_dns["split.example.com"] = [PUBLIC_ADDRESS, "10.1.2.3"]

    with pytest.raises(WebhookURLError, match="non-public"):
        webhook_target_resolve("https://split.example.com/hook")


def test_https_is_required_unless_http_is_allowed(settings, fake_dns):
    settings.LOYALTY_WEBHOOK_ALLOW_HTTP = False

    with pytest.raises(WebhookURLError, match="must use https"):
        webhook_target_resolve("http://hooks.example.com/hook")
    target = webhook_target_resolve("https://hooks.example.com/hook")

    assert (target.scheme, target.hostname, target.port) == ("https", "hooks.example.com", 443)
    assert target.addresses == (PUBLIC_ADDRESS,)


def test_localhost_really_resolves_to_loopback_and_is_refused(settings):
    settings.LOYALTY_WEBHOOK_ALLOW_HTTP = True

    with pytest.raises(WebhookURLError, match="non-public"):
        webhook_target_resolve("http://localhost:8000/hook")


def test_private_targets_pass_only_when_allowed(allow_loopback_webhooks):
    target = webhook_target_resolve("http://127.0.0.1:8123/hook")

    assert target.addresses == ("127.0.0.1",)


def test_production_defaults_refuse_http_and_private_targets():
    from loyalty.settings import base

    assert base.LOYALTY_WEBHOOK_ALLOW_PRIVATE_TARGETS is False
    assert base.LOYALTY_WEBHOOK_ALLOW_HTTP is base.DEBUG


# --- Dispatcher --------------------------------------------------------------------------------


def test_dispatch_fans_events_out_to_matching_active_subscriptions_once(
    db, make_subscription, fake_dns, record_event, webhook_partner
):
    points_only, _ = make_subscription("https://hooks.example.com/a", ["points.awarded"])
    everything, _ = make_subscription("https://hooks.example.com/b", ["*"])
    paused, _ = make_subscription("https://hooks.example.com/c", ["*"])
    paused.is_active = False
    paused.save(update_fields=["is_active"])
    awarded = record_event("points.awarded")
    tier = record_event("member.tier_changed")

    first = webhooks_dispatch(at=timezone.now())
    second = webhooks_dispatch(at=timezone.now())

    pairs = set(WebhookDelivery.objects.values_list("subscription_id", "event_id"))
    assert pairs == {
        (points_only.pk, awarded.pk),
        (everything.pk, awarded.pk),
        (everything.pk, tier.pk),
    }
    assert (first.events_dispatched, first.deliveries_offered) == (2, 3)
    assert (second.events_dispatched, second.deliveries_offered) == (0, 0)
    assert first.deliveries_enqueued == 3
    assert second.deliveries_enqueued == 0  # all three are leased (queued)
    positions = list(OutboxEvent.objects.order_by("id").values_list("position", flat=True))
    assert positions == [1, 2]


def test_dispatch_hands_out_positions_in_batches_and_continues(
    db, settings, record_event, make_subscription, fake_dns
):
    settings.LOYALTY_WEBHOOK_DISPATCH_BATCH_SIZE = 2
    settings.LOYALTY_WEBHOOK_DISPATCH_MAX_PER_RUN = 4
    for _ in range(5):
        record_event()

    first = webhooks_dispatch(at=timezone.now())
    second = webhooks_dispatch(at=timezone.now())

    assert first.events_dispatched == 4
    assert second.events_dispatched == 1
    positions = list(OutboxEvent.objects.order_by("id").values_list("position", flat=True))
    assert positions == [1, 2, 3, 4, 5]


def test_a_feed_position_is_unique_among_dispatched_events_only(db, record_event):
    """Undispatched events all have no position; two dispatched ones never share one (the
    partial unique index the feed reads)."""
    first, second, third = record_event(), record_event(), record_event()
    assert OutboxEvent.objects.filter(position__isnull=True).count() == 3
    OutboxEvent.objects.filter(pk=first.pk).update(position=1)

    with pytest.raises(IntegrityError), transaction.atomic():
        OutboxEvent.objects.filter(pk=second.pk).update(position=1)

    OutboxEvent.objects.filter(pk=second.pk).update(position=2)
    assert dict(OutboxEvent.objects.values_list("pk", "position")) == {
        first.pk: 1,
        second.pk: 2,
        third.pk: None,
    }


# --- Deliveries to a real receiver on loopback -------------------------------------------------


@pytest.fixture
def receiver(httpserver, allow_loopback_webhooks):
    """A receiver that answers from a list of statuses (the last repeats) and records requests."""
    seen: list[Request] = []
    statuses: list[int] = [200]

    def handler(request: Request) -> Response:
        seen.append(request)
        status = statuses[min(len(seen), len(statuses)) - 1]
        return Response("received" if status < 300 else "boom", status=status)

    httpserver.expect_request("/hook", method="POST").respond_with_handler(handler)
    return {
        "url": f"http://127.0.0.1:{httpserver.port}/hook",
        "seen": seen,
        "statuses": statuses,
    }


def test_a_real_receiver_gets_a_signed_delivery_that_the_reference_verifier_accepts(
    db, receiver, make_subscription, record_event, django_capture_on_commit_callbacks
):
    _, secret = make_subscription(receiver["url"], ["points.awarded"])
    event = record_event("points.awarded", {"member_id": "member-1", "points": 20})

    result = _dispatch(django_capture_on_commit_callbacks)

    assert result.deliveries_enqueued == 1
    [request] = receiver["seen"]
    assert _verified(request, secret) == {
        "id": str(event.pk),
        "type": "points.awarded",
        "timestamp": event.occurred_at.isoformat(),
        "data": {"member_id": "member-1", "points": 20},
    }
    assert request.headers["webhook-id"] == str(event.pk)
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("LoyaltyWebhooks/")
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts_count, delivery.last_status_code) == (
        DeliveryStatus.SUCCEEDED,
        1,
        200,
    )
    assert (delivery.next_attempt_at, delivery.lease_token, delivery.leased_until) == (
        None,
        None,
        None,
    )
    attempt = WebhookAttempt.objects.get()
    assert (attempt.succeeded, attempt.status_code, attempt.error) == (True, 200, "")
    assert attempt.response_excerpt == "received"


def test_a_receiver_failing_twice_then_succeeding_gets_one_delivery_and_three_attempts(
    db, receiver, make_subscription, record_event, django_capture_on_commit_callbacks
):
    receiver["statuses"][:] = [500, 500, 200]
    _, secret = make_subscription(receiver["url"])
    event = record_event()

    with time_machine.travel(T0, tick=True) as clock:
        _dispatch(django_capture_on_commit_callbacks)
        assert _verified(receiver["seen"][0], secret)["id"] == str(event.pk)
        early = _dispatch(django_capture_on_commit_callbacks)
        clock.shift(timedelta(seconds=6))  # first retry after 5 s +-10%
        _dispatch(django_capture_on_commit_callbacks)
        assert _verified(receiver["seen"][1], secret)["id"] == str(event.pk)
        clock.shift(timedelta(minutes=6))  # second retry after 5 min +-10%
        _dispatch(django_capture_on_commit_callbacks)
        assert _verified(receiver["seen"][2], secret)["id"] == str(event.pk)
        later = _dispatch(django_capture_on_commit_callbacks)

    assert early.deliveries_enqueued == 0
    assert later.deliveries_enqueued == 0
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts_count) == (DeliveryStatus.SUCCEEDED, 3)
    attempts = list(
        delivery.attempts.order_by("attempted_at").values_list("status_code", "succeeded")
    )
    assert attempts == [(500, False), (500, False), (200, True)]
    ids = [request.headers["webhook-id"] for request in receiver["seen"]]
    assert ids == [str(event.pk)] * 3
    timestamps = [int(request.headers["webhook-timestamp"]) for request in receiver["seen"]]
    assert timestamps == sorted(set(timestamps))


def test_a_delivery_gives_up_after_the_schedule_and_counts_one_failure(
    db, receiver, make_subscription, record_event, django_capture_on_commit_callbacks
):
    receiver["statuses"][:] = [503]
    subscription, _ = make_subscription(receiver["url"])
    record_event()

    with time_machine.travel(T0, tick=True) as clock:
        _dispatch(django_capture_on_commit_callbacks)
        for delay in RETRY_DELAYS:
            clock.shift(delay * 1.11)
            _dispatch(django_capture_on_commit_callbacks)
        clock.shift(timedelta(days=2))
        after = _dispatch(django_capture_on_commit_callbacks)

    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts_count, delivery.next_attempt_at) == (
        DeliveryStatus.FAILED,
        MAX_ATTEMPTS,
        None,
    )
    assert len(receiver["seen"]) == MAX_ATTEMPTS == 8
    assert after.deliveries_enqueued == 0
    attempt_times = list(delivery.attempts.order_by("id").values_list("attempted_at", flat=True))
    assert attempt_times[-1] - attempt_times[0] >= timedelta(hours=24)
    subscription.refresh_from_db()
    assert (subscription.is_active, subscription.consecutive_failures) == (True, 1)
    assert not OutboxEvent.objects.filter(event_type="webhook.disabled").exists()


@override_settings(LOYALTY_WEBHOOK_DISABLE_AFTER_FAILURES=2)
def test_repeated_failed_deliveries_disable_the_subscription_with_an_alert(
    db, receiver, make_subscription, record_event, django_capture_on_commit_callbacks, caplog
):
    receiver["statuses"][:] = [500]
    subscription, _ = make_subscription(receiver["url"], ["points.awarded"])
    record_event()
    record_event()

    with time_machine.travel(T0, tick=True) as clock, caplog.at_level(logging.ERROR):
        _dispatch(django_capture_on_commit_callbacks)
        for delay in RETRY_DELAYS:
            clock.shift(delay * 1.11)
            _dispatch(django_capture_on_commit_callbacks)
        record_event()
        clock.shift(timedelta(minutes=1))
        after = _dispatch(django_capture_on_commit_callbacks)

    subscription.refresh_from_db()
    assert subscription.is_active is False
    assert subscription.consecutive_failures == 2
    assert subscription.disabled_reason == "2 deliveries in a row failed after every retry."
    assert subscription.disabled_at is not None
    [alert] = OutboxEvent.objects.filter(event_type="webhook.disabled")
    assert alert.payload == {
        "subscription_id": str(subscription.pk),
        "partner_id": subscription.partner_id,
        "reason": "2 deliveries in a row failed after every retry.",
        "disabled_at": subscription.disabled_at.isoformat(),
    }
    assert f"Webhook subscription {subscription.pk}" in caplog.text
    # Disabled: the third event (and the alert itself) make no delivery for it.
    assert after.deliveries_offered == 0
    assert WebhookDelivery.objects.count() == 2
    assert len(receiver["seen"]) == 2 * MAX_ATTEMPTS


def test_a_success_resets_the_failure_count(
    db, receiver, make_subscription, record_event, django_capture_on_commit_callbacks
):
    subscription, _ = make_subscription(receiver["url"])
    subscription.consecutive_failures = 3
    subscription.save(update_fields=["consecutive_failures"])
    record_event()

    _dispatch(django_capture_on_commit_callbacks)

    subscription.refresh_from_db()
    assert subscription.consecutive_failures == 0


def test_410_gone_disables_the_subscription_at_once(
    db, receiver, make_subscription, record_event, django_capture_on_commit_callbacks
):
    receiver["statuses"][:] = [410]
    subscription, _ = make_subscription(receiver["url"])
    record_event()

    _dispatch(django_capture_on_commit_callbacks)

    subscription.refresh_from_db()
    delivery = WebhookDelivery.objects.get(subscription=subscription)
    assert (delivery.status, delivery.attempts_count) == (DeliveryStatus.FAILED, 1)
    assert (subscription.is_active, subscription.disabled_reason) == (
        False,
        "The receiver answered 410 Gone.",
    )
    assert OutboxEvent.objects.filter(event_type="webhook.disabled").count() == 1


def test_redirects_are_not_followed(
    db, httpserver, allow_loopback_webhooks, make_subscription, record_event, deliver
):
    httpserver.expect_request("/hook").respond_with_data(
        "", status=302, headers={"Location": f"http://127.0.0.1:{httpserver.port}/internal"}
    )
    make_subscription(f"http://127.0.0.1:{httpserver.port}/hook")
    record_event()
    webhooks_dispatch(at=timezone.now())

    status = deliver(WebhookDelivery.objects.get())

    assert status == "retrying"
    attempt = WebhookAttempt.objects.get()
    assert (attempt.status_code, attempt.succeeded, attempt.error) == (
        302,
        False,
        "Redirects are not followed.",
    )
    assert [request.path for request, _ in httpserver.log] == ["/hook"]


def test_a_timeout_is_a_failed_attempt(db, receiver, make_subscription, record_event, deliver):
    make_subscription(receiver["url"])
    record_event()
    webhooks_dispatch(at=timezone.now())

    with mock.patch("core.webhooks.requests.Session.post", side_effect=requests.ReadTimeout()):
        status = deliver(WebhookDelivery.objects.get())

    attempt = WebhookAttempt.objects.get()
    assert status == "retrying"
    assert (attempt.status_code, attempt.error) == (None, "Timed out.")
    assert WebhookDelivery.objects.get().attempts_count == 1


def test_a_duplicate_or_concurrent_task_does_nothing(
    db, receiver, make_subscription, record_event, deliver
):
    make_subscription(receiver["url"])
    record_event()
    webhooks_dispatch(at=timezone.now())
    delivery = WebhookDelivery.objects.get()

    # A message for the same delivery while the dispatcher's one is queued: the lease is not its.
    stranger = webhook_deliver(delivery_id=delivery.pk, lease_token=None, clock=timezone.now)
    first = deliver(delivery)
    duplicate = deliver(delivery)

    assert (stranger.status, first, duplicate) == ("skipped", "succeeded", "skipped")
    assert len(receiver["seen"]) == 1
    assert WebhookAttempt.objects.count() == 1


def test_retries_within_the_cap_are_enqueued_with_a_countdown_and_their_lease(
    db,
    settings,
    receiver,
    make_subscription,
    record_event,
    deliver,
    django_capture_on_commit_callbacks,
):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    receiver["statuses"][:] = [500]
    make_subscription(receiver["url"])
    record_event()
    webhooks_dispatch(at=timezone.now())
    delivery = WebhookDelivery.objects.get()

    with (
        mock.patch("core.tasks.webhook_deliver_task.apply_async") as apply_async,
        django_capture_on_commit_callbacks(execute=True),
    ):
        status = deliver(delivery)

    delivery.refresh_from_db()
    assert status == "retrying"
    [call] = apply_async.call_args_list
    assert call.kwargs["kwargs"] == {
        "delivery_id": delivery.pk,
        "lease_token": str(delivery.lease_token),
    }
    assert 4.5 <= call.kwargs["countdown"] <= 5.5
    assert delivery.leased_until == delivery.next_attempt_at + timedelta(
        seconds=settings.LOYALTY_WEBHOOK_QUEUE_LEASE_SECONDS
    )


def test_retries_beyond_the_cap_are_left_to_the_dispatcher(
    db,
    settings,
    receiver,
    make_subscription,
    record_event,
    deliver,
    django_capture_on_commit_callbacks,
):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.LOYALTY_WEBHOOK_MAX_COUNTDOWN_SECONDS = 1
    receiver["statuses"][:] = [500]
    make_subscription(receiver["url"])
    record_event()
    webhooks_dispatch(at=timezone.now())
    delivery = WebhookDelivery.objects.get()

    with (
        mock.patch("core.tasks.webhook_deliver_task.apply_async") as apply_async,
        django_capture_on_commit_callbacks(execute=True),
    ):
        deliver(delivery)

    delivery.refresh_from_db()
    assert apply_async.call_count == 0
    assert (delivery.lease_token, delivery.leased_until) == (None, None)


def test_a_lost_task_is_enqueued_again_once_its_lease_runs_out(
    db, settings, receiver, make_subscription, record_event, django_capture_on_commit_callbacks
):
    make_subscription(receiver["url"])
    record_event()
    with time_machine.travel(T0, tick=True) as clock:
        webhooks_dispatch(at=timezone.now())  # enqueued, but the message is never run
        clock.shift(timedelta(seconds=settings.LOYALTY_WEBHOOK_QUEUE_LEASE_SECONDS - 5))
        too_soon = _dispatch(django_capture_on_commit_callbacks)
        clock.shift(timedelta(seconds=10))
        recovered = _dispatch(django_capture_on_commit_callbacks)

    assert (too_soon.deliveries_enqueued, recovered.deliveries_enqueued) == (0, 1)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts_count) == (DeliveryStatus.SUCCEEDED, 1)
    assert len(receiver["seen"]) == 1


# --- DNS rebinding and address pinning ---------------------------------------------------------


def test_a_host_that_later_resolves_to_a_private_address_fails_without_connecting(
    db, settings, httpserver, fake_dns, make_subscription, record_event, deliver
):
    settings.LOYALTY_WEBHOOK_ALLOW_HTTP = True
    fake_dns["rebind.example.com"] = [PUBLIC_ADDRESS]
    make_subscription(f"http://rebind.example.com:{httpserver.port}/hook")
    record_event()
    webhooks_dispatch(at=timezone.now())
    fake_dns["rebind.example.com"] = ["127.0.0.1"]

    status = deliver(WebhookDelivery.objects.get())

    attempt = WebhookAttempt.objects.get()
    assert status == "retrying"
    assert attempt.status_code is None
    assert attempt.error.startswith("Target refused: The host resolves to a loopback, private")
    assert httpserver.log == []


def test_the_request_goes_to_the_validated_address_with_the_original_host_header(
    db, httpserver, allow_loopback_webhooks, fake_dns, make_subscription, record_event, deliver
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    fake_dns["pinned.example.test"] = ["127.0.0.1"]
    make_subscription(f"http://pinned.example.test:{httpserver.port}/hook?k=v")
    record_event()
    webhooks_dispatch(at=timezone.now())

    status = deliver(WebhookDelivery.objects.get())

    [(request, _)] = httpserver.log
    assert status == "succeeded"
    assert request.headers["Host"] == f"pinned.example.test:{httpserver.port}"
    assert request.args["k"] == "v"


def test_https_pins_the_address_but_checks_the_certificate_against_the_host_name():
    named = _PinnedAddressAdapter("hooks.example.com")
    literal = _PinnedAddressAdapter("93.184.215.14")

    assert named.poolmanager.connection_pool_kw["server_hostname"] == "hooks.example.com"
    assert named.poolmanager.connection_pool_kw["assert_hostname"] == "hooks.example.com"
    assert "server_hostname" not in literal.poolmanager.connection_pool_kw


# --- Deleting a subscription while a call is in flight -----------------------------------------


@pytest.mark.django_db(transaction=True)
def test_deleting_the_subscription_during_the_call_records_nothing(
    allow_loopback_webhooks, make_subscription, record_event
):
    subscription, _ = make_subscription("http://127.0.0.1:9/hook")
    record_event()
    with mock.patch("core.tasks.webhook_deliver_task.apply_async"):  # queued, not run inline
        webhooks_dispatch(at=timezone.now())
    delivery = WebhookDelivery.objects.get()

    def call_while_deleted(**kwargs):
        webhook_subscription_delete(subscription=subscription)
        return _HttpResult(200, "", 3)

    with mock.patch("core.webhooks._attempt", side_effect=call_while_deleted):
        outcome = webhook_deliver(
            delivery_id=delivery.pk, lease_token=delivery.lease_token, clock=timezone.now
        )

    assert outcome.status == "skipped"
    assert WebhookAttempt.objects.count() == 0
    assert WebhookDelivery.objects.count() == 0


def test_the_body_is_compact_sorted_json(db, record_event):
    event = record_event("points.awarded", {"b": 1, "a": 2})

    body = webhook_body(event)

    assert body == json.dumps(
        {
            "data": {"a": 2, "b": 1},
            "id": str(event.pk),
            "timestamp": event.occurred_at.isoformat(),
            "type": "points.awarded",
        },
        separators=(",", ":"),
    )


def test_a_disabling_is_announced_only_to_the_owning_partner(
    db, receiver, make_subscription, make_partner, record_event, django_capture_on_commit_callbacks
):
    receiver["statuses"][:] = [410]
    other_partner = make_partner("Other Shop")[0]
    failing, _ = make_subscription(receiver["url"], ["points.awarded"])
    sibling, _ = make_subscription("http://127.0.0.1:9/sibling", ["webhook.disabled"])
    stranger, _ = make_subscription("http://127.0.0.1:9/other", ["*"], partner=other_partner)
    record_event("points.awarded")
    with mock.patch("core.tasks.webhook_deliver_task.apply_async"):
        webhooks_dispatch(at=timezone.now())  # the stranger's and the failing one's deliveries
    failing_delivery = WebhookDelivery.objects.get(subscription=failing)
    webhook_deliver(
        delivery_id=failing_delivery.pk,
        lease_token=failing_delivery.lease_token,
        clock=timezone.now,
    )
    with mock.patch("core.tasks.webhook_deliver_task.apply_async"):
        webhooks_dispatch(at=timezone.now())

    alert = OutboxEvent.objects.get(event_type="webhook.disabled")
    receivers = set(
        WebhookDelivery.objects.filter(event=alert).values_list("subscription_id", flat=True)
    )
    assert receivers == {sibling.pk}
    assert WebhookDelivery.objects.filter(subscription=stranger).count() == 1  # points only


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_dispatchers_create_and_enqueue_each_delivery_once(
    make_subscription, fake_dns, record_event
):
    first, _ = make_subscription("https://hooks.example.com/a")
    second, _ = make_subscription("https://hooks.example.com/b")
    for _ in range(40):
        record_event()
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def dispatch() -> None:
        try:
            barrier.wait(timeout=10)
            webhooks_dispatch(at=timezone.now())
        except BaseException as error:  # reported by the assertion below
            errors.append(error)
        finally:
            connection.close()

    with mock.patch("core.tasks.webhook_deliver_task.apply_async") as apply_async:
        threads = [threading.Thread(target=dispatch) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        webhooks_dispatch(at=timezone.now())  # whatever a skipped dispatcher left

    assert errors == []
    assert WebhookDelivery.objects.count() == 80
    enqueued = [call.kwargs["kwargs"]["delivery_id"] for call in apply_async.call_args_list]
    assert sorted(enqueued) == sorted(WebhookDelivery.objects.values_list("pk", flat=True))
    positions = list(OutboxEvent.objects.order_by("position").values_list("position", flat=True))
    assert positions == list(range(1, 41))
    assert {first.pk, second.pk} == set(
        WebhookDelivery.objects.values_list("subscription_id", flat=True)
    )
