"""A webhook worker SIGKILLed in the middle of a run of deliveries (issue 9, fault injection).

``tests/core/test_webhooks_worker.py`` kills a worker during the one delivery of one event. Here a
worker is delivering several events to two subscriptions, one after another, and is killed while
the receiver holds the third request open. A second worker takes over. No event may be lost: every
(subscription, event) delivery ends succeeded; the receiver sees each event once per
subscription, except the one in flight at the kill, which at-least-once delivery sends again
(same ``webhook-id``, signed afresh); the delivery log records exactly one successful attempt per
delivery and nothing for the attempt that died with the worker.
"""

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from django.db import transaction
from django.utils import timezone
from pytest_httpserver import HTTPServer
from standardwebhooks.webhooks import Webhook
from werkzeug import Request, Response

from core.events import domain_event_record
from core.models import DeliveryStatus, OutboxEvent, WebhookAttempt, WebhookDelivery
from core.webhooks import webhook_subscription_create, webhook_target_resolve
from tests.workers import (
    WAIT_SECONDS,
    Worker,
    broker_prefix_reserved,
    producer_app,
    wait_until,
    worker_environment,
    workers_killed_after,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.faults,
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True),
]

EVENTS = 5
PATHS = ("/hook-a", "/hook-b")
HELD_REQUEST = 3  # the receiver holds the third request open: the kill lands mid-delivery
ATTEMPT_LEASE_SECONDS = 3


@pytest.fixture
def broker_prefix() -> Iterator[str]:
    with broker_prefix_reserved() as prefix:
        yield prefix


@pytest.fixture
def producer(broker_prefix: str) -> Iterator[Celery]:
    with producer_app(broker_prefix) as app:
        yield app


@pytest.fixture
def receiver() -> Iterator[dict[str, Any]]:
    """Answers 200 at once, except the HELD_REQUEST-th request, held until released."""
    state: dict[str, Any] = {
        "requests": [],
        "held": threading.Event(),
        "release": threading.Event(),
    }
    lock = threading.Lock()

    def handler(request: Request) -> Response:
        with lock:
            state["requests"].append(request)
            number = len(state["requests"])
        if number == HELD_REQUEST:
            state["held"].set()
            state["release"].wait(WAIT_SECONDS)
        return Response("ok")

    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    for path in PATHS:
        server.expect_request(path, method="POST").respond_with_handler(handler)
    server.start()
    state["url"] = f"http://127.0.0.1:{server.port}"
    try:
        yield state
    finally:
        state["release"].set()
        server.clear()
        server.stop()


def test_a_worker_killed_mid_run_loses_no_event_and_logs_each_delivery_once(
    receiver: dict[str, Any], broker_prefix: str, producer: Celery, settings: Any, make_partner: Any
) -> None:
    settings.LOYALTY_WEBHOOK_ALLOW_HTTP = settings.LOYALTY_WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    partner, _ = make_partner("Hooks", scopes=["webhooks:manage"])
    secrets = {
        path: webhook_subscription_create(
            partner=partner,
            target=webhook_target_resolve(receiver["url"] + path),
            event_types=["points.awarded"],
            at=timezone.now(),
        )[1]
        for path in PATHS
    }
    with transaction.atomic():
        for number in range(EVENTS):
            domain_event_record(
                event_type="points.awarded",
                aggregate_id=f"member-{number}",
                payload={"member_id": f"member-{number}", "points": number + 1},
                at=timezone.now(),
            )
    env = worker_environment(
        broker_prefix,
        LOYALTY_WEBHOOK_ALLOW_HTTP="true",
        LOYALTY_WEBHOOK_ALLOW_PRIVATE_TARGETS="true",
        LOYALTY_WEBHOOK_ATTEMPT_LEASE_SECONDS=str(ATTEMPT_LEASE_SECONDS),
    )
    run = uuid.uuid4().hex[:8]

    with workers_killed_after() as workers:
        first = Worker(f"first-{run}", env)
        workers.append(first)
        first.wait_ready()
        producer.send_task("core.webhooks_dispatch", queue="default")
        assert receiver["held"].wait(WAIT_SECONDS), first.log()

        first.kill()  # mid-request: the receiver still holds the third POST open
        receiver["release"].set()
        killed = receiver["requests"][HELD_REQUEST - 1]
        killed_key = (killed.path, killed.headers["webhook-id"])
        assert WebhookDelivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 2

        second = Worker(f"second-{run}", env)
        workers.append(second)
        second.wait_ready()
        wait_until(
            lambda: (
                not WebhookDelivery.objects.filter(
                    status=DeliveryStatus.PENDING, leased_until__gt=timezone.now()
                ).exists()
            ),
            ATTEMPT_LEASE_SECONDS + 5,
            "the killed attempt's lease to run out",
        )
        producer.send_task("core.webhooks_dispatch", queue="default")
        wait_until(
            lambda: (
                WebhookDelivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count()
                == EVENTS * len(PATHS)
            ),
            WAIT_SECONDS,
            "every delivery to succeed",
        )

    event_ids = {str(pk) for pk in OutboxEvent.objects.values_list("pk", flat=True)}
    # No event lost; the one in flight at the kill was sent again, nothing else was.
    expected = Counter({(path, event_id): 1 for path in PATHS for event_id in event_ids})
    expected[killed_key] += 1
    seen = Counter(
        (request.path, request.headers["webhook-id"]) for request in receiver["requests"]
    )
    assert seen == expected
    # Both copies of the repeated message are signed for the subscription it went to.
    for request in receiver["requests"]:
        if (request.path, request.headers["webhook-id"]) == killed_key:
            Webhook(secrets[request.path]).verify(request.get_data(), dict(request.headers))
    # The log: one delivery per (subscription, event), each with exactly one attempt, which
    # succeeded; the attempt that died with the worker left no row.
    deliveries = WebhookDelivery.objects.all()
    assert deliveries.count() == EVENTS * len(PATHS)
    assert set(deliveries.values_list("status", "attempts_count", "last_status_code")) == {
        (DeliveryStatus.SUCCEEDED, 1, 200)
    }
    attempts = Counter(WebhookAttempt.objects.values_list("delivery_id", "succeeded"))
    assert attempts == Counter({(pk, True): 1 for pk in deliveries.values_list("pk", flat=True)})
