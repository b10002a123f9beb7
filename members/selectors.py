"""Reads of members, identities, tags, activity events and metrics, scoped to what the actor
may see."""

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from uuid import UUID
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection
from django.db.models import Count, FilteredRelation, Prefetch, Q, QuerySet, Sum

from core.actors import Actor
from core.db import is_postgres
from core.exceptions import NotFoundError
from members.models import ActivityEvent, Identity, Member, MemberDailyActivity, MemberTag
from rewards.models import EntryKind, PointsEntry
from rewards.services.earning import business_date_of
from tiers.evaluation import METRICS


def member_list_for_actor(*, actor: Actor) -> QuerySet[Member]:
    """Members the actor may see: a member only themselves, operators and partners everyone."""
    queryset = Member.objects.prefetch_related(
        Prefetch("identities", queryset=Identity.objects.order_by("provider", "value"))
    )
    if actor.is_member:
        return queryset.filter(pk=actor.member_id)
    return queryset


def member_get_for_actor(
    *, actor: Actor, member_id: UUID | str, with_identities: bool = True
) -> Member:
    """One member the actor may see (``with_identities=False`` skips the identities prefetch
    for callers that only need the member row).

    :raises NotFoundError: when it does not exist or the actor may not see it (never 403: BOLA).
    """
    queryset = member_list_for_actor(actor=actor)
    if not with_identities:
        queryset = queryset.prefetch_related(None)
    try:
        return queryset.get(pk=member_id)
    except (Member.DoesNotExist, ValueError):
        raise NotFoundError("No member with this id.") from None


def member_tags_list(
    *, member: Member, at: datetime, namespace: str | None = None
) -> QuerySet[MemberTag]:
    """The member's tags that have not expired at ``at``, by namespace and key."""
    queryset = MemberTag.objects.filter(member=member).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=at)
    )
    if namespace is not None:
        queryset = queryset.filter(namespace=namespace)
    return queryset.order_by("namespace", "key")


def identity_list(*, member: Member) -> QuerySet[Identity]:
    return Identity.objects.filter(member=member).order_by("provider", "value")


def member_ids_by_external_id(*, external_ids: Iterable[str]) -> dict[str, UUID]:
    """Map external ids to member ids in one query; erased members are not addressable."""
    return dict(
        Member.objects.filter(
            external_id__in=list(external_ids), erased_at__isnull=True
        ).values_list("external_id", "pk")
    )


# --- Activity events -----------------------------------------------------------------------------


def activity_event_list(*, member: Member) -> QuerySet[ActivityEvent]:
    """The member's activity events (callers order them; the API newest first)."""
    return ActivityEvent.objects.filter(member=member)


# --- Metrics -------------------------------------------------------------------------------------

METRIC_NAMES = METRICS


@dataclass(frozen=True, slots=True)
class MemberMetrics:
    """A member's default metrics (SPEC §2) over a window of business days ending on a date.

    - ``interactions``: events whose type counts as an interaction (all but login and purchase
      by default), the daily check-in included; ``active_days``: days with an interaction;
    - ``posts``, ``shares``, ``purchases`` (counts), ``purchase_amount`` (sum);
    - ``qualifying_points``: points earned in the window (any earn entry, reversed ones not),
      not reduced by spending;
    - ``checkin_streak``: consecutive days with a check-in ending on the last day, or the day
      before it when the member has not checked in yet that day; counted within the window;
    - ``tenure_days``: days since joining (business days, 0 on the day of joining).
    """

    interactions: int = 0
    active_days: int = 0
    posts: int = 0
    shares: int = 0
    purchases: int = 0
    purchase_amount: Decimal = Decimal("0.00")
    qualifying_points: int = 0
    checkin_streak: int = 0
    tenure_days: int = 0

    def value(self, metric: str) -> int | Decimal:
        """A metric by its name in tier rules (one of ``METRIC_NAMES``)."""
        if metric not in METRIC_NAMES:
            raise KeyError(metric)
        return getattr(self, metric)  # type: ignore[no-any-return]


def member_metrics_list(
    *, member_ids: Collection[UUID], as_of: date, window_days: int
) -> dict[UUID, MemberMetrics]:
    """The default metrics of many members over the ``window_days`` business days ending on
    ``as_of`` (inclusive), set-based: three queries whatever the number of members (the rollup
    aggregate, the ledger aggregate, the check-in streaks). Unknown ids are left out."""
    if window_days < 1:
        raise ValueError("window_days must be at least 1.")
    ids = list(member_ids)
    first_day = as_of - timedelta(days=window_days - 1)
    rows = (
        Member.objects.filter(pk__in=ids)
        # Join only the window's rollup rows (the unique (member, business_date) index).
        .annotate(
            window_activity=FilteredRelation(
                "daily_activity",
                condition=Q(
                    daily_activity__business_date__gte=first_day,
                    daily_activity__business_date__lte=as_of,
                ),
            )
        )
        .values("pk", "joined_at")
        .annotate(
            interactions=Sum("window_activity__interactions"),
            active_days=Count("window_activity", filter=Q(window_activity__interactions__gt=0)),
            posts=Sum("window_activity__posts"),
            shares=Sum("window_activity__shares"),
            purchases=Sum("window_activity__purchases"),
            purchase_amount=Sum("window_activity__purchase_amount"),
        )
        .order_by()
    )
    points = qualifying_points_by_member(member_ids=ids, first_day=first_day, last_day=as_of)
    streaks = checkin_streaks_by_member(member_ids=ids, first_day=first_day, last_day=as_of)
    return {
        row["pk"]: MemberMetrics(
            interactions=row["interactions"] or 0,
            active_days=row["active_days"],
            posts=row["posts"] or 0,
            shares=row["shares"] or 0,
            purchases=row["purchases"] or 0,
            purchase_amount=(row["purchase_amount"] or Decimal(0)).quantize(Decimal("0.01")),
            qualifying_points=points.get(row["pk"], 0),
            checkin_streak=streaks.get(row["pk"], 0),
            tenure_days=max(0, (as_of - business_date_of(row["joined_at"])).days),
        )
        for row in rows
    }


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=ZoneInfo(settings.LOYALTY_BUSINESS_TIME_ZONE))


def qualifying_points_by_member(
    *, member_ids: list[UUID], first_day: date, last_day: date
) -> dict[UUID, int]:
    """Points earned per member in the business days (earn entries, less their reversals), like
    ``rewards.selectors.qualifying_points``, for many members in one query."""
    rows = (
        PointsEntry.objects.filter(
            member_id__in=member_ids,
            kind=EntryKind.EARN,
            created_at__gte=_day_start(first_day),
            created_at__lt=_day_start(last_day + timedelta(days=1)),
        )
        .values("member_id")
        .annotate(earned=Sum("points"), reversed=Sum("reversed_by__points"))
        .order_by()
    )
    return {row["member_id"]: row["earned"] + (row["reversed"] or 0) for row in rows}


def checkin_streaks_by_member(
    *, member_ids: list[UUID], first_day: date, last_day: date
) -> dict[UUID, int]:
    """Consecutive check-in days ending on ``last_day`` (or the day before), per member.

    Gaps and islands: numbering a member's check-in days in date order, ``day number - row
    number`` is the same within a run of consecutive days and grows at each gap, so the latest
    run is the rows sharing the largest value.
    """
    if not member_ids:
        return {}
    member_field = MemberDailyActivity._meta.get_field("member")
    day_number = (
        "(business_date - DATE '2000-01-01')"
        if is_postgres()
        else "CAST(julianday(business_date) AS INTEGER)"
    )
    table = connection.ops.quote_name(MemberDailyActivity._meta.db_table)
    placeholders = ", ".join(["%s"] * len(member_ids))
    sql = f"""
        SELECT member_id, MAX(business_date), SUM(CASE WHEN run = last_run THEN 1 ELSE 0 END)
        FROM (
            SELECT member_id, business_date, run, MAX(run) OVER (PARTITION BY member_id) AS last_run
            FROM (
                SELECT member_id, business_date,
                       {day_number}
                       - ROW_NUMBER() OVER (PARTITION BY member_id ORDER BY business_date) AS run
                FROM {table}
                WHERE member_id IN ({placeholders}) AND checkins > 0
                  AND business_date >= %s AND business_date <= %s
            ) numbered
        ) runs
        GROUP BY member_id"""  # noqa: S608
    params = [member_field.get_db_prep_value(pk, connection) for pk in member_ids]
    params += [connection.ops.adapt_datefield_value(day) for day in (first_day, last_day)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    streaks = {}
    for raw_member_id, raw_last_day, length in rows:
        member_id = member_field.to_python(raw_member_id)
        latest = (
            raw_last_day if isinstance(raw_last_day, date) else date.fromisoformat(raw_last_day)
        )
        if latest >= last_day - timedelta(days=1):
            streaks[member_id] = int(length)
    return streaks
