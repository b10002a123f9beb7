"""The set-based credit posting of PostgreSQL (``_credits_post_postgres``, one statement from
arrays) writes exactly what the portable path (``_credit_locked`` + ``_write``) writes: the same
entries, lots, debt repayments, outbox events, accounts and system shards."""

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from django.db import transaction
from django.utils import timezone

from core.actors import system_actor
from core.models import OutboxEvent
from members.models import Member
from rewards.locks import points_accounts_lock
from rewards.models import (
    EntryKind,
    LotConsumption,
    PointsAccount,
    PointsEntry,
    PointsLot,
    SystemAccountBalance,
)
from rewards.selectors import ledger_violations
from rewards.services import ledger
from rewards.services.ledger import AwardSpec, points_award, points_deduct, points_reverse

pytestmark = pytest.mark.postgres

ACTOR = system_actor("tests")


def _members_with_history(make_member: Any, prefix: str, at: datetime) -> list[Member]:
    """Three members: new (no account yet), with points, and in debt (a refunded award that
    was spent): the batch must repay the debt from its credits first."""
    fresh, rich, indebted = (make_member(f"{prefix}-{name}") for name in ("a", "b", "c"))
    points_award(member=rich, points=40, reason="manual", actor=ACTOR, at=at)
    earned = points_award(member=indebted, points=10, reason="manual", actor=ACTOR, at=at)
    points_deduct(member=indebted, points=10, reason="manual", actor=ACTOR, at=at)
    points_reverse(entry=earned, actor=ACTOR, at=at)
    assert PointsAccount.objects.get(pk=indebted.pk).available == -10
    return [fresh, rich, indebted]


def _specs(members: list[Member], at: datetime, prefix: str) -> list[AwardSpec]:
    fresh, rich, indebted = members
    return [
        AwardSpec(fresh.pk, 5, "manual", note="first", idempotency_key=f"{prefix}-1"),
        AwardSpec(indebted.pk, 4, "partner"),  # repays 4 of the 10
        AwardSpec(rich.pk, 7, "purchase", pending_until=at + timedelta(days=14)),
        AwardSpec(indebted.pk, 9, "manual", expires_at=at + timedelta(days=30)),  # repays 6
        AwardSpec(indebted.pk, 3, "event", pending_until=at + timedelta(days=2)),  # pending
        AwardSpec(fresh.pk, 2, "manual", reference=f"{prefix}:order-1"),
        AwardSpec(rich.pk, 1, "correction", kind=EntryKind.ADJUST),
    ]


def _post(members: list[Member], specs: list[AwardSpec], at: datetime) -> list[tuple[int, int]]:
    with transaction.atomic():
        accounts = points_accounts_lock(member_ids=[m.pk for m in members], at=at)
        return ledger.credits_post(accounts=accounts, specs=specs, actor=ACTOR, at=at)


def _written(members: list[Member], since: int) -> dict[str, Any]:
    """Everything the postings wrote, with each member named by position and entries by
    version, so two sets of members compare."""
    name = {member.pk: index for index, member in enumerate(members)}
    entries = PointsEntry.objects.filter(member__in=members, pk__gt=since).order_by("pk")
    entry_key = {entry.pk: (name[entry.member_id], entry.version) for entry in entries}
    return {
        "entries": [
            (
                entry_key[entry.pk],
                entry.kind,
                entry.points,
                entry.counter_account,
                entry.balance_after,
                entry.reason,
                entry.note,
                entry.reference.rpartition(":")[2],
                entry.actor,
                entry.idempotency_key.rpartition("-")[2],
                entry.created_at,
                entry.reverses_id,
                entry.expired_lot_id,
            )
            for entry in entries
        ],
        "lots": sorted(
            (
                entry_key[lot.entry_id],
                lot.points,
                lot.remaining,
                lot.expires_at,
                lot.pending_until,
                lot.is_pending,
                lot.created_at,
            )
            for lot in PointsLot.objects.filter(entry_id__in=entry_key)
        ),
        "repayments": sorted(
            (entry_key[row.entry_id], entry_key[row.lot_id], row.points)
            for row in LotConsumption.objects.filter(entry_id__in=entry_key)
        ),
        "events": [
            (
                event.event_type,
                name[UUID(event.aggregate_id)],
                {**event.payload, "member_id": name[UUID(event.payload["member_id"])]},
                event.occurred_at,
                event.created_at,
                event.position,
            )
            for event in OutboxEvent.objects.filter(
                aggregate_id__in=[str(member.pk) for member in members],
                event_type="points.awarded",
                created_at=entries[0].created_at,
            ).order_by("id")
        ],
        "accounts": sorted(
            (
                name[account.pk],
                account.available,
                account.pending,
                account.lifetime_earned,
                account.version,
                account.updated_at,
            )
            for account in PointsAccount.objects.filter(member__in=members)
        ),
    }


def _system() -> dict[str, int]:
    totals: dict[str, int] = {}
    for account, balance in SystemAccountBalance.objects.values_list("account", "balance"):
        totals[account] = totals.get(account, 0) + balance
    return totals


def test_the_set_based_posting_writes_what_the_portable_one_writes(
    make_member, monkeypatch, audited
):
    at = timezone.now()
    portable_members = _members_with_history(make_member, "portable", at)
    sql_members = _members_with_history(make_member, "sql", at)
    later = at + timedelta(minutes=1)
    since = PointsEntry.objects.order_by("-pk").values_list("pk", flat=True).first()

    before = _system()
    with monkeypatch.context() as patch:
        patch.setattr(ledger, "_credits_post_postgres", ledger._credits_post_portable)
        portable = _post(portable_members, _specs(portable_members, later, "portable"), later)
    moved_by_portable = {k: v - before.get(k, 0) for k, v in _system().items()}
    before = _system()
    posted = _post(sql_members, _specs(sql_members, later, "sql"), later)
    moved_by_sql = {k: v - before.get(k, 0) for k, v in _system().items()}

    assert [balance for _, balance in posted] == [balance for _, balance in portable]
    assert [entry_id for entry_id, _ in posted] == sorted(entry_id for entry_id, _ in posted)
    sql_written = _written(sql_members, since)
    assert sql_written == _written(portable_members, since)
    assert len(sql_written["entries"]) == 7
    assert len(sql_written["events"]) == 7
    assert sql_written["repayments"] == [((2, 4), (2, 4), 4), ((2, 5), (2, 5), 6)]
    assert moved_by_sql == moved_by_portable
    assert ledger_violations() == []


def test_deferred_system_postings_land_once_the_block_ends(make_member, audited):
    members = [make_member(f"deferred-{n}") for n in range(3)]
    at = timezone.now()
    before = _system()

    with transaction.atomic():
        with ledger.system_postings_deferred():
            _post(members, [AwardSpec(m.pk, 5, "manual") for m in members], at)
            assert _system() == before  # not yet: the shards are written last
        after = _system()

    assert after == {**before, "issuance": before.get("issuance", 0) - 15}
    assert ledger_violations() == []
