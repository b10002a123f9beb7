"""The rules compiled to SQL (``tiers.services.assessment_sql``, the population job's path on
PostgreSQL) against the Python evaluation they mirror: the same decisions for generated states
and metrics, the same rows written for a whole population, the same simulation."""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.actors import system_actor
from members.models import Member
from tests.tiers.population import AT, population_build, population_state, population_wipe
from tests.tiers.test_evaluation import RULES, cert, req
from tiers.evaluation import Facts, Requirement, Rules, TierPolicy, TierState, evaluate
from tiers.models import Nomination, NominationStatus, RuleSet, TierChange
from tiers.services.assessment import members_assess, metric_alias
from tiers.services.assessment_sql import Scope, decisions_select, iso_sql
from tiers.services.reassessment import (
    reassessment_run_inline,
    reassessment_start,
    tier_simulation_run,
)

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
WARNING = timedelta(days=7)

# Amounts with cents, tenure and a certification-only rung: the JSON of non-integral values.
SPENDING_RULES = Rules(
    rule_set_id=9,
    version=2,
    tiers=(
        TierPolicy("basic", 0),
        TierPolicy(
            "active",
            1,
            grace_days=14,
            entry=(
                Requirement("purchase_amount", 30, Decimal("99.99")),
                Requirement("tenure_days", None, Decimal(30)),
            ),
            maintenance=(Requirement("purchase_amount", 30, Decimal("50.5")),),
        ),
        TierPolicy("koc", 2, grace_days=0, entry=(cert("content-creator"),)),
        TierPolicy("kol", 3, nomination_only=True, entry=(req("posts", 1, 90),)),
    ),
)

CODES = ("basic", "active", "koc", "kol")
offsets = st.one_of(st.none(), st.integers(min_value=-40, max_value=40))


def _moment(days: int | None, micro: int = 0) -> datetime | None:
    return None if days is None else NOW + timedelta(days=days, microseconds=micro)


@st.composite
def cases(draw: Any, rules: Rules) -> tuple[TierState, Facts]:
    """A tier state (any clocks, pins and probations, also ones that make no sense together)
    and metrics near the rules' thresholds."""
    pin = draw(st.one_of(st.none(), st.sampled_from(CODES)))
    probation = draw(offsets)
    state = TierState(
        tier=draw(st.sampled_from(CODES)),
        grace_until=_moment(draw(offsets), draw(st.sampled_from((0, 1, 999_999)))),
        pin=pin,
        pinned_until=_moment(draw(offsets)) if pin else None,
        probation_until=_moment(probation),
        probation_fallback=(
            draw(st.one_of(st.none(), st.sampled_from((*CODES, "gone"))))
            if probation is not None
            else None
        ),
    )
    metrics: dict[Any, Any] = {}
    for key in rules.metric_keys():
        if key[0] == "purchase_amount":
            cents = draw(st.integers(min_value=0, max_value=15_000))
            metrics[key] = Decimal(cents) / 100
        else:
            metrics[key] = draw(st.integers(min_value=0, max_value=40))
    held = frozenset(draw(st.sets(st.sampled_from(sorted(rules.certifications())))))
    return state, Facts(metrics=metrics, certifications=held)


def _facts_row(member_id: uuid.UUID, state: TierState, facts: Facts, rules: Rules) -> dict:
    row: dict[str, Any] = {
        "id": member_id,
        "external_id": f"m-{member_id.hex[:8]}",
        "tier_code": state.tier,
        "tier_grace_until": state.grace_until,
        "tier_pin_code": state.pin,
        "tier_pinned_until": state.pinned_until,
        "tier_probation_until": state.probation_until,
        "tier_version": 1,
        "fallback": state.probation_fallback,
    }
    for key, value in facts.metrics.items():
        row[metric_alias(key)] = value
    for index, code in enumerate(sorted(rules.certifications())):
        row[f"c_{index}"] = code in facts.certifications
    return row


def _expected_stage(state: TierState, decision: Any) -> str | None:
    """When ``decisions_apply`` warns (``_will_downgrade_warning``)."""
    grace = decision.state.grace_until
    if grace is None or decision.state.tier != state.tier:
        return None
    if decision.grace_started:
        return "start"
    return "final" if NOW < grace <= NOW + WARNING else None


def _assert_same_decisions(rules: Rules, drawn: list[tuple[TierState, Facts]]) -> None:
    ids = sorted(uuid.uuid4() for _ in drawn)
    rows = [_facts_row(i, s, f, rules) for i, (s, f) in zip(ids, drawn, strict=True)]
    got = decisions_select(rules=rules, at=NOW, facts=rows)
    assert [d.member_id for d in got] == ids
    for sql, (state, facts) in zip(got, drawn, strict=True):
        decision = evaluate(state=state, facts=facts, rules=rules, at=NOW)
        expected = {
            "tier": decision.state.tier,
            "grace_until": decision.state.grace_until,
            "pin": decision.state.pin,
            "pinned_until": decision.state.pinned_until,
            "probation_until": decision.state.probation_until,
            "reason": decision.reason,
            "grace_started": decision.grace_started,
            "changes": decision.changes(state),
            "stage": _expected_stage(state, decision),
            "checks": [check.as_dict() for check in decision.checks],
        }
        actual = {
            "tier": sql.new_tier,
            "grace_until": sql.new_grace,
            "pin": sql.new_pin,
            "pinned_until": sql.new_pinned_until,
            "probation_until": sql.new_probation,
            "reason": sql.reason,
            "grace_started": sql.grace_started,
            "changes": sql.changes,
            "stage": sql.stage,
            "checks": sql.checks,
        }
        assert actual == expected, (state, facts)


@pytest.mark.django_db
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(drawn=st.lists(cases(RULES), min_size=1, max_size=40))
def test_sql_decisions_equal_the_evaluation_for_generated_states(drawn: list) -> None:
    _assert_same_decisions(RULES, drawn)


@pytest.mark.django_db
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(drawn=st.lists(cases(SPENDING_RULES), min_size=1, max_size=40))
def test_sql_decisions_equal_the_evaluation_with_amounts_tenure_and_certificates(
    drawn: list,
) -> None:
    _assert_same_decisions(SPENDING_RULES, drawn)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("state", "metrics", "reason"),
    [
        # Probation ending: kept (confirmed) or failed back to the tier held before.
        (
            TierState("koc", probation_until=NOW, probation_fallback="active"),
            {"posts": 3},
            "nomination_confirmed",
        ),
        (
            TierState("koc", probation_until=NOW, probation_fallback="active"),
            {"posts": 2},
            "nomination_rolled_back",
        ),
        # Grace over under an ended pin: demoted with the pin's reason.
        (
            TierState("koc", grace_until=NOW, pin="koc", pinned_until=NOW),
            {"posts": 0},
            "pin_expired",
        ),
        (TierState("koc", grace_until=NOW - timedelta(days=1)), {"posts": 0}, "grace_expired"),
        (TierState("basic"), {"posts": 6, "interactions": 12}, "reassessment"),
    ],
)
def test_every_reason_is_reached_the_same_way(
    state: TierState, metrics: dict[str, int], reason: str
) -> None:
    facts = Facts(
        metrics={("posts", 90): metrics.get("posts", 0), ("interactions", 30): 0},
        certifications=frozenset({"onboarding"}),
    )
    _assert_same_decisions(RULES, [(state, facts)])
    assert evaluate(state=state, facts=facts, rules=RULES, at=NOW).reason == reason


@pytest.mark.django_db
@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 6, 1, 8, 0, tzinfo=UTC) + timedelta(microseconds=120_000),
    ],
)
def test_timestamps_render_like_python_isoformat(moment: datetime) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {iso_sql('%(moment)s::timestamptz')}", {"moment": moment})
        assert cursor.fetchone()[0] == moment.isoformat()


def _probations() -> None:
    """Put some of the population on a nomination's probation, ending before the run (confirmed
    or rolled back) or after it (kept), so the nomination paths are part of the comparison."""
    members = list(Member.objects.filter(erased_at__isnull=True).order_by("pk")[:12])
    for number, member in enumerate(members):
        ends = AT - timedelta(days=1) if number % 3 else AT + timedelta(days=5)
        Member.objects.filter(pk=member.pk).update(tier="koc", tier_probation_until=ends)
        Nomination.objects.create(
            member=member,
            tier_id="koc",
            from_tier_id=member.tier_id,
            status=NominationStatus.PROBATION,
            evidence="tests",
            nominated_by="tests",
            probation_until=ends,
            created_at=AT - timedelta(days=30),
        )


def _job_end_state(*, sql: bool) -> tuple[Any, ...]:
    with override_settings(LOYALTY_TIER_SQL_ASSESSMENT=sql):
        job, _ = reassessment_start(actor=system_actor("tests"), at=AT, chunk_size=70)
        job = reassessment_run_inline(job_id=job.pk, at=AT)
    nominations = sorted(
        Nomination.objects.values_list("member_id", "status", "decided_at"), key=str
    )
    badges = sorted(
        Member.objects.filter(badge_awards__isnull=False).values_list(
            "pk", "badge_awards__badge_id", "badge_awards__awarded_by", "badge_awards__reason"
        ),
        key=str,
    )
    report = (job.items_done, job.items_changed, job.chunks_done, job.status)
    return population_state(), nominations, badges, report


@pytest.mark.django_db
def test_the_sql_job_writes_exactly_what_the_python_path_writes() -> None:
    """The whole population through both paths, from the same start: member state, history
    (explanations included), outbox events and their dedupe keys, badges, nominations, counts."""
    population_build(size=400)
    _probations()
    state_py, nominations_py, badges_py, report_py = _job_end_state(sql=False)
    assert TierChange.objects.exists()
    population_wipe()
    population_build(size=400)
    _probations()
    state_sql, nominations_sql, badges_sql, report_sql = _job_end_state(sql=True)
    assert state_sql.members == state_py.members
    assert state_sql.history == state_py.history
    assert state_sql.outbox == state_py.outbox
    assert nominations_sql == nominations_py
    assert badges_sql == badges_py
    assert report_sql == report_py
    reasons = {row[3] for row in state_sql.history}
    assert {"reassessment", "grace_expired", "pin_expired"} <= reasons
    assert {"nomination_confirmed", "nomination_rolled_back"} & reasons
    assert {row[0] for row in state_sql.outbox} >= {"member.tier_changed", "tier.will_downgrade"}


# Every metric on every rung's maintenance rule: each member's checks then show every value.
EVERY_METRIC = (
    *(
        Requirement(metric, window, Decimal(1))
        for metric, window in (
            ("interactions", 30),
            ("active_days", 30),
            ("posts", 90),
            ("shares", 30),
            ("purchases", 90),
            ("purchase_amount", 30),
            ("qualifying_points", 30),
            ("qualifying_points", 90),
            ("checkin_streak", 7),
            ("checkin_streak", 30),
            ("tenure_days", None),
        )
    ),
    cert("onboarding"),
    cert("content-creator"),
)
METRIC_RULES = Rules(
    # Nomination-only: no upgrades, so every decision explains the maintenance rule.
    tiers=tuple(
        TierPolicy(code, rank, nomination_only=rank > 0, maintenance=EVERY_METRIC)
        for rank, code in enumerate(CODES)
    )
)


@pytest.mark.django_db
def test_the_facts_the_sql_reads_equal_the_python_metrics() -> None:
    """Rollup sums and active days, ledger points less reversals (inside and outside each
    window), check-in streaks, tenure and certificates, per member."""
    from members.models import MemberDailyActivity
    from rewards.services.ledger import points_award, points_reverse

    population_build(size=200)
    members = list(Member.objects.filter(erased_at__isnull=True).order_by("pk")[:40])
    actor = system_actor("tests")
    for number, member in enumerate(members):
        for days_before in (1, 20, 45, 100):
            entry = points_award(
                member=member,
                points=10 * (number + 1) + days_before,
                reason="bonus",
                actor=actor,
                at=AT - timedelta(days=days_before),
            )
            if (number + days_before) % 3 == 0:
                points_reverse(entry=entry, actor=actor, at=AT - timedelta(days=days_before - 1))
    # Check-ins on some members' active days: runs ending today, yesterday, or earlier.
    for member in members[::3]:
        MemberDailyActivity.objects.filter(member=member).update(checkins=1)
    for member in members[::2]:
        MemberDailyActivity.objects.filter(member=member).update(
            purchases=1, purchase_amount=Decimal("12.35")
        )
    python = {
        item.member_id: item
        for item in members_assess(
            members=Member.objects.filter(erased_at__isnull=True), rules=METRIC_RULES, at=AT
        )
    }
    sql = {d.member_id: d for d in decisions_select(rules=METRIC_RULES, at=AT, scope=Scope())}
    assert set(sql) == set(python)
    for member_id, item in python.items():
        assert sql[member_id].checks == [c.as_dict() for c in item.decision.checks]
    values = {
        (check["metric"], check["window_days"]): check["current"]
        for item in python.values()
        for check in (c.as_dict() for c in item.decision.checks)
        if check["current"]
    }
    # The comparison saw real values of every metric, not zeros.
    assert {key[0] for key in values} >= {
        "interactions",
        "qualifying_points",
        "checkin_streak",
        "tenure_days",
        "purchase_amount",
    }


@pytest.mark.django_db
def test_the_simulation_gives_the_same_matrix_and_samples_by_either_path() -> None:
    population_build(size=300)
    rule_set = RuleSet.objects.get(status="published")
    with override_settings(LOYALTY_TIER_SQL_ASSESSMENT=False):
        python = tier_simulation_run(rule_set_id=rule_set.pk, at=AT, sample_size=3)
    sql = tier_simulation_run(rule_set_id=rule_set.pk, at=AT, sample_size=3)
    assert (sql.members, sql.changed) == (python.members, python.changed)
    assert sql.as_dict()["matrix"] == python.as_dict()["matrix"]
    for source, row in sql.as_dict()["samples"].items():
        for target, samples in row.items():
            assert len(samples) == len(python.as_dict()["samples"][source][target])
            assert samples == sorted(samples, key=lambda sample: sample["id"])


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("grace_until", "stage"),
    [
        (NOW + WARNING, "final"),
        (NOW + WARNING + timedelta(microseconds=1), None),
        (NOW + timedelta(microseconds=1), "final"),
    ],
)
def test_the_final_warning_window_has_the_same_edges(grace_until: datetime, stage: str) -> None:
    state = TierState("active", grace_until=grace_until)
    facts = Facts(metrics={("interactions", 30): 0, ("posts", 90): 0})
    _assert_same_decisions(RULES, [(state, facts)])
    decision = evaluate(state=state, facts=facts, rules=RULES, at=NOW)
    assert _expected_stage(state, decision) == stage
