"""Batch awards through the API against a plain multi-row INSERT of the same ledger rows.

Part of the combined benchmark (``python -m bench.run``); also runs alone:

    DJANGO_SETTINGS_MODULE=bench.settings \
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/loyalty_bench \
    .venv/bin/python -m bench.award_batches [--quick]

The API side posts batches of 1,000 items (`POST /api/v1/points/award-batches/`, partner key
with `points:award`, a unique Idempotency-Key per request and per item) from two client threads
to gunicorn on 127.0.0.1: each batch is one transaction that validates the items, resolves the
members by external id, locks their accounts and writes entries, lots, balances, the issuance
side and outbox events, set-based. Batch n awards slice n % SLICES of a pool of SLICES x 1,000
members, as a campaign's batches cover distinct members: batches in flight at the same time
award different members (a member comes back only SLICES batches later), so the two clients do
not take turns on account locks. The reference writes the same number of earn entries into the
same ledger table, for a pool of members of its own sliced the same way, with one plain
multi-row INSERT per 1,000 rows in one transaction each, and nothing else: the floor any batch
award pays (the entry row with its constraints and indexes). Target (SPEC §5): >= 5,000 items/s.
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
from pathlib import Path

from bench.rows import Row, per_s, verdict

TARGET_ITEMS_PER_SECOND = 5000
BATCH = 1000
# Batch n awards the members of slice n % SLICES: concurrent batches never share a member.
SLICES = 8
API_POOL = "batch-api-"
REFERENCE_POOL = "batch-ref-"


def prepare() -> str:
    """Migrate, empty, create both pools (with points accounts) and the partner; its key."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.utils import timezone

    from core.models import Scope
    from core.services import partner_create
    from members.models import Member
    from rewards.models import PointsAccount

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
    with transaction.atomic():
        members = Member.objects.bulk_create(
            [
                Member(
                    external_id=f"{pool}{number:06d}",
                    display_name="Bench",
                    joined_at=at,
                    tier_since=at,
                    lifecycle_changed_at=at,
                    created_at=at,
                    updated_at=at,
                )
                for pool in (API_POOL, REFERENCE_POOL)
                for number in range(SLICES * BATCH)
            ],
            batch_size=2000,
        )
        PointsAccount.objects.bulk_create(
            [PointsAccount(member_id=member.pk, updated_at=at) for member in members],
            batch_size=2000,
        )
        _, key = partner_create(name="Bench batches", scopes=[Scope.POINTS_AWARD], at=at)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return key


def batch_body(batch_number: int) -> bytes:
    first = batch_number % SLICES * BATCH
    items = [
        {
            "external_id": f"{API_POOL}{first + index:06d}",
            "points": 1 + index % 5,
            "idempotency_key": f"b{batch_number}-{index}",
        }
        for index in range(BATCH)
    ]
    return json.dumps({"items": items}).encode()


def post_batches(
    base_url: str, key: str, bodies: list[bytes], clients: int
) -> tuple[float, int, int]:
    """Post every body; returns (seconds, accepted items, failed requests)."""
    pending = iter(range(len(bodies)))
    lock = threading.Lock()
    totals = {"accepted": 0, "failures": 0}

    def client() -> None:
        while True:
            with lock:
                index = next(pending, None)
            if index is None:
                return
            request = urllib.request.Request(  # noqa: S310 - loopback only
                f"{base_url}/api/v1/points/award-batches/",
                data=bodies[index],
                method="POST",
                headers={
                    "X-Api-Key": key,
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
                    totals["failures"] += 1
                else:
                    totals["accepted"] += count

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, totals["accepted"], totals["failures"]


def reference_insert(batches: int) -> float:
    """The same earn entries for the reference pool, sliced as the API's batches are: one
    multi-row INSERT per batch."""
    from django.db import connection, transaction
    from django.utils import timezone

    from members.models import Member
    from rewards.models import EntryKind, PointsEntry, Reason, SystemAccount

    member_ids = list(
        Member.objects.filter(external_id__startswith=REFERENCE_POOL)
        .order_by("external_id")
        .values_list("pk", flat=True)
    )
    table = PointsEntry._meta.db_table
    at = timezone.now()
    started = time.perf_counter()
    for batch_number in range(batches):
        values, params = [], []
        first = batch_number % SLICES * BATCH
        # A slice's members get one entry per batch of theirs: this is that one's version.
        version = batch_number // SLICES + 1
        for index, member_id in enumerate(member_ids[first : first + BATCH]):
            points = 1 + index % 5
            values.append("(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
            params.extend(
                [
                    member_id,
                    version,
                    EntryKind.EARN,
                    points,
                    SystemAccount.ISSUANCE,
                    points * version,
                    Reason.PARTNER,
                    "",
                    "",
                    "partner:bench",
                    f"r{batch_number}-{index}",
                    at,
                ]
            )
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (member_id, version, kind, points, counter_account, "  # noqa: S608
                "balance_after, reason, note, reference, actor, idempotency_key, created_at) "
                "VALUES " + ", ".join(values),
                params,
            )
    return time.perf_counter() - started


@dataclass(frozen=True, slots=True)
class Result:
    batches: int
    accepted: int
    failures: int
    api_seconds: float
    reference_seconds: float

    @property
    def items(self) -> int:
        return self.batches * BATCH

    @property
    def api_rate(self) -> float:
        return self.accepted / self.api_seconds

    @property
    def reference_rate(self) -> float:
        return self.items / self.reference_seconds


def measure(*, batches: int, clients: int = 2, workers: int = 2) -> Result:
    from bench.award_throughput import Server
    from bench.db import analyze_after_warm_up

    key = prepare()
    bodies = [batch_body(number) for number in range(batches + 2)]
    server_args = types.SimpleNamespace(workers=workers, worker_class="sync", gunicorn_threads=1)
    log = Path(tempfile.gettempdir()) / "bench-award-batches-gunicorn.log"
    with Server(server_args, log) as server:
        _, warm, _ = post_batches(server.base_url, key, bodies[:2], 1)  # imports, connections
        if warm == 0:
            raise SystemExit(f"No item accepted during warm-up:\n{server.log_tail()}")
        analyze_after_warm_up()
        seconds, accepted, failures = post_batches(server.base_url, key, bodies[2:], clients)
    return Result(batches, accepted, failures, seconds, reference_insert(batches))


def suite(*, quick: bool) -> list[Row]:
    result = measure(batches=8 if quick else 40)
    passed = (
        result.api_rate >= TARGET_ITEMS_PER_SECOND
        and result.failures == 0
        and result.accepted == result.items
    )
    return [
        Row(
            "batch awards items/s (batches of 1,000)",
            per_s(result.api_rate),
            f"plain multi-row INSERT {per_s(result.reference_rate)}",
            f"{result.api_rate / result.reference_rate:.2f}",
            f">= {TARGET_ITEMS_PER_SECOND:,}/s",
            verdict(passed),
            f"{result.accepted:,} of {result.items:,} items accepted, "
            f"{result.failures} failed requests, 2 client threads, "
            f"batches over distinct members ({SLICES} slices of {BATCH:,})",
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    rows = suite(quick=args.quick)
    for row in rows:
        print(row)
    return 0 if all(row.status == "PASS" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
