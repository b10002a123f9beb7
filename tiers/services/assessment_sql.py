"""The population path on PostgreSQL: one rule version compiled to SQL, so a chunk of the
population job is measured, decided and written in one statement, with no per-member Python.

``tiers.evaluation`` stays the definition of a decision (the explanation the API shows, a single
member's reassessment, SQLite). This module compiles the same rules into SQL over a ``facts``
relation (the tier state and every metric the rules read, one row per member): the same branches
in the same order, the same explanation JSON, event payloads and dedupe keys. The tests hold the
two to identical outcomes (``tests/tiers/test_assessment_sql.py``), on hand-picked and generated
cases.

The statement's steps, as CTEs: the chunk's members and their metrics (one aggregate per source:
daily rollups, ledger, check-in runs, certifications, probations) -> the decision -> a
compare-and-set update of the changed members -> history rows, outbox events, nomination outcomes
and reached-tier badges for what was written -> counts for the job's report.
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction

from core.db import require_transaction
from core.events import OUTBOX_SKIP_DUPLICATE
from core.models import OutboxEvent
from members.models import Member, MemberDailyActivity
from rewards.models import CertificationGrant, MemberBadge, PointsEntry
from rewards.services.earning import business_date_of
from rewards.services.honors import (
    AUTOMATIC_ACTOR,
    BADGE_AWARDED_EVENT,
    REACHED_TIER,
    reached_tier_badges,
)
from tiers.evaluation import (
    GRACE_EXPIRED,
    NOMINATION_CONFIRMED,
    NOMINATION_ROLLED_BACK,
    PIN_EXPIRED,
    REASSESSMENT,
    Requirement,
    Rules,
    json_number,
)
from tiers.models import Nomination, TierChange
from tiers.selectors import business_day_end
from tiers.services.assessment import ROLLUP_SUMS, AssessmentCounts, metric_alias

# The columns of ``facts`` besides the metrics and certifications.
STATE_COLUMNS = (
    ("id", "uuid"),
    ("external_id", "varchar"),
    ("tier_code", "varchar"),
    ("tier_grace_until", "timestamptz"),
    ("tier_pin_code", "varchar"),
    ("tier_pinned_until", "timestamptz"),
    ("tier_probation_until", "timestamptz"),
    ("tier_version", "integer"),
    ("fallback", "varchar"),
)
# A UUIDv7 per row (time-ordered, like the ids Python gives outbox rows): the millisecond clock
# in the first 48 bits of a random UUID, version bits set to 7.
UUID7_SQL = (
    "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing "
    "substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3) "
    "FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid"
)


def iso_sql(expression: str) -> str:
    """SQL rendering a ``timestamptz`` like Python's ``datetime.isoformat()`` in UTC (no
    fraction when the microseconds are zero): dedupe keys and payloads must match the Python
    path's to the character."""
    utc = f"({expression} AT TIME ZONE 'UTC')"
    return (
        f"(to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN "
        f"mod(extract(microseconds FROM {utc})::bigint, 1000000) <> 0 "
        f"THEN to_char({utc}, '.US') ELSE '' END || '+00:00')"
    )


def _execute(sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Run a compiled statement with two planner settings for its transaction. The planner
    cannot estimate these joins of per-member aggregates (its guesses ran from one row to
    millions): JIT compiled plans for seconds, and nested loops re-ran a chunk's whole rollup
    aggregate once per member (minutes per chunk at 1,000,000 members). Every join here is
    between sets of about a chunk's size, which hash joins handle in one pass."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('jit', 'off', true), set_config('enable_nestloop', 'off', true)"
        )
        cursor.execute(sql, params)
        return cursor.fetchall()


def _table(model: Any) -> str:
    return connection.ops.quote_name(model._meta.db_table)


@dataclass
class _Query:
    """SQL text built up with named parameters."""

    params: dict[str, Any] = field(default_factory=dict)

    def p(self, value: Any, cast: str | None = None) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"%({name})s" + (f"::{cast}" if cast else "")


@dataclass(frozen=True, slots=True)
class Scope:
    """Which members: an id range ``[lower, upper)`` (a chunk) or a list of ids."""

    lower: UUID | None = None
    upper: UUID | None = None
    ids: Sequence[UUID] | None = None

    def where(self, q: _Query, column: str) -> str:
        if self.ids is not None:
            return f"{column} = ANY({q.p(list(self.ids), 'uuid[]')})"
        parts = ["TRUE"]
        if self.lower is not None:
            parts.append(f"{column} >= {q.p(self.lower, 'uuid')}")
        if self.upper is not None:
            parts.append(f"{column} < {q.p(self.upper, 'uuid')}")
        return " AND ".join(parts)


class RulesSql:
    """One rule version at one instant, compiled to SQL fragments over ``facts``."""

    def __init__(self, rules: Rules, at: datetime, q: _Query) -> None:
        self.rules, self.at, self.q = rules, at, q
        self.as_of: date = business_date_of(at)
        self.keys = sorted(rules.metric_keys(), key=lambda key: (key[0], key[1] or 0))
        self.codes = sorted(rules.certifications())
        self.at_sql = q.p(at, "timestamptz")

    # --- Facts ---------------------------------------------------------------------------------

    def cert_alias(self, code: str) -> str:
        return f"c_{self.codes.index(code)}"

    def facts_columns(self) -> list[tuple[str, str]]:
        """Name and SQL type of every column of ``facts``."""
        return [
            *STATE_COLUMNS,
            *((metric_alias(key), "numeric") for key in self.keys),
            *((self.cert_alias(code), "boolean") for code in self.codes),
        ]

    def facts_from_database(self, scope: Scope) -> str:
        """CTEs ending in ``facts`` for the members of ``scope`` (erased members left out)."""
        q, as_of = self.q, self.as_of
        member, rollup = _table(Member), _table(MemberDailyActivity)
        ctes = [
            "chunk AS MATERIALIZED (SELECT m.id, m.external_id, m.joined_at, m.tier_code, "
            "m.tier_grace_until, m.tier_pin_code, m.tier_pinned_until, m.tier_probation_until, "
            f"m.tier_version FROM {member} m WHERE m.erased_at IS NULL "
            f"AND {scope.where(q, 'm.id')})"
        ]
        joins, columns = [], []
        rollup_keys = [
            (metric, window)
            for metric, window in self.keys
            if window is not None and (metric in ROLLUP_SUMS or metric == "active_days")
        ]
        if rollup_keys:
            widest = max(window for _, window in rollup_keys)
            sums = []
            for metric, window in rollup_keys:
                since = q.p(as_of - timedelta(days=window), "date")
                if metric == "active_days":
                    sums.append(
                        f"COUNT(*) FILTER (WHERE d.interactions > 0 AND d.business_date > {since})"
                    )
                else:
                    sums.append(f"SUM(d.{metric}) FILTER (WHERE d.business_date > {since})")
                sums[-1] += f" AS {metric_alias((metric, window))}"
            ctes.append(
                f"rollup AS (SELECT d.member_id, {', '.join(sums)} FROM {rollup} d "
                f"WHERE {scope.where(q, 'd.member_id')} "
                f"AND d.business_date > {q.p(as_of - timedelta(days=widest), 'date')} "
                f"AND d.business_date <= {q.p(as_of, 'date')} GROUP BY d.member_id)"
            )
            joins.append("LEFT JOIN rollup ON rollup.member_id = c.id")
            columns.extend(
                f"COALESCE(rollup.{metric_alias(key)}, 0) AS {metric_alias(key)}"
                for key in rollup_keys
            )
        point_windows = sorted(w for m, w in self.keys if m == "qualifying_points" and w)
        if point_windows:
            # Earn entries of the business days, less their reversals (one reversal per entry).
            entries = _table(PointsEntry)
            sums = []
            for window in point_windows:
                since = q.p(business_day_end(as_of - timedelta(days=window)), "timestamptz")
                in_window = f"FILTER (WHERE e.created_at >= {since})"
                sums.append(
                    f"SUM(e.points) {in_window} + COALESCE(SUM(r.points) {in_window}, 0) "
                    f"AS {metric_alias(('qualifying_points', window))}"
                )
            first = business_day_end(as_of - timedelta(days=point_windows[-1]))
            # Reversals post to their entry's member: read the chunk's once (materialised, so
            # the join below hashes them rather than probing the member index per entry).
            ctes.append(
                f"reversals AS MATERIALIZED (SELECT r.reverses_id, r.points FROM {entries} r "
                f"WHERE {scope.where(q, 'r.member_id')} AND r.reverses_id IS NOT NULL)"
            )
            ctes.append(
                f"points AS (SELECT e.member_id, {', '.join(sums)} FROM {entries} e "
                "LEFT JOIN reversals r ON r.reverses_id = e.id "
                f"WHERE {scope.where(q, 'e.member_id')} AND e.kind = 'earn' "
                f"AND e.created_at >= {q.p(first, 'timestamptz')} "
                f"AND e.created_at < {q.p(business_day_end(as_of), 'timestamptz')} "
                "GROUP BY e.member_id)"
            )
            joins.append("LEFT JOIN points ON points.member_id = c.id")
            columns.extend(
                f"COALESCE(points.{metric_alias(('qualifying_points', w))}, 0) "
                f"AS {metric_alias(('qualifying_points', w))}"
                for w in point_windows
            )
        for window in sorted(w for m, w in self.keys if m == "checkin_streak" and w):
            # The latest run of consecutive check-in days (gaps and islands), counted when it
            # reaches the assessment day or the day before.
            name = f"streak_{window}"
            ctes.append(
                f"{name} AS (SELECT member_id, MAX(business_date) AS last_day, "
                "COUNT(*) FILTER (WHERE run = last_run) AS length FROM ("
                "SELECT member_id, business_date, run, MAX(run) OVER (PARTITION BY member_id) "
                "AS last_run FROM (SELECT member_id, business_date, "
                "(business_date - DATE '2000-01-01') - ROW_NUMBER() OVER "
                f"(PARTITION BY member_id ORDER BY business_date) AS run FROM {rollup} "
                f"WHERE {scope.where(q, 'member_id')} AND checkins > 0 "
                f"AND business_date >= {q.p(as_of - timedelta(days=window - 1), 'date')} "
                f"AND business_date <= {q.p(as_of, 'date')}) numbered) runs "
                "GROUP BY member_id)"
            )
            joins.append(f"LEFT JOIN {name} ON {name}.member_id = c.id")
            columns.append(
                f"CASE WHEN {name}.last_day >= {q.p(as_of - timedelta(days=1), 'date')} "
                f"THEN {name}.length ELSE 0 END AS {metric_alias(('checkin_streak', window))}"
            )
        if ("tenure_days", None) in self.keys:
            zone = q.p(settings.LOYALTY_BUSINESS_TIME_ZONE, "text")
            columns.append(
                f"GREATEST(0, {q.p(as_of, 'date')} - (c.joined_at AT TIME ZONE {zone})::date) "
                f"AS {metric_alias(('tenure_days', None))}"
            )
        if self.codes:
            at = self.at_sql
            ctes.append(
                "certified AS (SELECT g.member_id, "
                + ", ".join(
                    f"bool_or(g.certification_id = {q.p(code, 'text')}) AS {self.cert_alias(code)}"
                    for code in self.codes
                )
                + f" FROM {_table(CertificationGrant)} g WHERE {scope.where(q, 'g.member_id')} "
                f"AND g.certification_id = ANY({q.p(self.codes, 'text[]')}) "
                f"AND g.granted_at <= {at} AND (g.expires_at IS NULL OR g.expires_at > {at}) "
                f"AND (g.revoked_at IS NULL OR g.revoked_at > {at}) GROUP BY g.member_id)"
            )
            joins.append("LEFT JOIN certified ON certified.member_id = c.id")
            columns.extend(
                f"COALESCE(certified.{self.cert_alias(code)}, FALSE) AS {self.cert_alias(code)}"
                for code in self.codes
            )
        ctes.append(
            f"fallbacks AS (SELECT n.member_id, n.from_tier_id FROM {_table(Nomination)} n "
            f"WHERE n.status = 'probation' AND {scope.where(q, 'n.member_id')})"
        )
        joins.append("LEFT JOIN fallbacks ON fallbacks.member_id = c.id")
        ordered = {column.rsplit(" AS ", 1)[1]: column for column in columns}
        # A metric no source computes is 0, like a metric missing from ``Facts``.
        metric_columns = [
            ordered.get(metric_alias(key), f"0 AS {metric_alias(key)}") for key in self.keys
        ]
        cert_columns = [ordered[self.cert_alias(code)] for code in self.codes]
        ctes.append(
            "facts AS (SELECT c.id, c.external_id, c.tier_code, c.tier_grace_until, "
            "c.tier_pin_code, c.tier_pinned_until, c.tier_probation_until, c.tier_version, "
            "fallbacks.from_tier_id AS fallback"
            + "".join(f", {column}" for column in [*metric_columns, *cert_columns])
            + f" FROM chunk c {' '.join(joins)})"
        )
        return ",\n".join(ctes)

    # --- Requirements ----------------------------------------------------------------------

    def _value(self, requirement: Requirement) -> str:
        if requirement.is_certification:
            if requirement.certification not in self.codes:
                return "FALSE"
            return self.cert_alias(requirement.certification)
        return metric_alias(requirement.metric_key)

    def _met(self, requirement: Requirement) -> str:
        value = self._value(requirement)
        if requirement.is_certification:
            return value
        return f"({value} >= {self.q.p(requirement.minimum, 'numeric')})"

    def passes(self, requirements: Sequence[Requirement]) -> str:
        return " AND ".join(self._met(r) for r in requirements) if requirements else "TRUE"

    def _check_json(self, requirement: Requirement) -> str:
        q = self.q
        if requirement.is_certification:
            current = f"to_jsonb(CASE WHEN {self._value(requirement)} THEN 1 ELSE 0 END)"
            required = q.p("1", "jsonb")
            window = "NULL::integer"
        else:
            value = self._value(requirement)
            # Whole numbers as integers, the rest as JSON numbers (json_number on the other side).
            current = (
                f"CASE WHEN {value} = trunc({value}) THEN to_jsonb({value}::bigint) "
                f"ELSE to_jsonb({value}::float8) END"
            )
            required = q.p(json.dumps(json_number(requirement.minimum)), "jsonb")
            window = q.p(requirement.window_days, "integer")
        return (
            f"jsonb_build_object('metric', {q.p(requirement.metric, 'text')}, "
            f"'window_days', {window}, "
            f"'certification', {q.p(requirement.certification or None, 'text')}, "
            f"'required', {required}, 'current', {current}, 'met', {self._met(requirement)})"
        )

    def checks_json(self, requirements: Sequence[Requirement]) -> str:
        if not requirements:
            return "'[]'::jsonb"
        return f"jsonb_build_array({', '.join(self._check_json(r) for r in requirements)})"

    def by_tier(self, column: str, values: Callable[[Any], str | None], default: str) -> str:
        """``CASE column WHEN <tier> THEN values(tier) ... ELSE default END`` over the ladder."""
        whens = [
            f"WHEN {self.q.p(tier.code, 'text')} THEN {value}"
            for tier in self.rules.tiers
            if (value := values(tier)) is not None
        ]
        return f"CASE {column} {' '.join(whens)} ELSE {default} END" if whens else default

    # --- The decision --------------------------------------------------------------------------

    def decided(self) -> str:
        """CTEs after ``facts``: ``judged`` (what holds), ``decided`` (the new state, reason,
        warning stage and whether anything changes). Mirrors ``tiers.evaluation.evaluate``."""
        q, rules, at = self.q, self.rules, self.at_sql
        tiers = rules.tiers
        index = {tier.code: i for i, tier in enumerate(tiers)}
        entry_columns = ", ".join(f"{self.passes(t.entry)} AS e_{i}" for i, t in enumerate(tiers))
        keep_columns = ", ".join(
            f"{self.passes(t.maintenance)} AS k_{i}" for i, t in enumerate(tiers)
        )

        def rank(tier: Any) -> str:
            return str(int(tier.rank))

        def lower(tier: Any) -> Any:
            return rules.below(tier.code)

        upgrade_whens = " ".join(
            f"WHEN {self.by_tier('f.tier_code', rank, 'NULL')} < {int(tier.rank)} "
            f"AND e_{index[tier.code]} THEN {q.p(tier.code, 'text')}"
            for tier in reversed(tiers)
            if not tier.nomination_only
        )
        grace_days = self.by_tier("f.tier_code", lambda t: str(int(t.grace_days)), "0")
        warning = q.p(
            timedelta(days=settings.LOYALTY_TIER_DOWNGRADE_WARNING_DAYS).total_seconds(), "float8"
        )
        judged = (
            "judged AS (SELECT f.*, "
            f"{self.by_tier('f.tier_code', lambda t: f'k_{index[t.code]}', 'TRUE')} AS keeps, "
            f"{self.by_tier('f.tier_code', lambda t: q.p(lower(t).code, 'text') if lower(t) else None, 'NULL')} AS lower_tier, "
            f"{self.by_tier('f.tier_code', lambda t: rank(lower(t)) if lower(t) else None, 'NULL')} AS lower_rank, "
            f"{self.by_tier('f.tier_code', lambda t: f'k_{index[lower(t).code]}' if lower(t) else None, 'TRUE')} AS lower_keeps, "
            f"COALESCE(f.tier_grace_until, {at} + ({grace_days}) * INTERVAL '86400 seconds') "
            "AS grace_next, "
            f"CASE WHEN f.pin_active THEN {self.by_tier('f.tier_pin_code', rank, '-1')} "
            "ELSE -1 END AS pin_floor, "
            f"CASE {upgrade_whens or 'WHEN FALSE THEN NULL'} ELSE NULL END AS upgrade_to "
            "FROM (SELECT facts.*, (facts.tier_pin_code IS NOT NULL "
            f"AND facts.tier_pinned_until IS NOT NULL AND facts.tier_pinned_until > {at}) "
            f"AS pin_active, {entry_columns}, {keep_columns} FROM facts) f)"
        )
        codes = q.p([tier.code for tier in tiers], "text[]")
        branch = (
            "CASE WHEN j.tier_probation_until IS NOT NULL THEN "
            f"CASE WHEN {at} < j.tier_probation_until THEN 1 WHEN j.keeps THEN 2 ELSE 3 END "
            "WHEN j.upgrade_to IS NOT NULL THEN 4 "
            "WHEN j.keeps THEN 5 "
            f"WHEN {at} < j.grace_next OR j.lower_tier IS NULL OR j.lower_rank < j.pin_floor "
            "THEN 6 ELSE 7 END"
        )
        held_by_pin = "(b.tier_pin_code IS NOT NULL AND NOT b.pin_active)"
        states = (
            "states AS (SELECT b.*, "
            "CASE b.branch WHEN 3 THEN "
            f"CASE WHEN b.fallback = ANY({codes}) THEN b.fallback "
            "ELSE COALESCE(b.lower_tier, b.tier_code) END "
            "WHEN 4 THEN b.upgrade_to WHEN 7 THEN b.lower_tier ELSE b.tier_code END AS new_tier, "
            "CASE b.branch WHEN 6 THEN b.grace_next WHEN 7 THEN "
            "CASE WHEN b.lower_keeps THEN NULL ELSE b.grace_next END END AS new_grace, "
            f"CASE WHEN {held_by_pin} THEN NULL ELSE b.tier_pin_code END AS new_pin, "
            f"CASE WHEN {held_by_pin} THEN NULL ELSE b.tier_pinned_until END AS new_pinned_until, "
            "CASE WHEN b.branch IN (2, 3) THEN NULL ELSE b.tier_probation_until END "
            "AS new_probation, "
            f"CASE b.branch WHEN 2 THEN {q.p(NOMINATION_CONFIRMED, 'text')} "
            f"WHEN 3 THEN {q.p(NOMINATION_ROLLED_BACK, 'text')} "
            f"WHEN 4 THEN {q.p(REASSESSMENT, 'text')} "
            f"WHEN 7 THEN CASE WHEN {held_by_pin} THEN {q.p(PIN_EXPIRED, 'text')} "
            f"ELSE {q.p(GRACE_EXPIRED, 'text')} END END AS reason, "
            "(b.branch = 6 AND b.tier_grace_until IS NULL AND b.lower_tier IS NOT NULL) "
            "AS grace_started "
            f"FROM (SELECT j.*, {branch} AS branch FROM judged j) b)"
        )
        decided = (
            "decided AS MATERIALIZED (SELECT s.*, "
            "(s.new_tier <> s.tier_code OR s.new_grace IS DISTINCT FROM s.tier_grace_until "
            "OR s.new_pin IS DISTINCT FROM s.tier_pin_code "
            "OR s.new_pinned_until IS DISTINCT FROM s.tier_pinned_until "
            "OR s.new_probation IS DISTINCT FROM s.tier_probation_until "
            "OR s.reason IS NOT NULL) AS changes, "
            "CASE WHEN s.new_grace IS NULL OR s.new_tier <> s.tier_code THEN NULL "
            "WHEN s.grace_started THEN 'start' "
            f"WHEN {at} < s.new_grace AND s.new_grace <= {at} + {warning} * INTERVAL '1 second' "
            "THEN 'final' END AS stage "
            "FROM states s)"
        )
        return ",\n".join([judged, states, decided])

    def checks(self, alias: str) -> str:
        """The decision's checks as JSON: the entry rule passed for an upgrade, else the
        maintenance rule of the tier held before (``Decision.checks``)."""
        entry = self.by_tier(
            f"{alias}.upgrade_to", lambda t: self.checks_json(t.entry), "'[]'::jsonb"
        )
        keep = self.by_tier(
            f"{alias}.tier_code", lambda t: self.checks_json(t.maintenance), "'[]'::jsonb"
        )
        return f"CASE WHEN {alias}.branch = 4 THEN {entry} ELSE {keep} END"


# --- Reading decisions (tests and the simulation) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class SqlDecision:
    member_id: UUID
    external_id: str
    tier: str
    new_tier: str
    new_grace: datetime | None
    new_pin: str | None
    new_pinned_until: datetime | None
    new_probation: datetime | None
    reason: str | None
    grace_started: bool
    changes: bool
    stage: str | None
    checks: list[dict[str, Any]]


_DECISION_COLUMNS = (
    "d.id, d.external_id, d.tier_code, d.new_tier, d.new_grace, d.new_pin, d.new_pinned_until, "
    "d.new_probation, d.reason, d.grace_started, d.changes, d.stage"
)


def decisions_select(
    *,
    rules: Rules,
    at: datetime,
    scope: Scope | None = None,
    facts: Sequence[dict[str, Any]] | None = None,
) -> list[SqlDecision]:
    """The SQL decisions for the members of ``scope``, or for given ``facts`` rows (a column of
    ``RulesSql.facts_columns`` missing from a row is NULL), with their checks. Writes nothing."""
    q = _Query()
    compiled = RulesSql(rules, at, q)
    if facts is not None:
        source = _facts_values(compiled, facts)
    else:
        source = compiled.facts_from_database(scope or Scope())
    sql = (
        f"WITH {source},\n{compiled.decided()}\n"
        f"SELECT {_DECISION_COLUMNS}, {compiled.checks('d')} FROM decided d ORDER BY d.id"
    )
    rows = _execute(sql, q.params)
    return [
        SqlDecision(*row[:12], checks=row[12] if isinstance(row[12], list) else json.loads(row[12]))
        for row in rows
    ]


def _facts_values(compiled: RulesSql, facts: Sequence[dict[str, Any]]) -> str:
    columns = compiled.facts_columns()
    if not facts:
        nulls = ", ".join(f"NULL::{kind} AS {name}" for name, kind in columns)
        return f"facts AS (SELECT {nulls} WHERE FALSE)"
    rows = [
        "(" + ", ".join(compiled.q.p(row.get(name), kind) for name, kind in columns) + ")"
        for row in facts
    ]
    names = ", ".join(name for name, _ in columns)
    return f"facts ({names}) AS (VALUES {', '.join(rows)})"


def simulation_cells(
    *, rules: Rules, at: datetime, scope: Scope, sample_size: int
) -> list[tuple[str, str, int, list[tuple[UUID, str]]]]:
    """(from tier, to tier, members, samples) for the members of ``scope``: the simulation's
    matrix by the job's own SQL, the first ``sample_size`` members by id per cell."""
    q = _Query()
    compiled = RulesSql(rules, at, q)
    sql = (
        f"WITH {compiled.facts_from_database(scope)},\n{compiled.decided()}\n"
        "SELECT tier_code, new_tier, COUNT(*), "
        f"(array_agg(id::text || ' ' || external_id ORDER BY id))[1:{q.p(sample_size, 'int')}] "
        "FROM decided GROUP BY tier_code, new_tier"
    )
    rows = _execute(sql, q.params)
    cells = []
    for source, target, members, samples in rows:
        pairs = [tuple(sample.split(" ", 1)) for sample in samples or []]
        cells.append((source, target, members, [(UUID(i), e) for i, e in pairs]))
    return cells


# --- Deciding and writing a chunk ---------------------------------------------------------------


def chunk_decide_and_write(
    *, rules: Rules, at: datetime, scope: Scope, job_id: UUID, actor_label: str
) -> AssessmentCounts:
    """Decide every member of ``scope`` and write the outcome, in one statement in the caller's
    transaction: what ``decisions_apply(members_assess(...))`` does for a job chunk.

    A member whose tier state changed since it was read (a promotion committed meanwhile) or whom
    this job has decided already (a chunk re-run) is not written, so the history rows need no
    ``ON CONFLICT`` clause: the unique ``(job, member)`` key stays the backstop, and a duplicate
    it caught would fail the chunk (retried) rather than vanish. The events' dedupe keys make a
    re-run announce nothing twice.
    """
    require_transaction()
    q = _Query()
    compiled = RulesSql(rules, at, q)
    at_sql, job = compiled.at_sql, q.p(job_id, "uuid")
    member, history, outbox = _table(Member), _table(TierChange), _table(OutboxEvent)
    rule_version = q.p(rules.version, "integer")
    at_iso = q.p(at.isoformat(), "text")
    grace_expiries = q.p([GRACE_EXPIRED, PIN_EXPIRED], "text[]")
    below = compiled.by_tier(
        "o.new_tier",
        lambda t: q.p(rules.below(t.code).code, "text") if rules.below(t.code) else None,
        "NULL",
    )
    badges = reached_tier_badges()
    tier_rank = compiled.by_tier("o.new_tier", lambda t: str(int(t.rank)), "0")
    prior_rank = compiled.by_tier("h.to_tier_id", lambda t: str(int(t.rank)), "0")
    badge_ctes = ""
    badge_events = ""
    if badges:
        badge_values = ", ".join(
            f"({q.p(badge.code, 'text')}, {int(rank)}, {q.p(badge.name, 'text')}, "
            f"{'TRUE' if badge.is_title else 'FALSE'})"
            for badge, rank in badges
        )
        # The highest tier ever held: the new one, or one the history shows.
        badge_ctes = (
            f",\nbadge_rules (code, rank, name, is_title) AS (VALUES {badge_values}),\n"
            f"prior AS (SELECT h.member_id, MAX({prior_rank}) AS rank FROM {history} h "
            f"WHERE {scope.where(q, 'h.member_id')} AND h.created_at <= {at_sql} "
            "GROUP BY h.member_id),\n"
            "reached AS (SELECT o.id, o.external_id, "
            f"GREATEST({tier_rank}, COALESCE(p.rank, 0)) AS best "
            "FROM outcome o LEFT JOIN prior p ON p.member_id = o.id "
            "WHERE o.written AND o.reason IS NOT NULL),\n"
            f"badge_rows AS (INSERT INTO {_table(MemberBadge)} "
            "(member_id, badge_id, awarded_at, awarded_by, reason) "
            f"SELECT r.id, b.code, {at_sql}, {q.p(AUTOMATIC_ACTOR.label, 'text')}, "
            f"{q.p(f'rule {REACHED_TIER}', 'text')} FROM reached r "
            "JOIN badge_rules b ON r.best >= b.rank ORDER BY r.id::text, b.code "
            "ON CONFLICT (member_id, badge_id) DO NOTHING RETURNING member_id, badge_id)"
        )
        badge_events = (
            f"UNION ALL SELECT {q.p(BADGE_AWARDED_EVENT, 'text')}, w.member_id::text, "
            f"w.member_id::text || ':' || w.badge_id || ':' || {at_iso}, "
            "jsonb_build_object('member_id', w.member_id::text, 'external_id', r.external_id, "
            f"'badge', w.badge_id, 'name', b.name, 'is_title', b.is_title, 'awarded_at', {at_iso}) "
            "FROM badge_rows w JOIN reached r ON r.id = w.member_id "
            "JOIN badge_rules b ON b.code = w.badge_id "
        )
    sql = f"""WITH {compiled.facts_from_database(scope)},
{compiled.decided()},
written AS (
    UPDATE {member} m SET tier_code = d.new_tier,
        tier_since = CASE WHEN d.new_tier <> d.tier_code THEN {at_sql} ELSE m.tier_since END,
        tier_grace_until = d.new_grace, tier_pin_code = d.new_pin,
        tier_pinned_until = d.new_pinned_until, tier_probation_until = d.new_probation,
        tier_version = m.tier_version + 1, updated_at = {at_sql}
    FROM decided d
    WHERE d.changes AND m.id = d.id AND m.tier_version = d.tier_version
      AND {scope.where(q, "m.id")}
      AND NOT EXISTS (SELECT 1 FROM {history} h WHERE h.job_id = {job} AND h.member_id = m.id
                      AND {scope.where(q, "h.member_id")})
    RETURNING m.id
),
outcome AS (
    SELECT d.*, w.id IS NOT NULL AS written FROM decided d LEFT JOIN written w ON w.id = d.id
),
history AS (
    INSERT INTO {history} (member_id, from_tier_id, to_tier_id, reason, actor, note,
        rule_set_id, job_id, pinned_until, details, created_at)
    SELECT o.id, o.tier_code, o.new_tier, o.reason, {q.p(actor_label, "text")}, '',
        {q.p(rules.rule_set_id, "integer")}, {job}, o.new_pinned_until,
        jsonb_build_object('rule_version', {rule_version}, 'checks', {compiled.checks("o")})
        || CASE WHEN o.reason = ANY({grace_expiries}) AND o.tier_grace_until IS NOT NULL
           THEN jsonb_build_object('grace_until', {iso_sql("o.tier_grace_until")})
           ELSE '{{}}'::jsonb END,
        {at_sql}
    FROM outcome o WHERE o.written AND o.reason IS NOT NULL
    ORDER BY o.id
),
nominations AS (
    UPDATE {_table(Nomination)} n
    SET status = CASE o.reason WHEN {q.p(NOMINATION_CONFIRMED, "text")} THEN 'confirmed'
                 ELSE 'rolled_back' END,
        decided_at = {at_sql}
    FROM outcome o
    WHERE o.written AND o.reason IN ({q.p(NOMINATION_CONFIRMED, "text")},
        {q.p(NOMINATION_ROLLED_BACK, "text")})
      AND n.member_id = o.id AND n.status = 'probation'
){badge_ctes},
events AS (
    INSERT INTO {outbox} (id, event_type, aggregate_id, dedupe_key, payload, occurred_at,
        created_at)
    SELECT {UUID7_SQL}, e.* , {at_sql}, {at_sql} FROM (
        SELECT 'member.tier_changed', o.id::text,
            'job:' || {job}::text || ':' || o.id::text,
            jsonb_build_object('member_id', o.id::text, 'external_id', o.external_id,
                'from_tier', o.tier_code, 'to_tier', o.new_tier, 'reason', o.reason,
                'rule_version', {rule_version}, 'changed_at', {at_iso})
        FROM outcome o
        WHERE o.written AND o.reason IS NOT NULL AND o.new_tier <> o.tier_code
        UNION ALL
        SELECT 'tier.will_downgrade', o.id::text,
            o.id::text || ':' || {iso_sql("o.new_grace")} || ':' || o.stage,
            jsonb_build_object('member_id', o.id::text, 'external_id', o.external_id,
                'tier', o.new_tier, 'downgrade_to', {below},
                'grace_until', {iso_sql("o.new_grace")},
                'pinned_until', CASE WHEN o.new_pinned_until IS NULL THEN NULL
                    ELSE {iso_sql("o.new_pinned_until")} END,
                'requirements', {compiled.checks("o")})
        FROM outcome o
        WHERE o.stage IS NOT NULL AND (o.written OR NOT o.changes)
        {badge_events}
    ) e (event_type, aggregate_id, dedupe_key, payload)
    {OUTBOX_SKIP_DUPLICATE}
)
SELECT o.tier_code,
    CASE WHEN o.written OR NOT o.changes THEN o.new_tier ELSE o.tier_code END,
    COUNT(*),
    COUNT(*) FILTER (WHERE o.written AND o.reason IS NOT NULL AND o.new_tier <> o.tier_code),
    COUNT(*) FILTER (WHERE o.stage = 'start' AND (o.written OR NOT o.changes)),
    COUNT(*) FILTER (WHERE o.written AND o.reason = {q.p(NOMINATION_CONFIRMED, "text")}),
    COUNT(*) FILTER (WHERE o.written AND o.reason = {q.p(NOMINATION_ROLLED_BACK, "text")}),
    COUNT(*) FILTER (WHERE o.changes AND NOT o.written)
FROM outcome o GROUP BY 1, 2"""
    rows = _execute(sql, q.params)
    counts = AssessmentCounts()
    for source, target, members, changed, grace, confirmed, rolled_back, skipped in rows:
        counts.matrix[source][target] += members
        counts.assessed += members
        counts.changed += changed
        counts.grace_started += grace
        counts.confirmed += confirmed
        counts.rolled_back += rolled_back
        counts.skipped_concurrent += skipped
    return counts
