"""Reads of the points ledger: balances, entries, and the ledger audit."""

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

from django.db import connection
from django.db.models import QuerySet, Sum

from core.actors import Actor
from core.exceptions import NotFoundError
from rewards.models import EntryKind, PointsAccount, PointsEntry, PointsLot


@dataclass(frozen=True, slots=True)
class ExpiringPoints:
    expires_on: date
    points: int


@dataclass(frozen=True, slots=True)
class PointsBalance:
    available: int
    pending: int
    lifetime_earned: int
    qualifying_points_90d: int
    expiring: list[ExpiringPoints]
    version: int


def points_balance_get(*, member_id: UUID, at: datetime, expiring_days: int = 30) -> PointsBalance:
    """The member's balance view: available, pending, lifetime, qualifying (90 days) and the
    points expiring in the next ``expiring_days`` grouped by date. Three queries."""
    account = PointsAccount.objects.filter(pk=member_id).first()
    expiring = (
        PointsLot.objects.filter(
            member_id=member_id,
            remaining__gt=0,
            is_pending=False,
            expires_at__gt=at,
            expires_at__lte=at + timedelta(days=expiring_days),
        )
        .values("expires_at__date")
        .annotate(points=Sum("remaining"))
        .order_by("expires_at__date")
    )
    return PointsBalance(
        available=account.available if account else 0,
        pending=account.pending if account else 0,
        lifetime_earned=account.lifetime_earned if account else 0,
        qualifying_points_90d=qualifying_points(member_id=member_id, at=at, days=90),
        expiring=[ExpiringPoints(row["expires_at__date"], row["points"]) for row in expiring],
        version=account.version if account else 0,
    )


def qualifying_points(*, member_id: UUID, at: datetime, days: int) -> int:
    """Points earned in the window, not reduced by spending; earns later reversed do not count."""
    totals = PointsEntry.objects.filter(
        member_id=member_id,
        kind=EntryKind.EARN,
        created_at__gt=at - timedelta(days=days),
        created_at__lte=at,
    ).aggregate(
        earned=Sum("points"),
        reversed=Sum("reversed_by__points"),
    )
    return (totals["earned"] or 0) + (totals["reversed"] or 0)


def points_entries_list(*, member_id: UUID) -> QuerySet[PointsEntry]:
    """The member's ledger, newest first."""
    return PointsEntry.objects.filter(member_id=member_id).select_related("lot")


def points_entry_get(*, entry_id: int) -> PointsEntry | None:
    return PointsEntry.objects.filter(pk=entry_id).first()


# --- The audit (I1-I11) ------------------------------------------------------------------------

_AUDIT_QUERIES: dict[str, str] = {
    # I1: the account equals the sum of its entries.
    "I1 balance = sum of entries": """
        SELECT a.member_id, a.available + a.pending AS balance, COALESCE(SUM(e.points), 0) AS total
        FROM rewards_pointsaccount a LEFT JOIN rewards_pointsentry e ON e.member_id = a.member_id
        GROUP BY a.member_id, a.available, a.pending
        HAVING a.available + a.pending <> COALESCE(SUM(e.points), 0)""",
    # I2: versions 1..n without gaps, balance_after chained, account at the latest entry.
    "I2 entry chain": """
        SELECT member_id, version FROM (
            SELECT e.member_id, e.version, e.balance_after, e.points,
                   LAG(e.balance_after, 1, 0) OVER w AS previous_balance,
                   LAG(e.version, 1, 0) OVER w AS previous_version
            FROM rewards_pointsentry e WINDOW w AS (PARTITION BY e.member_id ORDER BY e.version)
        ) chained
        WHERE balance_after <> previous_balance + points OR version <> previous_version + 1
        UNION ALL
        SELECT a.member_id, a.version FROM rewards_pointsaccount a
        WHERE a.version <> (SELECT COUNT(*) FROM rewards_pointsentry e WHERE e.member_id = a.member_id)""",
    # I3: available = available lots - debt, pending = pending lots; debt only when no lot is left.
    "I3 lots match the balance": """
        SELECT a.member_id FROM rewards_pointsaccount a
        LEFT JOIN (
            SELECT member_id,
                   SUM(CASE WHEN is_pending THEN 0 ELSE remaining END) AS available_lots,
                   SUM(CASE WHEN is_pending THEN remaining ELSE 0 END) AS pending_lots
            FROM rewards_pointslot GROUP BY member_id
        ) l ON l.member_id = a.member_id
        WHERE a.pending <> COALESCE(l.pending_lots, 0)
           OR (a.available >= 0 AND a.available <> COALESCE(l.available_lots, 0))
           OR (a.available < 0 AND COALESCE(l.available_lots, 0) <> 0)""",
    # I3b: every lot's consumed part is recorded.
    "I3 lot consumption recorded": """
        SELECT l.entry_id FROM rewards_pointslot l
        LEFT JOIN (SELECT lot_id, SUM(points) AS used FROM rewards_lotconsumption GROUP BY lot_id) c
          ON c.lot_id = l.entry_id
        WHERE l.points - l.remaining <> COALESCE(c.used, 0)""",
    # I4: only a reversal may leave the balance negative.
    "I4 no spend into debt": """
        SELECT e.id FROM rewards_pointsentry e
        WHERE e.kind IN ('redeem', 'expire', 'adjust') AND e.points < 0 AND e.balance_after < 0""",
    # I8: a lot never gives out more than it had.
    "I8 lot not over-consumed": """
        SELECT l.entry_id FROM rewards_pointslot l
        JOIN rewards_lotconsumption c ON c.lot_id = l.entry_id
        GROUP BY l.entry_id, l.points HAVING SUM(c.points) > l.points""",
    # I9: a reversal negates at most its target.
    "I9 reversal within its target": """
        SELECT r.id FROM rewards_pointsentry r JOIN rewards_pointsentry t ON r.reverses_id = t.id
        WHERE ABS(r.points) > ABS(t.points) OR SIGN(r.points) = SIGN(t.points)""",
    # I11: lifetime earned = sum of earn entries.
    "I11 lifetime = sum of earns": """
        SELECT a.member_id FROM rewards_pointsaccount a
        LEFT JOIN (SELECT member_id, SUM(points) AS earned FROM rewards_pointsentry
                   WHERE kind = 'earn' GROUP BY member_id) e ON e.member_id = a.member_id
        WHERE a.lifetime_earned <> COALESCE(e.earned, 0)""",
}


def ledger_violations() -> list[dict[str, Any]]:
    """Every broken ledger invariant, as rows (empty when the ledger is sound). Set-based SQL."""
    violations = []
    with connection.cursor() as cursor:
        for invariant, sql in _AUDIT_QUERIES.items():
            cursor.execute(sql)
            violations.extend(
                {"invariant": invariant, "row": list(row)} for row in cursor.fetchall()
            )
    return violations


def points_entries_list_by_ids(*, entry_ids: list[int]) -> list[PointsEntry]:
    """Entries with their lots, in the order asked (re-read after a write, before rendering)."""
    by_id = {
        entry.pk: entry
        for entry in PointsEntry.objects.filter(pk__in=entry_ids).select_related("lot")
    }
    return [by_id[entry_id] for entry_id in entry_ids]


def points_entry_get_for_actor(*, actor: Actor, entry_id: int) -> PointsEntry:
    """An entry the actor may act on: operators any, a partner only the entries it created.

    :raises NotFoundError: otherwise (no hint that it exists).
    """
    queryset = PointsEntry.objects.all()
    if actor.is_partner:
        queryset = queryset.filter(actor=actor.label)
    elif not actor.is_operator:
        queryset = queryset.none()
    entry = queryset.filter(pk=entry_id).first()
    if entry is None:
        raise NotFoundError("No such points entry.")
    return entry
