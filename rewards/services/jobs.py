"""Periodic points jobs: expiry, release of pending points, expiry warnings.

Each works in chunks of members, one short transaction per chunk, set-based inside it: the
accounts of the chunk are locked in primary-key order, the lots are read under those locks, and
everything is written with bulk statements. Re-running, or running twice at once, writes nothing
twice: a lot expires at most once (unique ``expired_lot``) and is read only under its account's lock.
Expiries post through the ledger's write path, which moves the ``expiry`` system account with them.
"""

from collections.abc import Callable
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Min, QuerySet, Sum

from core.actors import system_actor
from core.events import DomainEvent, domain_events_record
from core.read_cache import member_reads_changed
from rewards.locks import points_accounts_lock
from rewards.models import (
    EntryKind,
    LotConsumption,
    PointsAccount,
    PointsEntry,
    PointsLot,
    Reason,
    SystemAccount,
)
from rewards.services.ledger import _Posting, _write

Progress = Callable[[int], None]


def _members_with(lots: QuerySet[PointsLot], limit: int, after: UUID | None) -> list[UUID]:
    queryset = lots.order_by("member_id").values_list("member_id", flat=True).distinct()
    if after is not None:
        queryset = queryset.filter(member_id__gt=after)
    return list(queryset[:limit])


def points_expire(
    *, at: datetime, chunk_size: int | None = None, progress: Progress | None = None
) -> int:
    """Post ``expire`` entries for every available lot past its expiry. Returns lots expired."""
    chunk_size = chunk_size or settings.LOYALTY_JOB_CHUNK_SIZE
    due = PointsLot.objects.filter(remaining__gt=0, is_pending=False, expires_at__lte=at)
    actor = system_actor("expire_points")
    expired = 0
    after: UUID | None = None
    while True:
        member_ids = _members_with(due, chunk_size, after)
        if not member_ids:
            return expired
        after = member_ids[-1]
        with transaction.atomic():
            accounts = points_accounts_lock(member_ids=member_ids, at=at)
            versions = {pk: account.version for pk, account in accounts.items()}
            posting = _Posting()
            # Read under the account locks: a concurrent spend or expiry has finished by now.
            lots = list(
                due.filter(member_id__in=member_ids).order_by("member_id", "expires_at", "entry_id")
            )
            totals: dict[UUID, int] = {}
            for lot in lots:
                account = accounts[lot.member_id]
                account.available -= lot.remaining
                account.version += 1
                entry = PointsEntry(
                    member_id=account.pk,
                    version=account.version,
                    kind=EntryKind.EXPIRE,
                    points=-lot.remaining,
                    counter_account=SystemAccount.EXPIRY,
                    balance_after=account.balance,
                    reason=Reason.EXPIRY,
                    actor=actor.label,
                    expired_lot=lot,
                    reference=f"expiry:{lot.pk}",
                    created_at=at,
                )
                posting.entries.append(entry)
                posting.consumptions.append((entry, lot, lot.remaining))
                totals[lot.member_id] = totals.get(lot.member_id, 0) + lot.remaining
                lot.remaining = 0
                posting.lot_updates[lot.pk] = lot
            posting.events.extend(
                DomainEvent(
                    "points.expired",
                    str(member_id),
                    {"member_id": str(member_id), "points": points},
                    at,
                    dedupe_key=f"{member_id}:{at.isoformat()}",
                )
                for member_id, points in totals.items()
            )
            _write(list(accounts.values()), versions, posting, at)
        expired += len(lots)
        if progress:
            progress(len(member_ids))


def points_release_pending(
    *, at: datetime, chunk_size: int | None = None, progress: Progress | None = None
) -> int:
    """Make pending points whose hold has ended available (repaying any debt first).

    No entry is posted: the points were in the ledger since the award; only the account's
    pending/available split and the lot's state change. Returns lots released.
    """
    chunk_size = chunk_size or settings.LOYALTY_JOB_CHUNK_SIZE
    due = PointsLot.objects.filter(is_pending=True, pending_until__lte=at)
    released = 0
    after: UUID | None = None
    while True:
        member_ids = _members_with(due, chunk_size, after)
        if not member_ids:
            return released
        after = member_ids[-1]
        with transaction.atomic():
            accounts = points_accounts_lock(member_ids=member_ids, at=at)
            lots = list(
                due.filter(member_id__in=member_ids).order_by(
                    "member_id", "pending_until", "entry_id"
                )
            )
            consumptions = []
            for lot in lots:
                account = accounts[lot.member_id]
                account.pending -= lot.remaining
                repay = min(max(0, -account.available), lot.remaining)
                account.available += lot.remaining
                account.updated_at = at
                lot.is_pending = False
                if repay:
                    lot.remaining -= repay
                    consumptions.append(
                        LotConsumption(entry_id=lot.entry_id, lot_id=lot.pk, points=repay)
                    )
            PointsLot.objects.bulk_update(lots, ["is_pending", "remaining"])
            LotConsumption.objects.bulk_create(consumptions)
            # The version stays: no entry was posted, the chain is unchanged.
            PointsAccount.objects.bulk_update(
                list(accounts.values()), ["available", "pending", "updated_at"]
            )
            member_reads_changed(accounts)
        released += len(lots)
        if progress:
            progress(len(member_ids))


def points_expiring_notify(*, at: datetime, days: int | None = None) -> int:
    """Emit ``points.expiring`` once per member and expiry date for points expiring within
    ``days``. Returns how many warnings were offered (repeats are dropped by the outbox key)."""
    days = settings.LOYALTY_POINTS_EXPIRING_WARNING_DAYS if days is None else days
    rows = (
        PointsLot.objects.filter(
            remaining__gt=0,
            is_pending=False,
            expires_at__gt=at,
            expires_at__lte=at + timedelta(days=days),
        )
        .values("member_id", "expires_at__date")
        .annotate(points=Sum("remaining"), expires_at=Min("expires_at"))
        .order_by("member_id", "expires_at__date")
    )
    offered = 0
    batch: list[DomainEvent] = []
    for row in rows.iterator(chunk_size=2000):
        batch.append(
            DomainEvent(
                "points.expiring",
                str(row["member_id"]),
                {
                    "member_id": str(row["member_id"]),
                    "points": row["points"],
                    "expires_at": row["expires_at"].isoformat(),
                },
                at,
                dedupe_key=f"{row['member_id']}:{row['expires_at__date']}",
            )
        )
        if len(batch) == 2000:
            offered += _record(batch, at)
            batch = []
    return offered + _record(batch, at)


def _record(events: list[DomainEvent], at: datetime) -> int:
    with transaction.atomic():
        return domain_events_record(events=events, at=at)
