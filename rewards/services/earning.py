"""Earning rules applied to activity, and the daily check-in.

``award_for_event`` is the one entry point event ingestion uses: inside the caller's transaction
it decides the points (rule, tier multiplier floored, daily cap, hourly velocity, minimum tier)
and posts them, so an event is never counted without its points or the other way round.
"""

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F

from core.actors import Actor
from core.db import require_transaction
from members.models import Member
from rewards.locks import points_accounts_lock
from rewards.models import CheckIn, DailyEarning, EarningRule, EntryKind, PointsEntry, Reason
from rewards.services.ledger import AwardSpec, _credit_locked, _Posting, _write
from tiers.models import Tier

CHECKIN_EVENT = "checkin"
PURCHASE_EVENT = "purchase"


class AwardOutcome(StrEnum):
    AWARDED = "awarded"
    CAPPED = "capped"  # the daily cap left nothing
    VELOCITY_LIMITED = "velocity_limited"
    BELOW_MIN_TIER = "below_min_tier"
    NO_RULE = "no_rule"
    ZERO_POINTS = "zero_points"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class EventAward:
    outcome: AwardOutcome
    points: int = 0
    entry: PointsEntry | None = None


def business_date_of(at: datetime) -> date:
    """The calendar day in the program's time zone (Asia/Shanghai by default)."""
    return at.astimezone(ZoneInfo(settings.LOYALTY_BUSINESS_TIME_ZONE)).date()


def event_points(*, rule: EarningRule, multiplier: Decimal, amount: Decimal | None) -> int:
    """Points for one event before the cap: per event or per whole currency unit, times the
    tier's multiplier, floored to whole points."""
    base = rule.points * (math.floor(amount) if rule.per_currency_unit and amount else 1)
    if rule.per_currency_unit and not amount:
        return 0
    return math.floor(Decimal(base) * multiplier)


def award_for_event(
    *,
    member: Member,
    event_type: str,
    reference: str,
    actor: Actor,
    at: datetime,
    amount: Decimal | None = None,
) -> EventAward:
    """Apply the earning rule of ``event_type`` to one event of the member.

    ``reference`` names the event uniquely (e.g. ``event:<source>:<id>``): a second award for the
    same reference is ``duplicate`` and posts nothing. Daily caps clamp the last award to what is
    left of the cap. Must run inside the caller's transaction (the event and its points commit
    together).
    """
    require_transaction()
    rule = EarningRule.objects.filter(event_type=event_type, is_active=True).first()
    if rule is None:
        return EventAward(AwardOutcome.NO_RULE)
    tier = Tier.objects.only("rank", "points_multiplier").get(pk=member.tier_id)
    if rule.min_tier_id is not None:
        min_rank = Tier.objects.values_list("rank", flat=True).get(pk=rule.min_tier_id)
        if tier.rank < min_rank:
            return EventAward(AwardOutcome.BELOW_MIN_TIER)
    points = event_points(rule=rule, multiplier=tier.points_multiplier, amount=amount)
    if points <= 0:
        return EventAward(AwardOutcome.ZERO_POINTS)

    # The account lock serialises this member's awards, so cap and velocity counts are exact.
    account = points_accounts_lock(member_ids=[member.pk], at=at)[member.pk]
    if PointsEntry.objects.filter(kind=EntryKind.EARN, reference=reference).exists():
        return EventAward(AwardOutcome.DUPLICATE)
    if rule.hourly_limit is not None:
        recent = PointsEntry.objects.filter(
            member=member,
            kind=EntryKind.EARN,
            reference__startswith=f"{event_type}:",
            created_at__gt=at - timedelta(hours=1),
        ).count()
        if recent >= rule.hourly_limit:
            return EventAward(AwardOutcome.VELOCITY_LIMITED)
    today = business_date_of(at)
    if rule.daily_cap is not None:
        earned_today = (
            DailyEarning.objects.filter(member=member, event_type=event_type, business_date=today)
            .values_list("points", flat=True)
            .first()
            or 0
        )
        points = min(points, rule.daily_cap - earned_today)
        if points <= 0:
            return EventAward(AwardOutcome.CAPPED)

    spec = AwardSpec(
        member_id=member.pk,
        points=points,
        reason=_reason_for(event_type),
        reference=reference,
        expires_at=at + timedelta(days=rule.expiry_days or settings.LOYALTY_POINTS_EXPIRY_DAYS),
        pending_until=at + timedelta(days=rule.pending_days) if rule.pending_days else None,
    )
    versions = {account.pk: account.version}
    posting = _Posting()
    entry = _credit_locked(account, spec, actor=actor, at=at, posting=posting)
    _write([account], versions, posting, at)
    _count_daily(member=member, event_type=event_type, business_date=today, points=points)
    return EventAward(AwardOutcome.AWARDED, points, entry)


def _reason_for(event_type: str) -> str:
    if event_type == CHECKIN_EVENT:
        return Reason.CHECKIN
    if event_type == PURCHASE_EVENT:
        return Reason.PURCHASE
    return Reason.EVENT


def _count_daily(*, member: Member, event_type: str, business_date: date, points: int) -> None:
    updated = DailyEarning.objects.filter(
        member=member, event_type=event_type, business_date=business_date
    ).update(points=F("points") + points, awards_count=F("awards_count") + 1)
    if not updated:
        DailyEarning.objects.create(
            member=member,
            event_type=event_type,
            business_date=business_date,
            points=points,
            awards_count=1,
        )


@dataclass(frozen=True, slots=True)
class CheckInResult:
    check_in: CheckIn
    created: bool


@transaction.atomic
def checkin_create(*, member: Member, actor: Actor, at: datetime) -> CheckInResult:
    """Check the member in for today (business time zone). A repeat the same day returns the
    same check-in and awards nothing, also under concurrent calls (unique per member and day)."""
    today = business_date_of(at)
    existing = CheckIn.objects.filter(member=member, business_date=today).first()
    if existing is not None:
        return CheckInResult(existing, created=False)
    yesterday = (
        CheckIn.objects.filter(member=member, business_date=today - timedelta(days=1))
        .values_list("streak", flat=True)
        .first()
    )
    try:
        with transaction.atomic():
            check_in = CheckIn.objects.create(
                member=member, business_date=today, streak=(yesterday or 0) + 1, created_at=at
            )
    except IntegrityError:  # a concurrent call for the same day won
        return CheckInResult(CheckIn.objects.get(member=member, business_date=today), created=False)
    award = award_for_event(
        member=member,
        event_type=CHECKIN_EVENT,
        reference=f"{CHECKIN_EVENT}:{member.pk}:{today.isoformat()}",
        actor=actor,
        at=at,
    )
    if award.entry is not None:
        check_in.points_awarded = award.points
        check_in.entry = award.entry
        check_in.save(update_fields=("points_awarded", "entry"))
    return CheckInResult(check_in, created=True)
