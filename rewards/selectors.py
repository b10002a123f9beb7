"""Reads of the points ledger: balances, entries, and the ledger audit."""

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db import connection
from django.db.models import Case, CharField, Count, Q, QuerySet, Subquery, Sum, Value, When

from core.actors import Actor
from core.exceptions import NotFoundError
from members.models import Member
from rewards.catalog_rules import RedeemerState, RewardTerms, redeem_blockers
from rewards.models import (
    Badge,
    Benefit,
    BenefitKind,
    Certification,
    CertificationGrant,
    EntryKind,
    MemberBadge,
    PointsAccount,
    PointsEntry,
    PointsLot,
    Redemption,
    RedemptionStatus,
    Reward,
    SystemAccount,
    SystemAccountBalance,
)
from tiers.models import Tier
from tiers.selectors import rules_in_force
from tiers.services.assessment import TierStanding, member_tier_standing


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
    # I12a: a reward's redeemed_count (moved with its stock) = its live redemptions.
    "I12 reward counter = live redemptions": """
        SELECT r.id, r.redeemed_count, COUNT(d.id) FROM rewards_reward r
        LEFT JOIN rewards_redemption d ON d.reward_id = r.id AND d.status <> 'cancelled'
        GROUP BY r.id, r.redeemed_count HAVING r.redeemed_count <> COUNT(d.id)""",
    # I12b: live redemptions per (member, reward) within the reward's limit.
    "I12 per-member limit": """
        SELECT d.reward_id, d.member_id, COUNT(*) FROM rewards_redemption d
        JOIN rewards_reward r ON r.id = d.reward_id
        WHERE d.status <> 'cancelled' AND r.per_member_limit IS NOT NULL
        GROUP BY d.reward_id, d.member_id, r.per_member_limit
        HAVING COUNT(*) > r.per_member_limit""",
    # I12c: each redemption has one redeem entry of minus its points, unreversed while live; a
    # cancelled one exactly the reversal of it as its refund.
    "I12 redemption entries": """
        SELECT d.id, d.status FROM rewards_redemption d
        JOIN rewards_pointsentry e ON e.id = d.redeem_entry_id
        LEFT JOIN rewards_pointsentry x ON x.id = d.refund_entry_id
        LEFT JOIN rewards_pointsentry reversal ON reversal.reverses_id = e.id
        WHERE e.kind <> 'redeem' OR e.points <> -d.points OR e.member_id <> d.member_id
           OR (d.status = 'cancelled'
               AND (x.id IS NULL OR x.reverses_id <> e.id OR x.points <> d.points))
           OR (d.status <> 'cancelled' AND reversal.id IS NOT NULL)""",
    # I12d: no redemption's points left without its redemption row.
    "I12 redeem entry has its redemption": """
        SELECT e.id FROM rewards_pointsentry e
        LEFT JOIN rewards_redemption d ON d.redeem_entry_id = e.id
        WHERE e.kind = 'redeem' AND e.reference LIKE 'redemption:%%' AND d.id IS NULL""",
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


# --- Rewards catalog -----------------------------------------------------------------------------


def member_benefit_codes(*, member_id: UUID, at: datetime) -> frozenset[str]:
    """The benefit kind codes (e.g. ``new_product_trial``) the member holds at ``at``: what a
    reward's ``required_benefit`` is checked against, by the list and the redemption alike (the
    member's tier rung's benefits, one query)."""
    return member_benefit_kinds(member_id=member_id)


def redeemer_state_get(*, member_id: UUID, at: datetime) -> RedeemerState:
    """The member's side of every reward's terms: points, tier rank, benefits. Three queries;
    ``active_redemptions`` is per reward, annotated by the list."""
    available = (
        PointsAccount.objects.filter(pk=member_id).values_list("available", flat=True).first()
    )
    tier_rank = Member.objects.filter(pk=member_id).values_list("tier__rank", flat=True).first()
    return RedeemerState(
        available_points=available or 0,
        tier_rank=tier_rank or 0,
        benefits=member_benefit_codes(member_id=member_id, at=at),
        active_redemptions=0,
    )


def reward_list_for_actor(*, actor: Actor, at: datetime) -> QuerySet[Reward]:
    """Rewards the actor may see: a member the active ones not yet ended (a reward not open yet
    is listed, not redeemable), annotated with ``member_active_count`` (their live redemptions of
    it); operators and partners every reward. One query per page whatever its size."""
    rewards = Reward.objects.select_related("min_tier")
    if not actor.is_member:
        return rewards
    return rewards.filter(
        Q(available_until__isnull=True) | Q(available_until__gt=at), is_active=True
    ).annotate(
        member_active_count=Count(
            "redemptions",
            filter=Q(redemptions__member_id=actor.member_id)
            & ~Q(redemptions__status=RedemptionStatus.CANCELLED),
        )
    )


def reward_get_for_actor(*, actor: Actor, reward_id: int, at: datetime) -> Reward:
    """One reward the actor may see (``reward_list_for_actor``).

    :raises NotFoundError: otherwise.
    """
    reward = reward_list_for_actor(actor=actor, at=at).filter(pk=reward_id).first()
    if reward is None:
        raise NotFoundError("No such reward.")
    return reward


def reward_get(*, reward_id: int) -> Reward:
    """Any reward, for redeeming: terms that refuse (inactive, ended) answer 409, not 404.

    :raises NotFoundError: when there is no such reward.
    """
    reward = Reward.objects.select_related("min_tier").filter(pk=reward_id).first()
    if reward is None:
        raise NotFoundError("No such reward.")
    return reward


def reward_blockers_of(*, reward: Reward, redeemer: RedeemerState, at: datetime) -> list[str]:
    """Why the member cannot redeem the reward (empty: they can), from a listed reward (its
    ``member_active_count`` annotation) and the member's state; no query."""
    state = replace(redeemer, active_redemptions=getattr(reward, "member_active_count", 0))
    return redeem_blockers(reward_terms(reward), state, at)


def reward_terms(reward: Reward) -> RewardTerms:
    """The reward's terms for ``rewards.catalog_rules`` (its ``min_tier`` selected with it)."""
    return RewardTerms(
        points_cost=reward.points_cost,
        stock=reward.stock,
        min_tier_rank=reward.min_tier.rank if reward.min_tier else None,
        required_benefit=reward.required_benefit,
        per_member_limit=reward.per_member_limit,
        available_from=reward.available_from,
        available_until=reward.available_until,
        is_active=reward.is_active,
    )


def redemption_list_for_actor(*, actor: Actor) -> QuerySet[Redemption]:
    """Redemptions the actor may see: a member their own, operators all, partners none."""
    redemptions = Redemption.objects.select_related("reward")
    if actor.is_member:
        return redemptions.filter(member_id=actor.member_id)
    if actor.is_operator:
        return redemptions
    return redemptions.none()


def redemption_get_for_actor(*, actor: Actor, redemption_id: UUID) -> Redemption:
    """One redemption the actor may see; another member's answers 404 (no hint it exists).

    :raises NotFoundError: otherwise.
    """
    redemption = redemption_list_for_actor(actor=actor).filter(pk=redemption_id).first()
    if redemption is None:
        raise NotFoundError("No such redemption.")
    return redemption


# --- Benefits and honors -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BenefitRow:
    """A benefit as members see it; a points multiplier shows its tier's multiplier."""

    code: str
    tier: str
    tier_rank: int
    kind: str
    name: str
    value: Decimal | None
    description: str
    exclusive_to_tier: bool


def _benefit_row(benefit: Benefit) -> BenefitRow:
    multiplier = benefit.kind == BenefitKind.POINTS_MULTIPLIER
    return BenefitRow(
        code=benefit.code,
        tier=benefit.tier_id,
        tier_rank=benefit.tier.rank,
        kind=benefit.kind,
        name=benefit.name,
        value=benefit.tier.points_multiplier if multiplier else benefit.value,
        description=benefit.description,
        exclusive_to_tier=benefit.exclusive_to_tier,
    )


def _active_benefits() -> QuerySet[Benefit]:
    return (
        Benefit.objects.filter(is_active=True)
        .select_related("tier")
        .order_by("tier__rank", "kind", "code")
    )


def benefit_catalog() -> list[tuple[Tier, list[BenefitRow]]]:
    """Every rung, lowest first, with the active benefits attached to it (two queries)."""
    by_tier: dict[str, list[BenefitRow]] = {}
    for benefit in _active_benefits():
        by_tier.setdefault(benefit.tier_id, []).append(_benefit_row(benefit))
    return [(tier, by_tier.get(tier.code, [])) for tier in Tier.objects.order_by("rank")]


def member_benefits(*, member: Member) -> list[BenefitRow]:
    """The benefits the member's tier gives: those of their rung and of every rung below, but
    a lower rung's ``exclusive_to_tier`` ones (one query)."""
    rank = Tier.objects.filter(pk=member.tier_id).values("rank")
    benefits = _active_benefits().filter(
        Q(tier__rank__lte=Subquery(rank)) & (Q(exclusive_to_tier=False) | Q(tier=member.tier_id))
    )
    return [_benefit_row(benefit) for benefit in benefits]


def member_benefit_kinds(*, member_id: UUID) -> frozenset[str]:
    """The kinds of benefit the member's tier gives (what a reward's ``required_benefit`` is
    checked against), by the member's id (one query)."""
    member = Member.objects.filter(pk=member_id)
    kinds = Benefit.objects.filter(
        Q(is_active=True, tier__rank__lte=Subquery(member.values("tier__rank")))
        & (Q(exclusive_to_tier=False) | Q(tier=Subquery(member.values("tier_id"))))
    ).values_list("kind", flat=True)
    return frozenset(kinds)


def badge_list() -> QuerySet[Badge]:
    """The active badges and titles, most prestigious first."""
    return Badge.objects.filter(is_active=True).order_by("-level", "code")


def member_badges_list(*, member: Member) -> QuerySet[MemberBadge]:
    """The member's badges (of active definitions), newest first (one query)."""
    return (
        MemberBadge.objects.filter(member=member, badge__is_active=True)
        .select_related("badge")
        .order_by("-awarded_at", "-id")
    )


def member_title(badges: list[MemberBadge]) -> str | None:
    """The title shown beside the member's name: the most prestigious title held."""
    titles = [award.badge for award in badges if award.badge.is_title]
    return max(titles, key=lambda badge: (badge.level, badge.code)).name if titles else None


@dataclass(frozen=True, slots=True)
class WallEntry:
    """One honor on the public wall: a display name and a badge, nothing else about the member."""

    display_name: str
    badge: str
    badge_name: str
    is_title: bool
    awarded_at: datetime


def honors_wall(*, at: datetime, limit: int) -> list[WallEntry]:
    """The latest honors of members who opted in to public recognition (erased members never
    appear), newest first (one query, along the awards' (-awarded_at, -id) index)."""
    rows = (
        MemberBadge.objects.filter(
            awarded_at__lte=at,
            badge__is_active=True,
            member__public_recognition=True,
            member__erased_at__isnull=True,
        )
        .order_by("-awarded_at", "-id")
        .values_list(
            "member__display_name", "badge_id", "badge__name", "badge__is_title", "awarded_at"
        )[:limit]
    )
    return [WallEntry(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class MemberOverview:
    """Everything of the member's own view (``GET me/``)."""

    member: Member
    standing: TierStanding
    balance: PointsBalance
    benefits: list[BenefitRow]
    badges: list[MemberBadge]
    title: str | None
    certifications: list[CertificationGrant]


def member_overview_get(*, member: Member, at: datetime) -> MemberOverview:
    """The member's profile, tier with progress to the next, balance, benefits, badges and
    certifications. The number of queries does not depend on how many of each the member has."""
    badges = list(member_badges_list(member=member))
    return MemberOverview(
        member=member,
        standing=member_tier_standing(member=member, rules=rules_in_force(at=at), at=at),
        balance=points_balance_get(member_id=member.pk, at=at),
        benefits=member_benefits(member=member),
        badges=badges,
        title=member_title(badges),
        certifications=list(member_certifications_list(member=member, at=at)),
    )


@dataclass(frozen=True, slots=True)
class RungExtras:
    """What a ladder rung carries besides its rules: its benefits and its honors."""

    benefits: list[BenefitRow]
    honors: list[Badge]


def rung_extras() -> dict[str, RungExtras]:
    """Per tier code, the benefits attached to the rung and the badges or titles reaching it
    awards (two queries)."""
    extras: dict[str, RungExtras] = {}
    for benefit in _active_benefits():
        extras.setdefault(benefit.tier_id, RungExtras([], [])).benefits.append(
            _benefit_row(benefit)
        )
    for badge in Badge.objects.filter(is_active=True, rule__startswith="reached_tier:").order_by(
        "-is_title", "code"
    ):
        code = badge.rule.split(":", 1)[1]
        extras.setdefault(code, RungExtras([], [])).honors.append(badge)
    return extras
