"""PostgreSQL restarted under a load of award requests (issue 9, fault injection).

The API runs under gunicorn against a private PostgreSQL cluster (never the machine's shared
one). Threads send awards, each with its own Idempotency-Key and the key in the note, while the
cluster is stopped (``pg_ctl stop -m fast``: open transactions are cut off) and started again.

The bar: every answer is a 201 or a 503 problem+json with Retry-After, never a 500 or a hang;
requests succeed again after the restart; the ledger then holds exactly one entry per 201 and
none for a 503 (no half-written request), the ledger audit is clean, and a client retrying each
503 with the same key gets it applied exactly once.
"""

import itertools
import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.integration.processes import (
    PrivatePostgres,
    api_server,
    bearer,
    manage,
    members_create,
    operator_token,
    private_postgres,
    server_environment,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.faults]

POINTS = 7
THREADS = 4
OPERATOR = ("fault-operator", "fault-operator-password-1")
PHASE_SECONDS = 30

# The server-side state, read with the app's own models and audit in a subprocess.
STATE_SCRIPT = """
import json
from django.db.models import Count, Sum
from core.models import IdempotencyRecord
from rewards.models import PointsAccount, PointsEntry
from rewards.selectors import ledger_violations
entries = PointsEntry.objects.filter(kind="earn", note__startswith="load-")
sums = dict(entries.values_list("member_id").annotate(total=Sum("points")).order_by())
print(json.dumps({
    "notes": list(entries.values_list("note", flat=True)),
    "keys": list(IdempotencyRecord.objects.filter(key__startswith="load-")
                 .values_list("key", flat=True)),
    "balances": {str(a.member_id): [a.available, a.lifetime_earned, sums.get(a.member_id, 0)]
                 for a in PointsAccount.objects.all()},
    "violations": len(ledger_violations()),
}))
"""


@dataclass(frozen=True, slots=True)
class Outcome:
    key: str
    member_id: str
    status: int | None  # None: no HTTP answer at all (connection error, timeout)
    content_type: str
    body: Any
    retry_after: str | None
    replayed: bool = False


class AwardLoad:
    """Threads posting awards until stopped; every outcome is kept."""

    def __init__(self, url: str, token: str, member_ids: list[str]) -> None:
        self.url = url
        self.token = token
        self.members = itertools.cycle(member_ids)
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(THREADS)]

    def __enter__(self) -> "AwardLoad":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=PHASE_SECONDS)

    def _run(self) -> None:
        with requests.Session() as session:
            while not self.stopping.is_set():
                with self.lock:
                    member_id = next(self.members)
                outcome = award(session, self.url, self.token, member_id, f"load-{uuid.uuid4()}")
                with self.lock:
                    self.outcomes.append(outcome)

    def count(self, status: int, since: int = 0) -> int:
        with self.lock:
            return sum(1 for outcome in self.outcomes[since:] if outcome.status == status)

    def mark(self) -> int:
        with self.lock:
            return len(self.outcomes)


def award(session: requests.Session, url: str, token: str, member_id: str, key: str) -> Outcome:
    try:
        response = session.post(
            f"{url}/api/v1/members/{member_id}/points/awards/",
            json={"points": POINTS, "reason": "manual", "note": key},
            headers=bearer(token, **{"Idempotency-Key": key}),
            timeout=15,
        )
    except requests.RequestException as error:
        return Outcome(key, member_id, None, "", repr(error), None)
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return Outcome(
        key,
        member_id,
        response.status_code,
        response.headers.get("Content-Type", ""),
        body,
        response.headers.get("Retry-After"),
        response.headers.get("Idempotent-Replayed") == "true",
    )


def server_state(env: dict[str, str]) -> dict[str, Any]:
    output = manage(env, "shell", "--no-imports", "-c", STATE_SCRIPT)
    return dict(json.loads(output.strip().splitlines()[-1]))


@pytest.fixture
def cluster() -> Iterator[PrivatePostgres]:
    with private_postgres() as cluster:
        yield cluster


@pytest.fixture
def server_env(cluster: PrivatePostgres) -> dict[str, str]:
    """A migrated database on the private cluster with one operator, and the API's settings."""
    env = server_environment(database_url=cluster.create_database("loyalty"))
    manage(env, "migrate", "--no-input", "-v", "0")
    operator = {
        "DJANGO_SUPERUSER_USERNAME": OPERATOR[0],
        "DJANGO_SUPERUSER_PASSWORD": OPERATOR[1],
        "DJANGO_SUPERUSER_EMAIL": "ops@example.com",
    }
    manage({**env, **operator}, "createsuperuser", "--noinput")
    return env


def test_awards_fail_cleanly_while_postgres_restarts_and_nothing_is_half_written(
    cluster: PrivatePostgres, server_env: dict[str, str]
) -> None:
    env = server_env
    with api_server(env) as server:
        token = operator_token(server.url, *OPERATOR)
        member_ids = members_create(server.url, token, ["fault-a", "fault-b", "fault-c"])

        with AwardLoad(server.url, token, member_ids) as load:
            wait_for(lambda: load.count(201) >= 20, PHASE_SECONDS, "awards before the outage")

            cluster.stop("fast")
            down_from = load.mark()
            wait_for(lambda: load.count(503, down_from) >= 10, PHASE_SECONDS, "503s while down")
            read_while_down = requests.get(
                f"{server.url}/api/v1/members/{member_ids[0]}/points/",
                headers=bearer(token),
                timeout=15,
            )
            health_while_down = requests.get(f"{server.url}/health/", timeout=15)

            cluster.start()
            up_from = load.mark()
            wait_for(lambda: load.count(201, up_from) >= 20, PHASE_SECONDS, "awards after restart")
        outcomes = list(load.outcomes)
        before_retries = server_state(env)

        # A client retries every 503 with the same key and body: each is applied once.
        with requests.Session() as session:
            retried = [
                award(session, server.url, token, outcome.member_id, outcome.key)
                for outcome in outcomes
                if outcome.status == 503
            ]
        balances_seen = {
            member_id: requests.get(
                f"{server.url}/api/v1/members/{member_id}/points/",
                headers=bearer(token),
                timeout=15,
            ).json()["available"]
            for member_id in member_ids
        }
    server_log = server.log()

    statuses = Counter(outcome.status for outcome in outcomes)
    failed = [outcome.body for outcome in outcomes if outcome.status not in {201, 503}]
    assert set(statuses) == {201, 503}, (statuses, failed[:5], server_log)
    unavailable = [outcome for outcome in outcomes if outcome.status == 503]
    for outcome in unavailable:
        assert outcome.content_type == "application/problem+json"
        assert outcome.body["code"] == "database_unavailable"
        assert outcome.body["status"] == 503
        assert outcome.retry_after == "1"
    assert (read_while_down.status_code, read_while_down.json()["code"]) == (
        503,
        "database_unavailable",
    )
    assert read_while_down.headers["Content-Type"] == "application/problem+json"
    assert health_while_down.status_code == 503
    assert health_while_down.json()["checks"]["database"] == "down"
    assert [outcome.status for outcome in retried] == [201] * len(unavailable)

    created = Counter(outcome.key for outcome in outcomes if outcome.status == 201)
    every_key = Counter(outcome.key for outcome in outcomes)
    assert max(every_key.values()) == 1  # distinct keys: one request each
    # Before any retry: exactly one entry and one idempotency record per 201, and nothing for a
    # 503: a request cut off by the outage left no entry and no record behind.
    assert Counter(before_retries["notes"]) == created
    assert Counter(before_retries["keys"]) == created
    assert before_retries["violations"] == 0
    # The retries were applied afresh (not replays of something that had committed after all).
    assert [outcome.status for outcome in retried] == [201] * len(unavailable)
    assert not any(outcome.replayed for outcome in retried)

    state = server_state(env)
    assert Counter(state["notes"]) == every_key
    assert Counter(state["keys"]) == every_key
    assert state["violations"] == 0
    per_member = Counter(outcome.member_id for outcome in outcomes)
    for member_id in member_ids:
        available, lifetime, entries_sum = state["balances"][member_id]
        assert available == lifetime == entries_sum == per_member[member_id] * POINTS
        assert balances_seen[member_id] == available
