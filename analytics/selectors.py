"""Read-only analytics across the apps: tier distribution, the member funnel, weekly cohort
retention, the community health index, weekly tier movement and points flow.

Every function takes the "now" (``at``) and runs a fixed handful of set-based aggregate queries
over the daily rollups (``members.MemberDailyActivity``), member columns, tier history and the
points ledger; none loops over members. Dates and weeks are business dates in the program time
zone (``LOYALTY_BUSINESS_TIME_ZONE``); weeks start on Monday. Lists of weeks are oldest first.

Definitions (hand-computable, so the tests check them against small fixtures):

- population: members not erased (``erased_at`` is null);
- tier distribution: the population per current tier; ``share`` = count / population (0 when
  empty); ``expected_share`` from ``Tier.expected_share``; ``gap`` = share - expected_share;
- funnel over members of the population who joined on business dates
  ``joined_from..joined_to`` (inclusive). The steps are nested, each a subset of the one before:
  ``registered`` (all of them) -> ``first_interaction`` (has a first interaction by ``at``) ->
  ``regular_participation`` (interactions on at least ``LOYALTY_ANALYTICS_REGULAR_DAYS`` (4)
  distinct business days within the ``LOYALTY_ANALYTICS_REGULAR_WINDOW_DAYS`` (30) days starting
  on the day of the first interaction) -> ``paid_conversion`` (has a first purchase by ``at``)
  -> ``koc`` (current tier is koc or higher by rank). ``step_conversion`` = count / previous
  step's count (None for the first step, 0 when the previous step is empty);
  ``lost_within_72h`` counts members whose first interaction is at least 72 hours before ``at``
  and who have no activity of any kind (``last_activity_at``) later than 72 hours after it;
  ``lost_within_72h_share`` = lost / ``lost_within_72h_eligible`` (those first interactions at
  least 72 hours old);
- retention: ``weeks`` join-week cohorts ending with the current week; ``retention[k]`` = the
  share of the cohort with a rollup row with interactions in the k-th week after the join week
  (k=0 is the join week itself), for every week that has begun by ``at`` (the current week is
  in progress); later weeks are absent, so younger cohorts have shorter lists;
- health, over the last complete week (``week_start``) and the week before it:
  ``post_density`` = posts in the week per 100 members of the population who had joined by the
  week's end; ``post_density_change`` = (density - previous) / previous (None when the previous
  density is 0); ``shares_per_day`` = shares over the 7 complete business days before today / 7;
  ``silent_count``/``dormant_count`` = population in lifecycle stage silent/dormant;
  ``silent_30d_count`` = population with no interaction for ``LOYALTY_HEALTH_SILENT_DAYS`` (30)
  days (never interacted: counted from joining). Alerts (none for an empty population):
  ``post_density_drop`` when the density fell by ``LOYALTY_HEALTH_POST_DENSITY_DROP`` (0.20) or
  more; ``shares_per_day_low`` when shares per day are under
  ``LOYALTY_HEALTH_MIN_SHARES_PER_DAY``; ``members_silent_30d`` when the silent-30-days share of
  the population exceeds ``LOYALTY_HEALTH_MAX_SILENT_SHARE``. Edges are compared exactly
  (fractions, not floats): a drop of exactly 20% alerts, 19.9% does not. Activity sums include
  erased members' past activity (it happened); populations exclude them;
- tier movement: tier changes per week, a promotion when the new tier ranks above the old one,
  a demotion when below (first assignments and same-tier steps count as neither);
- points flow: per week, ``issued`` = points of ``earn`` entries, ``redeemed`` and ``expired`` =
  points (positive) of ``redeem`` and ``expire`` entries; adjustments and reversals are left out.

Results are cached in the Django cache for ``LOYALTY_ANALYTICS_CACHE_SECONDS``, keyed by the
function, its parameters and the business hour of ``at`` (``fresh=True`` skips the cache).
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from fractions import Fraction
from functools import partial
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.cache import cache
from django.db.models import (
    Count,
    DateTimeField,
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    Q,
    Subquery,
    Sum,
)
from django.db.models.functions import Coalesce, TruncDate, TruncWeek

from core.db_router import analytics_database
from members.models import LifecycleStage, Member, MemberDailyActivity
from rewards.models import PointsEntry
from rewards.models.ledger import EntryKind
from tiers.models import KOC, Tier, TierChange

T = TypeVar("T")

FUNNEL_STEPS: tuple[tuple[str, str], ...] = (
    ("registered", "Registered"),
    ("first_interaction", "First interaction"),
    ("regular_participation", "Regular participation"),
    ("paid_conversion", "Paid conversion"),
    ("koc", "KOC or higher"),
)
LOST_WINDOW = timedelta(hours=72)


# --- Results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TierShare:
    code: str
    name: str
    rank: int
    count: int
    share: float
    expected_share: float
    gap: float  # share - expected_share


@dataclass(frozen=True)
class TierDistribution:
    total: int
    tiers: list[TierShare]
    as_of: datetime


@dataclass(frozen=True)
class FunnelStep:
    key: str
    label: str
    count: int
    share_of_registered: float
    step_conversion: float | None  # None for the first step


@dataclass(frozen=True)
class Funnel:
    joined_from: date
    joined_to: date
    steps: list[FunnelStep]
    lost_within_72h: int
    lost_within_72h_share: float
    lost_within_72h_eligible: int = 0


@dataclass(frozen=True)
class CohortRow:
    week_start: date
    size: int
    retention: list[float]  # retention[k]: share active in week k after joining (0 = join week)


@dataclass(frozen=True)
class Retention:
    weeks: int
    cohorts: list[CohortRow]


@dataclass(frozen=True)
class HealthAlert:
    code: str  # "post_density_drop", "shares_per_day_low", "members_silent_30d"
    message: str
    value: float
    threshold: float


@dataclass(frozen=True)
class Health:
    week_start: date
    post_density: float
    previous_post_density: float
    post_density_change: float | None
    shares_per_day: float
    silent_count: int
    dormant_count: int
    silent_30d_count: int
    alerts: list[HealthAlert]
    population: int = 0
    posts: int = 0
    previous_posts: int = 0
    business_date: date | None = None


@dataclass(frozen=True)
class WeekMovement:
    week_start: date
    promotions: int
    demotions: int


@dataclass(frozen=True)
class WeekPoints:
    week_start: date
    issued: int
    redeemed: int
    expired: int


# --- Time and cache helpers ---------------------------------------------------------------------


def _zone() -> ZoneInfo:
    return ZoneInfo(settings.LOYALTY_BUSINESS_TIME_ZONE)


def _business_date(at: datetime) -> date:
    return at.astimezone(_zone()).date()


def _day_start(day: date) -> datetime:
    """The instant a business day begins."""
    return datetime.combine(day, time.min, tzinfo=_zone())


def week_start_of(day: date) -> date:
    """The Monday of the week holding ``day``."""
    return day - timedelta(days=day.weekday())


def _as_date(value: date | datetime) -> date:
    """A truncated week from the database: a date, or a datetime (aware or naive) in the zone."""
    if isinstance(value, datetime):
        return value.astimezone(_zone()).date() if value.tzinfo else value.date()
    return value


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


# The views the periodic refresh keeps warm: the API's defaults (retention and flows over 12
# weeks) and the dashboard's (retention over 8 weeks, flows over 12).
REFRESHED_RETENTION_WEEKS = (8, 12)
REFRESHED_FLOW_WEEKS = 12
# Refreshed entries outlive the next run (every 5 minutes) by this much.
ANALYTICS_REFRESH_MARGIN_SECONDS = 120


def _cache_key(key_parts: tuple[Any, ...], at: datetime) -> str:
    hour = at.astimezone(_zone()).strftime("%Y-%m-%dT%H")
    return "analytics:" + ":".join(str(part) for part in (*key_parts, hour))


def _cached(key_parts: tuple[Any, ...], at: datetime, fresh: bool, compute: Callable[[], T]) -> T:
    """``compute()`` through the Django cache, keyed by the parameters and the business hour."""
    ttl = settings.LOYALTY_ANALYTICS_CACHE_SECONDS
    if fresh or ttl <= 0:
        return compute()
    key = _cache_key(key_parts, at)
    value = cache.get(key)
    if value is None:
        value = compute()
        cache.set(key, value, ttl)
    return value


def analytics_cache_refresh(*, at: datetime) -> int:
    """Recompute the default views (the endpoints' defaults and the dashboard's) into the cache.

    The periodic job runs this more often than the cache expires, so at a million members no
    operator waits for a cold retention or funnel query. Entries outlive the next run by a margin
    (they are replaced, never left to expire first). Returns how many views were refreshed.
    """
    ttl = settings.LOYALTY_ANALYTICS_CACHE_SECONDS
    if ttl <= 0:
        return 0
    today = _business_date(at)
    joined_from = today - timedelta(days=settings.LOYALTY_ANALYTICS_FUNNEL_DEFAULT_DAYS - 1)
    views: dict[tuple[Any, ...], Callable[[], Any]] = {
        ("tier_distribution",): lambda: _tier_distribution(at=at),
        ("health",): lambda: _health(at=at),
        ("funnel", joined_from.isoformat(), today.isoformat()): lambda: _funnel(
            joined_from=joined_from, joined_to=today, at=at
        ),
        **{
            ("retention", weeks): partial(_retention, weeks=weeks, at=at, fresh=False)
            for weeks in REFRESHED_RETENTION_WEEKS
        },
        ("tier_movement_weekly", REFRESHED_FLOW_WEEKS): lambda: _tier_movement(
            weeks=REFRESHED_FLOW_WEEKS, at=at
        ),
        ("points_flow_weekly", REFRESHED_FLOW_WEEKS): lambda: _points_flow(
            weeks=REFRESHED_FLOW_WEEKS, at=at
        ),
    }
    cache.set_many(
        {_cache_key(parts, at): compute() for parts, compute in views.items()},
        ttl + ANALYTICS_REFRESH_MARGIN_SECONDS,
    )
    return len(views)


def _db() -> str:
    """Analytics read the replica when one is configured (``LOYALTY_ANALYTICS_DATABASE``)."""
    return analytics_database()


def _population() -> Any:
    return Member.objects.using(_db()).filter(erased_at__isnull=True)


# --- Tier distribution --------------------------------------------------------------------------


def tier_distribution(*, at: datetime, fresh: bool = False) -> TierDistribution:
    """The population per current tier with shares, expected shares and the gap."""
    return _cached(("tier_distribution",), at, fresh, lambda: _tier_distribution(at=at))


def _tier_distribution(*, at: datetime) -> TierDistribution:
    tiers = list(
        Tier.objects.using(_db())
        .order_by("rank")
        .values_list("code", "name", "rank", "expected_share")
    )
    counts = dict(
        _population().order_by().values("tier").annotate(n=Count("pk")).values_list("tier", "n")
    )
    total = sum(counts.values())
    rows = []
    for code, name, rank, expected in tiers:
        count = counts.get(code, 0)
        share = _ratio(count, total)
        rows.append(
            TierShare(
                code=code,
                name=name,
                rank=rank,
                count=count,
                share=share,
                expected_share=float(expected),
                gap=share - float(expected),
            )
        )
    return TierDistribution(total=total, tiers=rows, as_of=at)


# --- Funnel -------------------------------------------------------------------------------------


def funnel(*, joined_from: date, joined_to: date, at: datetime, fresh: bool = False) -> Funnel:
    """The nested funnel of members who joined on ``joined_from..joined_to`` (inclusive)."""
    return _cached(
        ("funnel", joined_from.isoformat(), joined_to.isoformat()),
        at,
        fresh,
        lambda: _funnel(joined_from=joined_from, joined_to=joined_to, at=at),
    )


def _funnel(*, joined_from: date, joined_to: date, at: datetime) -> Funnel:
    zone = _zone()
    today = _business_date(at)
    regular_days = settings.LOYALTY_ANALYTICS_REGULAR_DAYS
    window = timedelta(days=settings.LOYALTY_ANALYTICS_REGULAR_WINDOW_DAYS)
    koc_rank = Tier.objects.using(_db()).filter(code=KOC).values_list("rank", flat=True).first()
    koc_codes = (
        []
        if koc_rank is None
        else list(
            Tier.objects.using(_db()).filter(rank__gte=koc_rank).values_list("code", flat=True)
        )
    )
    joined = Q(
        erased_at__isnull=True,
        joined_at__gte=_day_start(joined_from),
        joined_at__lt=_day_start(joined_to) + timedelta(days=1),
    )
    first = Q(first_interaction_at__isnull=False, first_interaction_at__lte=at)
    eligible = first & Q(first_interaction_at__lte=at - LOST_WINDOW)
    lost = eligible & (
        Q(last_activity_at__isnull=True)
        | Q(
            last_activity_at__lte=ExpressionWrapper(
                F("first_interaction_at") + LOST_WINDOW, output_field=DateTimeField()
            )
        )
    )
    totals = (
        Member.objects.using(_db())
        .filter(joined)
        .aggregate(
            registered=Count("pk"),
            first_interaction=Count("pk", filter=first),
            eligible=Count("pk", filter=eligible),
            lost=Count("pk", filter=lost),
        )
    )
    # Regular participants: interactions on enough distinct days (rollup rows are unique per
    # member and day) in the window that starts on the business day of the first interaction
    # (its end exclusive). A correlated count per cohort member on the rollups' (member, date)
    # key, in the WHERE clause once, so the three nested steps share it.
    active_days = (
        MemberDailyActivity.objects.using(_db())
        .filter(
            member=OuterRef("pk"),
            interactions__gt=0,
            business_date__gte=OuterRef("_first_day"),
            business_date__lt=OuterRef("_window_end"),
            business_date__lte=today,
        )
        .order_by()
        .values("member")
        .annotate(n=Count("pk"))
        .values("n")
    )
    paid = Q(first_purchase_at__isnull=False, first_purchase_at__lte=at)
    totals |= (
        Member.objects.using(_db())
        .filter(joined & first)
        .alias(
            _first_day=TruncDate("first_interaction_at", tzinfo=zone),
            _window_end=TruncDate(
                ExpressionWrapper(F("first_interaction_at") + window, output_field=DateTimeField()),
                tzinfo=zone,
            ),
        )
        .alias(_active_days=Subquery(active_days, output_field=IntegerField()))
        .filter(_active_days__gte=regular_days)
        .aggregate(
            regular_participation=Count("pk"),
            paid_conversion=Count("pk", filter=paid),
            koc=Count("pk", filter=paid & Q(tier__in=koc_codes)),
        )
    )
    steps: list[FunnelStep] = []
    previous: int | None = None
    registered = totals["registered"]
    for key, label in FUNNEL_STEPS:
        count = totals[key]
        steps.append(
            FunnelStep(
                key=key,
                label=label,
                count=count,
                share_of_registered=_ratio(count, registered),
                step_conversion=None if previous is None else _ratio(count, previous),
            )
        )
        previous = count
    return Funnel(
        joined_from=joined_from,
        joined_to=joined_to,
        steps=steps,
        lost_within_72h=totals["lost"],
        lost_within_72h_share=_ratio(totals["lost"], totals["eligible"]),
        lost_within_72h_eligible=totals["eligible"],
    )


# --- Retention ----------------------------------------------------------------------------------


def retention(*, weeks: int, at: datetime, fresh: bool = False) -> Retention:
    """Weekly retention of the last ``weeks`` join-week cohorts (oldest first)."""
    return _cached(
        ("retention", weeks), at, fresh, lambda: _retention(weeks=weeks, at=at, fresh=fresh)
    )


def _retention(*, weeks: int, at: datetime, fresh: bool) -> Retention:
    zone = _zone()
    today = _business_date(at)
    current_week = week_start_of(today)
    first_week = current_week - timedelta(weeks=weeks - 1)
    joined = Q(erased_at__isnull=True, joined_at__gte=_day_start(first_week), joined_at__lte=at)
    sizes = {
        _as_date(week): n
        for week, n in Member.objects.using(_db())
        .filter(joined)
        .order_by()
        .annotate(_week=TruncWeek("joined_at", tzinfo=zone))
        .values("_week")
        .annotate(n=Count("pk"))
        .values_list("_week", "n")
    }
    active = _retention_cells(first_week=first_week, today=today, at=at, fresh=fresh)
    cohorts = []
    for index in range(weeks):
        week = first_week + timedelta(weeks=index)
        size = sizes.get(week, 0)
        begun = (current_week - week).days // 7 + 1
        cohorts.append(
            CohortRow(
                week_start=week,
                size=size,
                retention=[
                    _ratio(active.get((week, week + timedelta(weeks=k)), 0), size)
                    for k in range(begun)
                ],
            )
        )
    return Retention(weeks=weeks, cohorts=cohorts)


Cells = dict[tuple[date, date], int]


def _retention_cells(*, first_week: date, today: date, at: datetime, fresh: bool) -> Cells:
    """Members of the cohorts joined since ``first_week`` active per (join week, active week).

    An active week that ended before the oldest day an event may still be sent for
    (``LOYALTY_EVENT_MAX_AGE_DAYS``) can no longer change: its cells are cached per active week
    for ``LOYALTY_ANALYTICS_CLOSED_WEEKS_CACHE_SECONDS``, so a long retention table scans only the
    rollups of the last few weeks (a later erasure is reflected once that cache expires).
    """
    open_from = week_start_of(today - timedelta(days=settings.LOYALTY_EVENT_MAX_AGE_DAYS))
    ttl = settings.LOYALTY_ANALYTICS_CLOSED_WEEKS_CACHE_SECONDS
    if (
        fresh
        or ttl <= 0
        or settings.LOYALTY_ANALYTICS_CACHE_SECONDS <= 0
        or open_from <= first_week
    ):
        return _retention_cells_query(first_week=first_week, days=(first_week, today), at=at)
    closed = [first_week + timedelta(weeks=k) for k in range((open_from - first_week).days // 7)]
    keys = {week: f"analytics:retention_cells:{first_week}:{week}" for week in closed}
    found = cache.get_many(list(keys.values()))
    missing = [week for week in closed if keys[week] not in found]
    cells: Cells = {}
    if missing:
        computed = _retention_cells_query(
            first_week=first_week, days=(missing[0], missing[-1] + timedelta(days=6)), at=at
        )
        by_week: dict[date, Cells] = {week: {} for week in missing}
        for (join_week, active_week), n in computed.items():
            by_week.setdefault(active_week, {})[join_week, active_week] = n
        cache.set_many({keys[week]: by_week[week] for week in missing}, ttl)
        found |= {keys[week]: by_week[week] for week in missing}
    for week in closed:
        cells |= found[keys[week]]
    return cells | _retention_cells_query(first_week=first_week, days=(open_from, today), at=at)


def _retention_cells_query(*, first_week: date, days: tuple[date, date], at: datetime) -> Cells:
    """One aggregate: distinct active members per (join week, active week) over the rollups of
    ``days`` (inclusive), for members (not erased) who joined from ``first_week`` to ``at``."""
    zone = _zone()
    return {
        (_as_date(join_week), _as_date(active_week)): n
        for join_week, active_week, n in MemberDailyActivity.objects.using(_db())
        .filter(
            member__erased_at__isnull=True,
            member__joined_at__gte=_day_start(first_week),
            member__joined_at__lte=at,
            interactions__gt=0,
            business_date__gte=days[0],
            business_date__lte=days[1],
        )
        .order_by()
        .annotate(
            _join_week=TruncWeek("member__joined_at", tzinfo=zone),
            _active_week=TruncWeek("business_date"),
        )
        .values("_join_week", "_active_week")
        .annotate(n=Count("member", distinct=True))
        .values_list("_join_week", "_active_week", "n")
    }


# --- Community health ---------------------------------------------------------------------------


def health(*, at: datetime, fresh: bool = False) -> Health:
    """The community health index of the last complete week, with its alerts."""
    return _cached(("health",), at, fresh, lambda: _health(at=at))


def _health(*, at: datetime) -> Health:
    today = _business_date(at)
    current_week = week_start_of(today)
    week = current_week - timedelta(weeks=1)
    previous_week = week - timedelta(weeks=1)
    shares_from = today - timedelta(days=7)
    activity = (
        MemberDailyActivity.objects.using(_db())
        .filter(business_date__gte=min(previous_week, shares_from), business_date__lt=today)
        .aggregate(
            week_posts=Coalesce(
                Sum("posts", filter=Q(business_date__gte=week, business_date__lt=current_week)),
                0,
            ),
            previous_week_posts=Coalesce(
                Sum("posts", filter=Q(business_date__gte=previous_week, business_date__lt=week)), 0
            ),
            shares_7d=Coalesce(Sum("shares", filter=Q(business_date__gte=shares_from)), 0),
        )
    )
    silent_since = at - timedelta(days=settings.LOYALTY_HEALTH_SILENT_DAYS)
    members = (
        _population()
        .filter(joined_at__lte=at)
        .alias(_last_interaction=Coalesce("last_interaction_at", "joined_at"))
        .aggregate(
            population=Count("pk"),
            week_population=Count("pk", filter=Q(joined_at__lt=_day_start(current_week))),
            previous_population=Count("pk", filter=Q(joined_at__lt=_day_start(week))),
            silent=Count("pk", filter=Q(lifecycle_stage=LifecycleStage.SILENT)),
            dormant=Count("pk", filter=Q(lifecycle_stage=LifecycleStage.DORMANT)),
            silent_30d=Count("pk", filter=Q(_last_interaction__lte=silent_since)),
        )
    )
    density = (
        Fraction(activity["week_posts"] * 100, members["week_population"])
        if members["week_population"]
        else Fraction(0)
    )
    previous_density = (
        Fraction(activity["previous_week_posts"] * 100, members["previous_population"])
        if members["previous_population"]
        else Fraction(0)
    )
    change = (density - previous_density) / previous_density if previous_density else None
    shares_per_day = Fraction(activity["shares_7d"], 7)
    population = members["population"]
    alerts = (
        _health_alerts(
            change=change,
            shares_per_day=shares_per_day,
            silent_30d=members["silent_30d"],
            population=population,
        )
        if population
        else []
    )
    return Health(
        week_start=week,
        post_density=float(density),
        previous_post_density=float(previous_density),
        post_density_change=None if change is None else float(change),
        shares_per_day=float(shares_per_day),
        silent_count=members["silent"],
        dormant_count=members["dormant"],
        silent_30d_count=members["silent_30d"],
        alerts=alerts,
        population=population,
        posts=activity["week_posts"],
        previous_posts=activity["previous_week_posts"],
        business_date=today,
    )


def _health_alerts(
    *, change: Fraction | None, shares_per_day: Fraction, silent_30d: int, population: int
) -> list[HealthAlert]:
    """The thresholds crossed, compared exactly (settings are decimals, read as fractions)."""
    alerts = []
    drop = Fraction(str(settings.LOYALTY_HEALTH_POST_DENSITY_DROP))
    if change is not None and -change >= drop:
        alerts.append(
            HealthAlert(
                code="post_density_drop",
                message=f"Weekly post density fell {float(-change):.1%} week over week "
                f"(alert at {float(drop):.0%} or more).",
                value=float(-change),
                threshold=float(drop),
            )
        )
    minimum = Fraction(str(settings.LOYALTY_HEALTH_MIN_SHARES_PER_DAY))
    if shares_per_day < minimum:
        alerts.append(
            HealthAlert(
                code="shares_per_day_low",
                message=f"{float(shares_per_day):.2f} shares per day over the last 7 days "
                f"(alert under {float(minimum):g}).",
                value=float(shares_per_day),
                threshold=float(minimum),
            )
        )
    maximum = Fraction(str(settings.LOYALTY_HEALTH_MAX_SILENT_SHARE))
    silent_share = Fraction(silent_30d, population)
    if silent_share > maximum:
        alerts.append(
            HealthAlert(
                code="members_silent_30d",
                message=f"{silent_30d} members ({float(silent_share):.1%}) have not interacted "
                f"for {settings.LOYALTY_HEALTH_SILENT_DAYS} days (alert above "
                f"{float(maximum):.0%}).",
                value=float(silent_share),
                threshold=float(maximum),
            )
        )
    return alerts


# --- Weekly tier movement and points flow -------------------------------------------------------


def _weeks_back(*, weeks: int, at: datetime) -> list[date]:
    current_week = week_start_of(_business_date(at))
    return [current_week - timedelta(weeks=weeks - 1 - index) for index in range(weeks)]


def tier_movement_weekly(*, weeks: int, at: datetime, fresh: bool = False) -> list[WeekMovement]:
    """Promotions and demotions per week over the last ``weeks`` weeks (oldest first)."""
    return _cached(
        ("tier_movement_weekly", weeks), at, fresh, lambda: _tier_movement(weeks=weeks, at=at)
    )


def _tier_movement(*, weeks: int, at: datetime) -> list[WeekMovement]:
    starts = _weeks_back(weeks=weeks, at=at)
    rows = {
        _as_date(week): (promotions, demotions)
        for week, promotions, demotions in TierChange.objects.using(_db())
        .filter(created_at__gte=_day_start(starts[0]), created_at__lte=at, from_tier__isnull=False)
        .order_by()
        .annotate(_week=TruncWeek("created_at", tzinfo=_zone()))
        .values("_week")
        .annotate(
            promotions=Count("pk", filter=Q(to_tier__rank__gt=F("from_tier__rank"))),
            demotions=Count("pk", filter=Q(to_tier__rank__lt=F("from_tier__rank"))),
        )
        .values_list("_week", "promotions", "demotions")
    }
    return [WeekMovement(week, *rows.get(week, (0, 0))) for week in starts]


def points_flow_weekly(*, weeks: int, at: datetime, fresh: bool = False) -> list[WeekPoints]:
    """Points issued, redeemed and expired per week over the last ``weeks`` weeks (oldest first)."""
    return _cached(
        ("points_flow_weekly", weeks), at, fresh, lambda: _points_flow(weeks=weeks, at=at)
    )


def _points_flow(*, weeks: int, at: datetime) -> list[WeekPoints]:
    starts = _weeks_back(weeks=weeks, at=at)
    rows = {
        _as_date(week): (issued, -redeemed, -expired)
        for week, issued, redeemed, expired in PointsEntry.objects.using(_db())
        .filter(
            created_at__gte=_day_start(starts[0]),
            created_at__lte=at,
            kind__in=(EntryKind.EARN, EntryKind.REDEEM, EntryKind.EXPIRE),
        )
        .order_by()
        .annotate(_week=TruncWeek("created_at", tzinfo=_zone()))
        .values("_week")
        .annotate(
            issued=Coalesce(Sum("points", filter=Q(kind=EntryKind.EARN)), 0),
            redeemed=Coalesce(Sum("points", filter=Q(kind=EntryKind.REDEEM)), 0),
            expired=Coalesce(Sum("points", filter=Q(kind=EntryKind.EXPIRE)), 0),
        )
        .values_list("_week", "issued", "redeemed", "expired")
    }
    return [WeekPoints(week, *rows.get(week, (0, 0, 0))) for week in starts]
