"""Reads of the points ledger: balances, entries, and the ledger audit."""

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

from django.db import connection
from django.db.models import Case, CharField, QuerySet, Sum, Value, When

from core.actors import Actor
from core.exceptions import NotFoundError
from members.models import Member
from rewards.models import (
    Certification,
    CertificationGrant,
    EntryKind,
    PointsAccount,
    PointsEntry,
    PointsLot,
    SystemAccount,
    SystemAccountBalance,
)
from tiers.selectors import rules_in_force


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


def system_account_balances() -> dict[str, int]:
    """Each system account's balance (the sum of its shards), every account listed. One query.

    The issuance account is minus the points ever given out net of reversals; the redemption,
    expiry and adjustment accounts hold what came back to the program each way.
    """
    totals = dict(
        SystemAccountBalance.objects.values("account")
        .annotate(total=Sum("balance"))
        .order_by()
        .values_list("account", "total")
    )
    return {account: totals.get(account) or 0 for account in SystemAccount.values}


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
    # I5a: double entry, conservation: members and system accounts sum to zero.
    "I5 members + system accounts = 0": """
        SELECT CAST(m.total AS BIGINT) AS members, CAST(s.total AS BIGINT) AS system FROM
            (SELECT COALESCE(SUM(available + pending), 0) AS total FROM rewards_pointsaccount) m,
            (SELECT COALESCE(SUM(balance), 0) AS total FROM rewards_systemaccountbalance) s
        WHERE m.total + s.total <> 0""",
    # I5b: a system account (all its shards) holds minus the points posted against it. Shards
    # alone are not checked: a member's shard may change with the shard count.
    "I5 system account = -sum of its entries": """
        SELECT account, CAST(SUM(stored) AS BIGINT), CAST(SUM(posted) AS BIGINT) FROM (
            SELECT account, balance AS stored, 0 AS posted FROM rewards_systemaccountbalance
            UNION ALL
            SELECT counter_account, 0, -SUM(points) FROM rewards_pointsentry
            GROUP BY counter_account
        ) sides
        GROUP BY account HAVING SUM(stored) <> SUM(posted)""",
    # I5c: each kind posts against its account; a reversal against its target's.
    "I5 counter account of the kind": """
        SELECT e.id, e.kind, e.counter_account FROM rewards_pointsentry e
        LEFT JOIN rewards_pointsentry t ON t.id = e.reverses_id
        WHERE e.counter_account <> COALESCE(CASE e.kind
            WHEN 'earn' THEN 'issuance'
            WHEN 'redeem' THEN 'redemption'
            WHEN 'expire' THEN 'expiry'
            WHEN 'adjust' THEN 'adjustment'
            WHEN 'reverse' THEN t.counter_account
        END, '')""",
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


# --- Certifications ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertificationRow:
    code: str
    name: str
    level: int
    description: str
    validity_days: int | None
    prerequisites: list[str]
    required_by_tiers: list[str]


def certification_list(*, at: datetime) -> list[CertificationRow]:
    """Active certifications with their prerequisites and the tiers whose rules in force require
    them (three queries)."""
    required_by: dict[str, list[str]] = {}
    for tier in rules_in_force(at=at).tiers:
        for requirement in tier.entry:
            if requirement.is_certification:
                required_by.setdefault(requirement.certification, []).append(tier.code)
    return [
        CertificationRow(
            code=certification.code,
            name=certification.name,
            level=certification.level,
            description=certification.description,
            validity_days=certification.validity_days,
            prerequisites=sorted(p.code for p in certification.prerequisites.all()),
            required_by_tiers=required_by.get(certification.code, []),
        )
        for certification in Certification.objects.filter(is_active=True).prefetch_related(
            "prerequisites"
        )
    ]


def _with_status(
    queryset: QuerySet[CertificationGrant], at: datetime
) -> QuerySet[CertificationGrant]:
    return queryset.select_related("certification").annotate(
        status=Case(
            When(revoked_at__isnull=False, then=Value("revoked")),
            When(expires_at__lte=at, then=Value("expired")),
            default=Value("held"),
            output_field=CharField(),
        )
    )


def member_certifications_list(*, member: Member, at: datetime) -> QuerySet[CertificationGrant]:
    """The member's certification grants, held or not, with a ``status`` (one query)."""
    return _with_status(CertificationGrant.objects.filter(member=member), at).order_by(
        "certification__level", "certification_id"
    )


def member_certification_get(*, member: Member, code: str, at: datetime) -> CertificationGrant:
    grant = _with_status(
        CertificationGrant.objects.filter(member=member, certification_id=code), at
    ).first()
    if grant is None:
        raise NotFoundError("The member has no such certification.")
    return grant
