"""A real Celery worker killed mid-delivery: the delivery still happens, once, at least once.

Workers run as subprocesses against the test's PostgreSQL database and a Redis broker, with
their queues under a key prefix unique to the run. Every wait is bounded and every worker
process group is killed in a ``finally``.
"""

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from celery import Celery
from django.db import connection
from django.utils import timezone
from pytest_httpserver import HTTPServer
from standardwebhooks.webhooks import Webhook
from werkzeug import Request, Response

from core.models import DeliveryStatus, WebhookAttempt, WebhookDelivery

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True),
]

BROKER_URL = "redis://127.0.0.1:6379/15"
ATTEMPT_LEASE_SECONDS = 3
WAIT_SECONDS = 20
BASE_DIR = Path(__file__).resolve().parents[2]


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll another process's progress (in the database) with a hard deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout} s waiting for {what}.")
        time.sleep(0.1)


def _database_url() -> str:
    config = connection.settings_dict
    credentials = quote(config["USER"] or "")
    if config["PASSWORD"]:
        credentials += ":" + quote(config["PASSWORD"])
    return (
        f"postgres://{credentials}@{config['HOST'] or '127.0.0.1'}:{config['PORT'] or 5432}"
        f"/{config['NAME']}"
    )


class Worker:
    """``celery -A loyalty worker`` in its own process group; ``ready`` is set from its log."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.process = subprocess.Popen(  # noqa: S603 - a fixed command line
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "loyalty",
                "worker",
                "-P",
                "prefork",
                "-c",
                "1",
                "-Q",
                "default,webhooks",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"{name}@%h",
                "--loglevel=INFO",
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if " ready." in line:
                self.ready.set()

    def wait_ready(self) -> None:
        assert self.ready.wait(WAIT_SECONDS), "worker did not start:\n" + self.log()

    def kill(self) -> None:
        """SIGKILL the whole group (main process and pool child), as a crash would."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=WAIT_SECONDS)

    def log(self) -> str:
        return "".join(self.lines[-60:])


@pytest.fixture
def broker_prefix() -> Iterator[str]:
    client = redis.Redis.from_url(BROKER_URL)
    try:
        client.ping()
    except redis.RedisError:
        # Every machine of the project runs Redis (CI starts it): its absence is a failure.
        pytest.fail("Redis at 127.0.0.1:6379 is not reachable; start it (see .ci/run)")
    prefix = f"loyalty-test-{uuid.uuid4().hex}:"
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def worker_env(broker_prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "loyalty.settings.test",
        "DATABASE_URL": _database_url(),
        "DB_CONN_MAX_AGE": "0",
        "CELERY_BROKER_URL": BROKER_URL,
        "LOYALTY_TEST_REAL_BROKER": "1",
        "LOYALTY_TEST_BROKER_PREFIX": broker_prefix,
        "LOYALTY_WEBHOOK_ALLOW_HTTP": "true",
        "LOYALTY_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
        "LOYALTY_WEBHOOK_ATTEMPT_LEASE_SECONDS": str(ATTEMPT_LEASE_SECONDS),
    }


@pytest.fixture
def producer(broker_prefix: str) -> Iterator[Celery]:
    """Sends task messages into the workers' broker (the test process itself runs eagerly)."""
    app = Celery("webhook-worker-test", broker=BROKER_URL, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": broker_prefix}
    yield app
    app.close()


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
        _wait_until(
            lambda: timezone.now() > WebhookDelivery.objects.get().leased_until,
            ATTEMPT_LEASE_SECONDS + 2,
            "the killed attempt's lease to run out",
        )
        producer.send_task("core.webhooks_dispatch", queue="default")
        assert receiver["second_arrived"].wait(WAIT_SECONDS), second.log()
        _wait_until(
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
