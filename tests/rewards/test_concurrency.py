"""Races on PostgreSQL: many threads released together by a barrier, each on its own connection.
Every test ends with the ledger audit, conservation against the system accounts (I5) included."""

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import close_old_connections, connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from core.actors import system_actor
from core.api.tokens import member_token_pair, operator_token_pair
from rewards.models import CheckIn, PointsAccount, PointsEntry
from rewards.selectors import ledger_violations, system_account_balances
from rewards.services.jobs import points_expire
from rewards.services.ledger import (
    AwardSpec,
    points_award,
    points_award_batch,
    system_account_shard,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ACTOR = system_actor("tests")


def _race(count: int, work: Callable[[int], Any], threads: int = 24) -> list[Any]:
    """Run ``work(0..count-1)`` on at most ``threads`` threads (each its own connection), all
    released together by a barrier."""
    threads = min(threads, count)
    barrier = threading.Barrier(threads)
    results: list[Any] = [None] * count
    pending = iter(range(count))
    lock = threading.Lock()

    def run() -> None:
        try:
            barrier.wait()
            while True:
                with lock:
                    index = next(pending, None)
                if index is None:
                    return
                try:
                    results[index] = work(index)
                except Exception as error:
                    results[index] = error
        finally:
            connection.close()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    close_old_connections()
    return results


def _system(**nonzero: int) -> dict[str, int]:
    return {"issuance": 0, "redemption": 0, "expiry": 0, "adjustment": 0, **nonzero}


def _client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_200_concurrent_deductions_of_1_on_a_balance_of_100(superuser, member):
    points_award(member=member, points=100, reason="manual", actor=ACTOR, at=timezone.now())
    token = operator_token_pair(superuser)["access"]
    url = f"/api/v1/members/{member.pk}/points/deductions/"

    responses = _race(
        200, lambda n: _client(token).post(url, {"points": 1}, HTTP_IDEMPOTENCY_KEY=f"d-{n}")
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] * 100 + [409] * 100
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"insufficient_points"}
    assert all(
        r["Content-Type"].startswith("application/problem+json")
        for r in responses
        if r.status_code == 409
    )
    assert PointsAccount.objects.get(pk=member.pk).available == 0
    assert sum(PointsEntry.objects.filter(member=member).values_list("points", flat=True)) == 0
    assert system_account_balances() == _system(issuance=-100, adjustment=100)
    assert ledger_violations() == []


def test_concurrent_replays_of_one_key_post_one_entry(superuser, member):
    token = operator_token_pair(superuser)["access"]
    url = f"/api/v1/members/{member.pk}/points/awards/"

    responses = _race(
        20, lambda n: _client(token).post(url, {"points": 9}, HTTP_IDEMPOTENCY_KEY="same")
    )

    assert {response.status_code for response in responses} == {201}
    assert len({response.json()["id"] for response in responses}) == 1
    assert PointsEntry.objects.filter(member=member).count() == 1
    assert PointsAccount.objects.get(pk=member.pk).available == 9
    assert ledger_violations() == []


def test_concurrent_check_ins_award_once(member):
    token = member_token_pair(member.pk)["access"]

    responses = _race(20, lambda n: _client(token).post("/api/v1/me/check-ins/"))

    assert sorted(response.status_code for response in responses) == [200] * 19 + [201]
    assert len({response.json()["date"] for response in responses}) == 1
    assert CheckIn.objects.filter(member=member).count() == 1
    assert PointsEntry.objects.filter(member=member).count() == 1
    assert ledger_violations() == []


def test_concurrent_reversals_reverse_once(superuser, member):
    earn = points_award(member=member, points=50, reason="purchase", actor=ACTOR, at=timezone.now())
    token = operator_token_pair(superuser)["access"]
    url = f"/api/v1/points/entries/{earn.pk}/reversal/"

    responses = _race(10, lambda n: _client(token).post(url, {}, HTTP_IDEMPOTENCY_KEY=f"r-{n}"))

    assert sorted(response.status_code for response in responses) == [201] + [409] * 9
    assert PointsEntry.objects.filter(reverses=earn).count() == 1
    assert ledger_violations() == []


def test_expiry_run_twice_at_once_expires_each_lot_once(make_member):
    now = timezone.now()
    members = [make_member(f"x-{n}") for n in range(30)]
    for member in members:
        points_award(
            member=member,
            points=10,
            reason="manual",
            actor=ACTOR,
            at=now,
            expires_at=now + timezone.timedelta(days=1),
        )
        points_award(member=member, points=5, reason="manual", actor=ACTOR, at=now)
    later = now + timezone.timedelta(days=2)

    counts = _race(2, lambda n: points_expire(at=later, chunk_size=7))

    assert sum(counts) == 30
    assert PointsEntry.objects.filter(kind="expire").count() == 30
    assert set(PointsAccount.objects.values_list("available", flat=True)) == {5}
    assert system_account_balances() == _system(issuance=-450, expiry=300)
    assert ledger_violations() == []


def test_award_batches_over_the_same_members_in_different_orders_do_not_deadlock(
    superuser, make_member
):
    external_ids = [make_member(f"ring-{n}").external_id for n in range(30)]
    token = operator_token_pair(superuser)["access"]

    def batch(n: int) -> Any:
        order = external_ids[n:] + external_ids[:n] if n % 2 else list(reversed(external_ids))
        items = [{"external_id": external_id, "points": 2} for external_id in order]
        return _client(token).post("/api/v1/points/award-batches/", {"items": items})

    responses = _race(8, batch)

    assert {response.status_code for response in responses} == {200}
    assert set(PointsAccount.objects.values_list("available", flat=True)) == {16}
    assert system_account_balances() == _system(issuance=-480)
    assert ledger_violations() == []


def test_awards_and_batches_sharing_system_shards_neither_deadlock_nor_lose_a_point(
    make_member, settings
):
    # Two shards: nearly every posting meets others on its issuance row.
    settings.LOYALTY_SYSTEM_ACCOUNT_SHARDS = 2
    singles = [make_member(f"single-{n}") for n in range(24)]
    batched = [make_member(f"batched-{n}") for n in range(24)]
    assert {system_account_shard(member.pk) for member in singles + batched} == {0, 1}

    def work(n: int) -> Any:
        if n < 8:
            # Batches lock their accounts in key order, then both shards in shard order.
            order = batched if n % 2 else list(reversed(batched))
            with transaction.atomic():
                return points_award_batch(
                    items=[AwardSpec(member_id=m.pk, points=1, reason="manual") for m in order],
                    actor=ACTOR,
                    at=timezone.now(),
                )
        return points_award(
            member=singles[n % 24], points=3, reason="manual", actor=ACTOR, at=timezone.now()
        )

    results = _race(8 + 3 * 24, work)

    assert [r for r in results if isinstance(r, Exception)] == []
    assert set(
        PointsAccount.objects.filter(member__in=singles).values_list("available", flat=True)
    ) == {9}
    assert set(
        PointsAccount.objects.filter(member__in=batched).values_list("available", flat=True)
    ) == {8}
    assert system_account_balances() == _system(issuance=-(24 * 9 + 24 * 8))
    assert ledger_violations() == []
