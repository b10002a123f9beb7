"""Assessing many members at once, set-based: the shared code path of the population job, a
single member's reassessment and the simulation.

For a set of members it reads their tier state and every metric the rules need in one aggregate
query over the daily rollups (plus one query per ledger or streak metric, one for
certifications, one for probations), evaluates each member with the pure ``tiers.evaluation``,
and writes the changed members with one compare-and-set ``UPDATE ... FROM (VALUES ...)``, one
bulk insert of history rows and one of outbox events. No query runs per member.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection
from django.db.models import Count, FilteredRelation, Q, QuerySet, Sum

from core.db import require_transaction, rows_insert
from core.events import DomainEvent, domain_events_record
from core.read_cache import member_reads_changed
from members.models import Member
from members.selectors import checkin_streaks_by_member, qualifying_points_by_member
from rewards.services.earning import business_date_of
from rewards.services.honors import REACHED_TIER, badges_award_automatic
from tiers.evaluation import (
    GRACE_EXPIRED,
    NOMINATION_CONFIRMED,
    NOMINATION_ROLLED_BACK,
    PIN_EXPIRED,
    Decision,
    Facts,
    MetricKey,
    Number,
    Rules,
    TierState,
    evaluate,
    progress,
)
from tiers.models import Nomination, NominationStatus, TierChange
from tiers.selectors import certifications_held, members_on_probation_due

# Metrics summed from the daily rollup column of the same name.
ROLLUP_SUMS = {
    "interactions": "interactions",
    "posts": "posts",
    "shares": "shares",
    "purchases": "purchases",
    "purchase_amount": "purchase_amount",
}
_STATE_FIELDS = (
    "id",
    "external_id",
    "joined_at",
    "tier_id",
    "tier_grace_until",
    "tier_pin_id",
    "tier_pinned_until",
    "tier_probation_until",
    "tier_version",
)


@dataclass(frozen=True, slots=True)
class Assessed:
    member_id: UUID
    external_id: str
    version: int
    before: TierState
    facts: Facts
    decision: Decision


@dataclass(slots=True)
class AssessmentCounts:
    """What an assessment of a set of members found and did."""

    assessed: int = 0
    changed: int = 0
    grace_started: int = 0
    confirmed: int = 0
    rolled_back: int = 0
    skipped_concurrent: int = 0
    matrix: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )

    def as_result(self) -> dict[str, Any]:
        return {
            "matrix": {source: dict(row) for source, row in self.matrix.items()},
            "counts": {
                "assessed": self.assessed,
                "changed": self.changed,
                "grace_started": self.grace_started,
                "confirmed": self.confirmed,
                "rolled_back": self.rolled_back,
                "skipped_concurrent": self.skipped_concurrent,
            },
        }


def members_in_range(*, lower: UUID | None, upper: UUID | None) -> QuerySet[Member]:
    """The members a chunk covers: ids in ``[lower, upper)``, erased members left out."""
    queryset = Member.objects.filter(erased_at__isnull=True)
    if lower is not None:
        queryset = queryset.filter(pk__gte=lower)
    if upper is not None:
        queryset = queryset.filter(pk__lt=upper)
    return queryset


def members_assess(*, members: QuerySet[Member], rules: Rules, at: datetime) -> list[Assessed]:
    """Evaluate every member of ``members`` at ``at`` under ``rules``; writes nothing."""
    as_of = business_date_of(at)
    keys = rules.metric_keys()
    rows = list(_state_and_rollup_metrics(members=members, keys=keys, as_of=as_of))
    if not rows:
        return []
    member_ids = [row["id"] for row in rows]
    extra = _ledger_and_streak_metrics(member_ids=member_ids, keys=keys, as_of=as_of)
    codes = rules.certifications()
    held = certifications_held(member_ids=member_ids, codes=codes, at=at) if codes else {}
    on_probation = [row["id"] for row in rows if row["tier_probation_until"] is not None]
    fallbacks = members_on_probation_due(member_ids=on_probation) if on_probation else {}
    assessed = []
    for row in rows:
        member_id = row["id"]
        metrics: dict[MetricKey, Number] = {
            key: row[metric_alias(key)] or 0 for key in keys if metric_alias(key) in row
        }
        for key in keys:
            if key in extra:
                metrics[key] = extra[key].get(member_id, 0)
        if ("tenure_days", None) in keys:
            metrics[("tenure_days", None)] = max(
                0, (as_of - business_date_of(row["joined_at"])).days
            )
        for key in keys:
            if key[0] == "purchase_amount":
                metrics[key] = Decimal(metrics[key]).quantize(Decimal("0.01"))
        state = TierState(
            tier=row["tier_id"],
            grace_until=row["tier_grace_until"],
            pin=row["tier_pin_id"],
            pinned_until=row["tier_pinned_until"],
            probation_until=row["tier_probation_until"],
            probation_fallback=fallbacks.get(member_id),
        )
        facts = Facts(metrics=metrics, certifications=held.get(member_id, frozenset()))
        assessed.append(
            Assessed(
                member_id=member_id,
                external_id=row["external_id"],
                version=row["tier_version"],
                before=state,
                facts=facts,
                decision=evaluate(state=state, facts=facts, rules=rules, at=at),
            )
        )
    return assessed


def metric_alias(key: MetricKey) -> str:
    """The column name of a metric in the assessment queries (Python and SQL paths)."""
    metric, window = key
    return f"m_{metric}_{window or 0}"


def _state_and_rollup_metrics(
    *, members: QuerySet[Member], keys: frozenset[MetricKey], as_of: date
) -> QuerySet[Member, dict[str, Any]]:
    """One aggregate query: each member's tier state and the rollup metrics of every window,
    joining only the rollup rows of the widest window (the (member, business_date) index)."""
    rollup_keys = [
        (metric, window)
        for metric, window in keys
        if window is not None and (metric in ROLLUP_SUMS or metric == "active_days")
    ]
    queryset = members.order_by()
    if not rollup_keys:
        return queryset.values(*_STATE_FIELDS)
    widest = max(window for _, window in rollup_keys)
    queryset = queryset.annotate(
        window_activity=FilteredRelation(
            "daily_activity",
            condition=Q(
                daily_activity__business_date__gt=as_of - timedelta(days=widest),
                daily_activity__business_date__lte=as_of,
            ),
        )
    )
    aggregates: dict[str, Any] = {}
    for metric, window in rollup_keys:
        in_window = (
            Q(window_activity__business_date__gt=as_of - timedelta(days=window))
            if window < widest
            else None
        )
        if metric == "active_days":
            active = Q(window_activity__interactions__gt=0)
            aggregates[metric_alias((metric, window))] = Count(
                "window_activity", filter=active & in_window if in_window else active
            )
        else:
            aggregates[metric_alias((metric, window))] = Sum(
                f"window_activity__{ROLLUP_SUMS[metric]}", filter=in_window
            )
    return queryset.values(*_STATE_FIELDS).annotate(**aggregates)


def _ledger_and_streak_metrics(
    *, member_ids: list[UUID], keys: frozenset[MetricKey], as_of: date
) -> dict[MetricKey, dict[UUID, int]]:
    """Qualifying points (from the ledger) and check-in streaks, one query per window used."""
    values: dict[MetricKey, dict[UUID, int]] = {}
    for metric, window in keys:
        if window is None:
            continue
        first_day = as_of - timedelta(days=window - 1)
        if metric == "qualifying_points":
            values[(metric, window)] = qualifying_points_by_member(
                member_ids=member_ids, first_day=first_day, last_day=as_of
            )
        elif metric == "checkin_streak":
            values[(metric, window)] = checkin_streaks_by_member(
                member_ids=member_ids, first_day=first_day, last_day=as_of
            )
    return values


# --- Writing the decisions --------------------------------------------------------------------


def _member_table() -> str:
    return connection.ops.quote_name(Member._meta.db_table)


def decisions_apply(
    *,
    assessed: Sequence[Assessed],
    rules: Rules,
    at: datetime,
    actor_label: str,
    job_id: UUID | None = None,
) -> AssessmentCounts:
    """Write what changed, in the caller's transaction: member tier state (compare-and-set on
    ``tier_version``), history rows, nomination outcomes and outbox events.

    A member whose tier state changed since it was read (a promotion committed meanwhile) is
    skipped and counted; their next assessment decides again. Re-running the same job chunk
    writes no second history row (unique ``(job, member)``) and no second event (dedupe keys).
    """
    require_transaction()
    counts = AssessmentCounts()
    changes = [item for item in assessed if item.decision.changes(item.before)]
    written = _states_write(changes, at, job_id) if changes else set()
    member_reads_changed(written)
    history: list[TierChange] = []
    events: list[DomainEvent] = []
    confirmed: list[UUID] = []
    rolled_back: list[UUID] = []
    warning_days = timedelta(days=settings.LOYALTY_TIER_DOWNGRADE_WARNING_DAYS)
    for item in assessed:
        decision = item.decision
        counts.assessed += 1
        if item.member_id not in written and decision.changes(item.before):
            counts.skipped_concurrent += 1
            counts.matrix[item.before.tier][item.before.tier] += 1
            continue
        counts.matrix[item.before.tier][decision.state.tier] += 1
        if decision.reason is not None:
            history.append(_history_row(item, rules, at, actor_label, job_id))
            if decision.state.tier != item.before.tier:
                counts.changed += 1
                events.append(_tier_changed_event(item, rules, at, job_id))
            if decision.reason == NOMINATION_CONFIRMED:
                confirmed.append(item.member_id)
            elif decision.reason == NOMINATION_ROLLED_BACK:
                rolled_back.append(item.member_id)
        warning = _will_downgrade_warning(item, rules, at, warning_days)
        if warning is not None:
            counts.grace_started += int(decision.grace_started)
            events.append(warning)
    if history:
        rows_insert(history, on_conflict="ON CONFLICT DO NOTHING" if job_id is not None else "")
    badges_award_automatic(
        member_ids=[r.member_id for r in history], at=at, rule_kinds=(REACHED_TIER,)
    )
    if confirmed:
        Nomination.objects.filter(
            member_id__in=confirmed, status=NominationStatus.PROBATION
        ).update(status=NominationStatus.CONFIRMED, decided_at=at)
    if rolled_back:
        Nomination.objects.filter(
            member_id__in=rolled_back, status=NominationStatus.PROBATION
        ).update(status=NominationStatus.ROLLED_BACK, decided_at=at)
    counts.confirmed, counts.rolled_back = len(confirmed), len(rolled_back)
    if events:
        domain_events_record(events=events, at=at)
    return counts


def _states_write(changes: Sequence[Assessed], at: datetime, job_id: UUID | None) -> set[UUID]:
    """One ``UPDATE ... FROM (VALUES ...) RETURNING`` for all changed members, each guarded by the
    ``tier_version`` read with it. Returns the ids actually written."""
    postgres = connection.vendor == "postgresql"
    row = (
        "(%s::uuid, %s::integer, %s::varchar, %s::boolean, %s::timestamptz, %s::varchar, "
        "%s::timestamptz, %s::timestamptz)"
        if postgres
        else "(%s, %s, %s, %s, %s, %s, %s, %s)"
    )
    pk_field = Member._meta.pk
    ops = connection.ops
    params: list[Any] = []
    for item in changes:
        state = item.decision.state
        params.extend(
            [
                pk_field.get_db_prep_value(item.member_id, connection),
                item.version,
                state.tier,
                state.tier != item.before.tier,
                ops.adapt_datetimefield_value(state.grace_until),
                state.pin,
                ops.adapt_datetimefield_value(state.pinned_until),
                ops.adapt_datetimefield_value(state.probation_until),
            ]
        )
    table = _member_table()
    # A member this job has decided already is never decided again by it, even if a chunk ran
    # twice: its second decision would start from the first one's result.
    guard, guard_params = "", []
    if job_id is not None:
        history = connection.ops.quote_name(TierChange._meta.db_table)
        guard = (
            f" AND NOT EXISTS (SELECT 1 FROM {history} h "  # noqa: S608 - model table names
            f"WHERE h.job_id = %s AND h.member_id = {table}.id)"
        )
        guard_params = [TierChange._meta.get_field("job").get_db_prep_value(job_id, connection)]
    sql = (
        f"UPDATE {table} SET tier_code = v.column3, "  # noqa: S608 - names from the model
        f"tier_since = CASE WHEN v.column4 THEN %s ELSE {table}.tier_since END, "
        "tier_grace_until = v.column5, tier_pin_code = v.column6, tier_pinned_until = v.column7, "
        f"tier_probation_until = v.column8, tier_version = {table}.tier_version + 1, "
        "updated_at = %s "
        f"FROM (VALUES {', '.join([row] * len(changes))}) AS v "
        f"WHERE {table}.id = v.column1 AND {table}.tier_version = v.column2{guard} "
        f"RETURNING {table}.id"
    )
    stamp = ops.adapt_datetimefield_value(at)
    with connection.cursor() as cursor:
        cursor.execute(sql, [stamp, stamp, *params, *guard_params])
        return {pk_field.to_python(value) for (value,) in cursor.fetchall()}


def _history_row(
    item: Assessed, rules: Rules, at: datetime, actor_label: str, job_id: UUID | None
) -> TierChange:
    decision = item.decision
    return TierChange(
        member_id=item.member_id,
        from_tier_id=item.before.tier,
        to_tier_id=decision.state.tier,
        reason=decision.reason,
        actor=actor_label,
        rule_set_id=rules.rule_set_id,
        job_id=job_id,
        pinned_until=decision.state.pinned_until,
        details={
            "rule_version": rules.version,
            "checks": [check.as_dict() for check in decision.checks],
            **(
                {"grace_until": _utc_iso(item.before.grace_until)}
                if decision.reason in (GRACE_EXPIRED, PIN_EXPIRED) and item.before.grace_until
                else {}
            ),
        },
        created_at=at,
    )


def _utc_iso(moment: datetime) -> str:
    """In UTC whatever the zone of ``at``: a grace end computed now and the same one read back
    from the database give the same dedupe key (and the SQL path renders it the same way)."""
    return moment.astimezone(UTC).isoformat()


def _tier_changed_event(
    item: Assessed, rules: Rules, at: datetime, job_id: UUID | None
) -> DomainEvent:
    payload = {
        "member_id": str(item.member_id),
        "external_id": item.external_id,
        "from_tier": item.before.tier,
        "to_tier": item.decision.state.tier,
        "reason": item.decision.reason,
        "rule_version": rules.version,
        "changed_at": at.isoformat(),
    }
    if job_id is None:
        return DomainEvent("member.tier_changed", str(item.member_id), payload, at)
    return DomainEvent(
        "member.tier_changed",
        str(item.member_id),
        payload,
        at,
        dedupe_key=f"job:{job_id}:{item.member_id}",
    )


def _will_downgrade_warning(
    item: Assessed, rules: Rules, at: datetime, warning_days: timedelta
) -> DomainEvent | None:
    """A ``tier.will_downgrade`` when grace starts, and again in its last days (each once)."""
    grace_until = item.decision.state.grace_until
    if grace_until is None or item.decision.state.tier != item.before.tier:
        return None
    if item.decision.grace_started:
        return _will_downgrade_event(item, rules, at, final=False)
    if at < grace_until <= at + warning_days:
        return _will_downgrade_event(item, rules, at, final=True)
    return None


def _will_downgrade_event(
    item: Assessed, rules: Rules, at: datetime, *, final: bool
) -> DomainEvent:
    state = item.decision.state
    assert state.grace_until is not None  # noqa: S101 - the caller checked
    lower = rules.below(state.tier)
    payload = {
        "member_id": str(item.member_id),
        "external_id": item.external_id,
        "tier": state.tier,
        "downgrade_to": lower.code if lower else None,
        "grace_until": _utc_iso(state.grace_until),
        "pinned_until": _utc_iso(state.pinned_until) if state.pinned_until else None,
        # What it takes to remain: the maintenance requirements and where the member stands.
        "requirements": [check.as_dict() for check in item.decision.checks],
    }
    stage = "final" if final else "start"
    return DomainEvent(
        "tier.will_downgrade",
        str(item.member_id),
        payload,
        at,
        dedupe_key=f"{item.member_id}:{_utc_iso(state.grace_until)}:{stage}",
    )


# --- One member's standing (a read: the progress view) ------------------------------------------


@dataclass(frozen=True, slots=True)
class TierStanding:
    """Where a member stands at ``at``: their tier state, the next tier's entry checks and what
    it takes to keep the current tier, under the rules in force."""

    member_id: UUID
    tier: str
    since: datetime
    grace_until: datetime | None
    pin: str | None
    pinned_until: datetime | None
    probation_until: datetime | None
    rule_version: int | None
    next_tier: str | None
    next_tier_nomination_only: bool
    requirements: tuple[Any, ...]
    keep_requirements: tuple[Any, ...]
    at_risk: bool


def member_tier_standing(*, member: Member, rules: Rules, at: datetime) -> TierStanding:
    """The progress view of one member, by the assessment's own metric code (constant queries)."""
    assessed = members_assess(members=Member.objects.filter(pk=member.pk), rules=rules, at=at)
    if assessed:
        state, facts = assessed[0].before, assessed[0].facts
    else:  # an erased member is not assessed: show the stored state, nothing to progress on
        state, facts = TierState(tier=member.tier_id), Facts()
    view = progress(state=state, facts=facts, rules=rules)
    return TierStanding(
        member_id=member.pk,
        tier=member.tier_id,
        since=member.tier_since,
        grace_until=member.tier_grace_until,
        pin=member.tier_pin_id,
        pinned_until=member.tier_pinned_until,
        probation_until=member.tier_probation_until,
        rule_version=rules.version,
        next_tier=view.next_tier,
        next_tier_nomination_only=view.next_tier_nomination_only,
        requirements=view.next_tier_checks,
        keep_requirements=view.keep_checks,
        at_risk=view.at_risk,
    )
