"""Redis (the broker) down (issue 9, fault injection).

The API runs under gunicorn with a private ``redis-server`` as its Celery broker (never the
machine's shared Redis) and the test's PostgreSQL database. With Redis killed, reads and writes
that need no broker go on (awards write their events to the outbox in the request's transaction;
nothing is published inside a request), each answer bounded in time, and ``/health/`` says the
broker is down. The events wait in the outbox. When Redis is back, a worker runs the outbox
dispatcher and every event reaches every subscribed receiver exactly once.
"""

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from celery import Celery
from django.conf import settings as django_settings
from django.utils import timezone
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from core.api.tokens import operator_token_pair
from core.models import DeliveryStatus, OutboxEvent, WebhookAttempt, WebhookDelivery
from core.webhooks import webhook_subscription_create, webhook_target_resolve
from members.models import Member
from rewards.models import PointsEntry
from tests.integration.processes import (
    PrivateRedis,
    api_server,
    bearer,
    private_redis,
    server_environment,
)
from tests.workers import WAIT_SECONDS, Worker, database_url, wait_until, worker_environment

pytestmark = [pytest.mark.postgres, pytest.mark.faults, pytest.mark.django_db(transaction=True)]

AWARDS = 3
# A request that needs no broker must not wait on it: well under the broker's retry schedule.
ANSWER_SECONDS = 5.0
WEBHOOK_SETTINGS = {
    "LOYALTY_WEBHOOK_ALLOW_HTTP": "true",
    "LOYALTY_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
}


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[Request]]]:
    """A webhook receiver on loopback answering 200 to everything; the requests it saw."""
    seen: list[Request] = []
    lock = threading.Lock()

    def handler(request: Request) -> Response:
        with lock:
            seen.append(request)
        return Response("ok")

    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.expect_request("/hook-a", method="POST").respond_with_handler(handler)
    server.expect_request("/hook-b", method="POST").respond_with_handler(handler)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}", seen
    finally:
        server.clear()
        server.stop()


@pytest.fixture
def broker() -> Iterator[PrivateRedis]:
    with private_redis() as server:
        yield server


def _timed(call: Any, *args: Any, **kwargs: Any) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = call(*args, timeout=ANSWER_SECONDS * 3, **kwargs)
    return response, time.monotonic() - started


def _points(number: int) -> int:
    # The first award is big enough to reassess the member after commit, which needs the broker.
    return django_settings.LOYALTY_TIER_REASSESS_AWARD_THRESHOLD if number == 0 else 10 + number


def test_without_redis_the_api_serves_and_events_wait_in_the_outbox_until_it_returns(
    broker: PrivateRedis,
    receiver: tuple[str, list[Request]],
    make_member: Any,
    make_partner: Any,
    superuser: Any,
    settings: Any,
) -> None:
    settings.LOYALTY_WEBHOOK_ALLOW_HTTP = settings.LOYALTY_WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    receiver_url, seen = receiver
    partner, _ = make_partner("Hooks", scopes=["webhooks:manage"])
    for path in ("hook-a", "hook-b"):
        webhook_subscription_create(
            partner=partner,
            target=webhook_target_resolve(f"{receiver_url}/{path}"),
            event_types=["points.awarded"],
            at=timezone.now(),
        )
    member = make_member("redis-down-member")
    token = operator_token_pair(superuser)["access"]
    env = server_environment(
        database_url=database_url(),
        CELERY_BROKER_URL=broker.url,
        REDIS_URL=broker.url,  # the cache (rate limits) goes down with it
        SECRET_KEY=settings.SECRET_KEY,  # the tokens minted here must verify there
        **WEBHOOK_SETTINGS,
    )
    with api_server(env) as server:
        points_url = f"{server.url}/api/v1/members/{member.pk}/points/"
        assert requests.get(f"{server.url}/health/", timeout=10).json()["checks"]["broker"] == "ok"

        broker.kill()
        answers = [_timed(requests.get, points_url, headers=bearer(token))]
        answers += [
            _timed(
                requests.post,
                f"{points_url}awards/",
                json={"points": _points(number), "reason": "manual"},
                headers=bearer(token, **{"Idempotency-Key": f"redis-down-{number}"}),
            )
            for number in range(AWARDS)
        ]
        answers.append(
            _timed(
                requests.post,
                f"{server.url}/api/v1/members/",
                json={"external_id": "joined-while-down", "display_name": "New"},
                headers=bearer(token),
            )
        )
        health, _ = _timed(requests.get, f"{server.url}/health/")
        read_after, _ = _timed(requests.get, points_url, headers=bearer(token))

        # Broker-free reads and writes answered, promptly.
        assert [response.status_code for response, _ in answers] == [200] + [201] * AWARDS + [201]
        assert max(seconds for _, seconds in answers) < ANSWER_SECONDS
        assert read_after.json()["available"] == sum(_points(number) for number in range(AWARDS))
        assert (health.status_code, health.json()["checks"]) == (
            503,
            {"database": "ok", "broker": "down"},
        )
        # The events wait in the outbox: recorded, not dispatched, nothing delivered.
        events = OutboxEvent.objects.filter(event_type="points.awarded")
        assert events.count() == AWARDS
        assert not events.exclude(position=None).exists()
        assert not WebhookDelivery.objects.exists()
        assert Member.objects.filter(external_id="joined-while-down").exists()

        broker.start()
        prefix = f"loyalty-faults-{uuid.uuid4().hex}:"
        worker = Worker(
            f"relay-{uuid.uuid4().hex[:8]}",
            worker_environment(prefix, CELERY_BROKER_URL=broker.url, **WEBHOOK_SETTINGS),
        )
        try:
            worker.wait_ready()
            producer = Celery("faults-producer", broker=broker.url, set_as_current=False)
            producer.conf.broker_transport_options = {"global_keyprefix": prefix}
            try:
                producer.send_task("core.webhooks_dispatch", queue="default")
            finally:
                producer.close()
            wait_until(
                lambda: (
                    WebhookDelivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count()
                    == 2 * AWARDS
                ),
                WAIT_SECONDS,
                "every event delivered to both receivers",
            )
        finally:
            worker.kill()
        health_after = requests.get(f"{server.url}/health/", timeout=10)

    assert health_after.status_code == 200
    event_ids = {str(pk) for pk in events.values_list("pk", flat=True)}
    # Exactly once per subscription: each receiver saw each event once, and only those.
    assert Counter((request.path, request.headers["webhook-id"]) for request in seen) == Counter(
        {(path, event_id): 1 for path in ("/hook-a", "/hook-b") for event_id in event_ids}
    )
    assert WebhookAttempt.objects.filter(succeeded=True).count() == 2 * AWARDS
    assert not WebhookAttempt.objects.filter(succeeded=False).exists()
    assert PointsEntry.objects.filter(member=member, kind="earn").count() == AWARDS
