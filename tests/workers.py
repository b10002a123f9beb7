"""Real Celery workers for tests: ``celery -A loyalty worker`` subprocesses on a Redis broker.

Workers run against the test's PostgreSQL database, with their queues under a key prefix unique
to the run (Redis db 15), so parallel runs and other machines' queues never mix. Every wait is
bounded, and callers kill every worker's process group in a ``finally``.
"""

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from celery import Celery
from django.db import connection

BROKER_URL = "redis://127.0.0.1:6379/15"
WAIT_SECONDS = 20
BASE_DIR = Path(__file__).resolve().parents[1]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.1) -> None:
    """Poll another process's progress (in the database) with a hard deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout} s waiting for {what}.")
        time.sleep(poll)


def database_url() -> str:
    """The test database (not the configured one): what the workers must connect to."""
    config = connection.settings_dict
    credentials = quote(config["USER"] or "")
    if config["PASSWORD"]:
        credentials += ":" + quote(config["PASSWORD"])
    return (
        f"postgres://{credentials}@{config['HOST'] or '127.0.0.1'}:{config['PORT'] or 5432}"
        f"/{config['NAME']}"
    )


def _backends(condition: str) -> int:
    """Other sessions on the test database matching ``condition``, read afresh: inside a
    transaction PostgreSQL would keep answering from its first snapshot of the activity view."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "  # noqa: S608 - fixed conditions below
            f"WHERE datname = current_database() AND pid <> pg_backend_pid() AND {condition}"
        )
        (count,) = cursor.fetchone()
    return int(count)


def lock_waiters() -> int:
    """Sessions on the test database waiting for a lock (a worker or thread blocked on a row)."""
    return _backends("wait_event_type = 'Lock'")


def other_sessions() -> int:
    """Client sessions on the test database other than this one (a killed worker's linger until
    PostgreSQL notices, then roll back)."""
    return _backends("backend_type = 'client backend'")


@contextmanager
def broker_prefix_reserved() -> Iterator[str]:
    """A fresh key prefix on the test broker; its keys are deleted afterwards."""
    client = redis.Redis.from_url(BROKER_URL)
    try:
        client.ping()
    except redis.RedisError:
        # Every machine of the project runs Redis (CI starts it): its absence is a failure.
        pytest.fail("Redis at 127.0.0.1:6379 is not reachable; start it (see .ci/run)")
    prefix = f"loyalty-test-{uuid.uuid4().hex}:"
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def worker_environment(prefix: str, **settings: str) -> dict[str, str]:
    """The environment of a worker on the test database and the run's broker prefix; keyword
    arguments add settings (``LOYALTY_...`` variables)."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "loyalty.settings.test",
        "DATABASE_URL": database_url(),
        "DB_CONN_MAX_AGE": "0",
        "CELERY_BROKER_URL": BROKER_URL,
        "LOYALTY_TEST_REAL_BROKER": "1",
        "LOYALTY_TEST_BROKER_PREFIX": prefix,
        **settings,
    }


@contextmanager
def producer_app(prefix: str) -> Iterator[Celery]:
    """Sends task messages into the workers' broker (the test process itself runs eagerly)."""
    app = Celery("worker-test-producer", broker=BROKER_URL, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": prefix}
    try:
        yield app
    finally:
        app.close()


class Worker:
    """``celery -A loyalty worker`` in its own process group; ``ready`` is set from its log."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        queues: Sequence[str] = ("default", "webhooks"),
        concurrency: int = 1,
    ) -> None:
        self.name = name
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
                str(concurrency),
                "-Q",
                ",".join(queues),
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
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if " ready." in line:
                self.ready.set()

    def wait_ready(self) -> None:
        assert self.ready.wait(WAIT_SECONDS), f"worker {self.name} did not start:\n" + self.log()

    def kill(self) -> None:
        """SIGKILL the whole group (main process and pool children), as a crash would."""
        # The group outlives its leader when only the main process died: kill it regardless.
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=WAIT_SECONDS)
        self._reader.join(timeout=WAIT_SECONDS)

    def log(self, last: int = 60) -> str:
        return "".join(self.lines[-last:])


@contextmanager
def workers_killed_after() -> Iterator[list[Worker]]:
    """Collects the workers a test starts and kills every one of them on the way out."""
    workers: list[Worker] = []
    try:
        yield workers
    finally:
        for worker in workers:
            worker.kill()
