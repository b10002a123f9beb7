"""Event ingestion throughput through the API, against a plain multi-row INSERT, same run.

Run with DJANGO_SETTINGS_MODULE=bench.settings and DATABASE_URL pointing at a database whose
name contains "bench" (it is emptied):

    .venv/bin/python -m bench.event_ingestion [--quick]

The API side posts batches of 1,000 events (`POST /api/v1/events/`, partner key, a unique
Idempotency-Key per batch) from two client threads to gunicorn on 127.0.0.1; every event is
validated, deduplicated, rolled up per member and day, run through the earning rules and
posted to the ledger. The reference writes the same number of rows into the same events table
with one plain multi-row INSERT per 1,000 rows and nothing else: the floor any ingestion pays.
Target (SPEC §5): >= 5,000 events/s through the API. Writes bench/results/events.md.
"""

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import types
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import django

if TYPE_CHECKING:
    from bench.rows import Row

TARGET_EVENTS_PER_SECOND = 5000
BATCH = 1000
TYPES = ("post", "comment", "like", "share", "login")
OUTPUT = Path(__file__).resolve().parent / "results" / "events.md"


def prepare(members: int) -> tuple[str, list[str]]:
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from core.models import Scope
    from core.services import partner_create
    from members.models import Member

    name = settings.DATABASES["default"]["NAME"]
    if "bench" not in name:
        raise SystemExit(f"Refusing to reset database {name!r}: its name must contain 'bench'.")
    call_command("migrate", interactive=False, verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE members_member, core_partner, core_idempotencyrecord, core_outboxevent "
            "RESTART IDENTITY CASCADE"
        )
        # The entries went with the members: the system accounts' shards go back to zero with
        # them, or the ledger audit (invariant I5) would report what an earlier run posted.
        cursor.execute("UPDATE rewards_systemaccountbalance SET balance = 0 WHERE balance <> 0")
    at = timezone.now()
    Member.objects.bulk_create(
        (
            Member(
                external_id=f"ev-{number:06d}",
                display_name="Bench",
                joined_at=at,
                tier_since=at,
                lifecycle_changed_at=at,
                created_at=at,
                updated_at=at,
            )
            for number in range(members)
        ),
        batch_size=2000,
    )
    _, key = partner_create(name="Bench events", scopes=[Scope.EVENTS_WRITE], at=at)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return key, [f"ev-{number:06d}" for number in range(members)]


def batch_body(batch_number: int, external_ids: list[str], occurred_at: str) -> bytes:
    events = [
        {
            "id": f"b{batch_number}-{index}",
            "external_id": external_ids[(batch_number * BATCH + index * 7) % len(external_ids)],
            "type": TYPES[index % len(TYPES)],
            "occurred_at": occurred_at,
            "properties": {"channel": "app"},
        }
        for index in range(BATCH)
    ]
    return json.dumps({"events": events}).encode()


def post_batches(
    base_url: str, key: str, bodies: list[bytes], clients: int
) -> tuple[float, int, int]:
    """Post every body; returns (seconds, accepted events, failed requests)."""
    pending = iter(range(len(bodies)))
    lock = threading.Lock()
    accepted = 0
    failures = 0

    def client() -> None:
        nonlocal accepted, failures
        while True:
            with lock:
                index = next(pending, None)
            if index is None:
                return
            request = urllib.request.Request(  # noqa: S310 - loopback only
                f"{base_url}/api/v1/events/",
                data=bodies[index],
                method="POST",
                headers={
                    "Authorization": f"Api-Key {key}",
                    "Content-Type": "application/json",
                    "Idempotency-Key": str(uuid.uuid4()),
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
                    results = json.loads(response.read())["results"]
                count = sum(result["status"] == "accepted" for result in results)
            except OSError:
                count = -1
            with lock:
                if count < 0:
                    failures += 1
                else:
                    accepted += count

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, accepted, failures


def reference_insert(rows: int, external_ids: list[str], occurred: datetime) -> float:
    """The same number of event rows, plain multi-row INSERTs of 1,000, one transaction each."""
    from django.db import connection, transaction

    from members.models import ActivityEvent, Member

    member_ids = list(Member.objects.order_by("external_id").values_list("pk", flat=True))
    table = ActivityEvent._meta.db_table
    started = time.perf_counter()
    for batch_number in range(rows // BATCH):
        values = []
        params: list[object] = []
        for index in range(BATCH):
            values.append("(%s, %s, %s, %s, %s, %s, %s, %s, %s)")
            params.extend(
                [
                    "reference",
                    f"r{batch_number}-{index}",
                    member_ids[(batch_number * BATCH + index * 7) % len(member_ids)],
                    TYPES[index % len(TYPES)],
                    occurred,
                    occurred.date(),
                    json.dumps({"channel": "app"}),
                    0,
                    occurred,
                ]
            )
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (source, event_id, member_id, type, occurred_at, "  # noqa: S608
                "business_date, properties, points_awarded, received_at) VALUES "
                + ", ".join(values),
                params,
            )
    return time.perf_counter() - started


@dataclass(frozen=True, slots=True)
class Result:
    batches: int
    members: int
    clients: int
    workers: int
    accepted: int
    failures: int
    api_seconds: float
    reference_seconds: float

    @property
    def events(self) -> int:
        return self.batches * BATCH

    @property
    def api_rate(self) -> float:
        return self.accepted / self.api_seconds

    @property
    def reference_rate(self) -> float:
        return self.events / self.reference_seconds

    @property
    def passed(self) -> bool:
        return (
            self.api_rate >= TARGET_EVENTS_PER_SECOND
            and self.failures == 0
            and self.accepted == self.events
        )


def measure(*, batches: int, members: int, clients: int, workers: int) -> Result:
    """Both paths over the same rows; Django must be set up."""
    from bench.award_throughput import Server
    from bench.db import analyze_after_warm_up

    key, external_ids = prepare(members)
    now = datetime.now(UTC).replace(microsecond=0)
    bodies = [batch_body(number, external_ids, now.isoformat()) for number in range(batches + 2)]
    server_args = types.SimpleNamespace(workers=workers, worker_class="sync", gunicorn_threads=1)
    log = Path(tempfile.gettempdir()) / "bench-events-gunicorn.log"
    with Server(server_args, log) as server:
        post_batches(server.base_url, key, bodies[:2], 1)  # warm-up: imports, connections
        analyze_after_warm_up()
        seconds, accepted, failures = post_batches(server.base_url, key, bodies[2:], clients)
    reference_seconds = reference_insert(batches * BATCH, external_ids, now)
    return Result(
        batches, members, clients, workers, accepted, failures, seconds, reference_seconds
    )


def suite(*, quick: bool) -> list["Row"]:
    """The event ingestion row of the combined table (``bench/run.py``)."""
    from bench.rows import Row, per_s, verdict

    result = measure(batches=10 if quick else 60, members=10_000, clients=2, workers=2)
    return [
        Row(
            "event ingestion items/s (batches of 1,000)",
            per_s(result.api_rate),
            f"plain multi-row INSERT {per_s(result.reference_rate)}",
            f"{result.api_rate / result.reference_rate:.2f}",
            f">= {TARGET_EVENTS_PER_SECOND:,}/s",
            verdict(result.passed),
            f"{result.accepted:,} of {result.events:,} events accepted, "
            f"{result.failures} failed requests",
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 batches instead of 60")
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    django.setup()
    from bench.award_throughput import machine_info

    batches = 20 if args.quick else 60
    result = measure(
        batches=batches, members=args.members, clients=args.clients, workers=args.workers
    )
    api_rate, reference_rate = result.api_rate, result.reference_rate
    info = machine_info()
    lines = [
        "# Event ingestion throughput",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {'quick' if args.quick else 'full'} mode: "
        f"{batches} batches of {BATCH} events over {args.members} members, {args.clients} "
        f"client threads, gunicorn {args.workers} sync workers, PostgreSQL on the same machine.",
        "",
        "| path | events | seconds | events/s |",
        "|---|---:|---:|---:|",
        f"| API `POST /api/v1/events/` (validate, dedupe, rollups, earning, ledger) | "
        f"{result.accepted} | {result.api_seconds:.2f} | {api_rate:,.0f} |",
        f"| reference: plain multi-row INSERT of the same rows | {result.events} "
        f"| {result.reference_seconds:.2f} | {reference_rate:,.0f} |",
        "",
        f"- ratio API / reference: {api_rate / reference_rate:.2f}",
        f"- failed requests: {result.failures}",
        f"- target >= {TARGET_EVENTS_PER_SECOND:,} events/s through the API: "
        f"**{'PASS' if result.passed else 'FAIL'}**",
        "",
        "## Machine",
        "",
        *(f"- {name}: {value}" for name, value in info.items()),
        "",
    ]
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text("\n".join(lines))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0 if result.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
