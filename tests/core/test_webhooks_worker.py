"""A real Celery worker killed mid-delivery: the delivery still happens, once, at least once.

Workers run as subprocesses against the test's PostgreSQL database and a Redis broker, with
their queues under a key prefix unique to the run. Every wait is bounded and every worker
process group is killed in a ``finally``.
"""

import threading
import uuid
from collections.abc import Iterator

import pytest
from celery import Celery
from django.utils import timezone
from pytest_httpserver import HTTPServer
from standardwebhooks.webhooks import Webhook
from werkzeug import Request, Response

from core.models import DeliveryStatus, WebhookAttempt, WebhookDelivery
from tests.workers import (
    WAIT_SECONDS,
    Worker,
    broker_prefix_reserved,
    producer_app,
    wait_until,
    worker_environment,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True),
]

ATTEMPT_LEASE_SECONDS = 3


@pytest.fixture
def broker_prefix() -> Iterator[str]:
    with broker_prefix_reserved() as prefix:
        yield prefix


@pytest.fixture
def worker_env(broker_prefix: str) -> dict[str, str]:
    return worker_environment(
        broker_prefix,
        LOYALTY_WEBHOOK_ALLOW_HTTP="true",
        LOYALTY_WEBHOOK_ALLOW_PRIVATE_TARGETS="true",
        LOYALTY_WEBHOOK_ATTEMPT_LEASE_SECONDS=str(ATTEMPT_LEASE_SECONDS),
    )


@pytest.fixture
def producer(broker_prefix: str) -> Iterator[Celery]:
    with producer_app(broker_prefix) as app:
        yield app


@pytest.fixture
def slow_first_receiver() -> Iterator[dict]:
    """Holds the first request open until released; answers 200 to every request."""
    state: dict = {
        "requests": [],
        "first_arrived": threading.Event(),
        "release": threading.Event(),
        "second_arrived": threading.Event(),
    }

    def handler(request: Request) -> Response:
        state["requests"].append(request)
        if len(state["requests"]) == 1:
            state["first_arrived"].set()
            state["release"].wait(WAIT_SECONDS)
        else:
            state["second_arrived"].set()
        return Response("ok")

    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.expect_request("/hook", method="POST").respond_with_handler(handler)
    server.start()
    state["url"] = f"http://127.0.0.1:{server.port}/hook"
    try:
        yield state
    finally:
        state["release"].set()
        server.clear()
        server.stop()


def test_a_worker_killed_mid_delivery_still_delivers_exactly_one_success(
    allow_loopback_webhooks,
    make_subscription,
    record_event,
    slow_first_receiver,
    worker_env,
    producer,
):
    receiver = slow_first_receiver
    _, secret = make_subscription(receiver["url"])
    event = record_event("points.awarded", {"member_id": "member-1", "points": 7})
    run = uuid.uuid4().hex[:8]
    workers: list[Worker] = []
    try:
        first = Worker(f"first-{run}", worker_env)
        workers.append(first)
        first.wait_ready()
        producer.send_task("core.webhooks_dispatch", queue="default")
        assert receiver["first_arrived"].wait(WAIT_SECONDS), first.log()

        first.kill()  # mid-request: the receiver is still holding the POST open
        receiver["release"].set()
        delivery = WebhookDelivery.objects.get()
        assert (delivery.status, delivery.attempts_count) == (DeliveryStatus.PENDING, 0)
        assert WebhookAttempt.objects.count() == 0

        second = Worker(f"second-{run}", worker_env)
        workers.append(second)
        second.wait_ready()
        wait_until(
            lambda: timezone.now() > WebhookDelivery.objects.get().leased_until,
            ATTEMPT_LEASE_SECONDS + 2,
            "the killed attempt's lease to run out",
        )
        producer.send_task("core.webhooks_dispatch", queue="default")
        assert receiver["second_arrived"].wait(WAIT_SECONDS), second.log()
        wait_until(
            lambda: WebhookDelivery.objects.get().status == DeliveryStatus.SUCCEEDED,
            WAIT_SECONDS,
            "the delivery to be recorded as succeeded",
        )
    finally:
        for worker in workers:
            worker.kill()

    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts_count, delivery.last_status_code) == (
        DeliveryStatus.SUCCEEDED,
        1,
        200,
    )
    assert list(WebhookAttempt.objects.values_list("status_code", "succeeded")) == [(200, True)]
    # At least once: the receiver saw the message twice, with the same id, both signed.
    killed, delivered = receiver["requests"]
    assert killed.headers["webhook-id"] == delivered.headers["webhook-id"] == str(event.pk)
    for request in (killed, delivered):
        assert Webhook(secret).verify(request.get_data(), dict(request.headers))["data"] == {
            "member_id": "member-1",
            "points": 7,
        }
    assert int(delivered.headers["webhook-timestamp"]) > int(killed.headers["webhook-timestamp"])
