"""The pure evaluation, table-driven: every branch of ``tiers.evaluation.evaluate`` and the rule
validation."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tiers.evaluation import (
    Facts,
    Requirement,
    Rules,
    TierPolicy,
    TierState,
    evaluate,
    progress,
    rules_problems,
)

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def req(metric: str, minimum: int, window: int | None = 30) -> Requirement:
    return Requirement(metric=metric, window_days=window, minimum=Decimal(minimum))


def cert(code: str) -> Requirement:
    return Requirement(metric="certification", certification=code)


RULES = Rules(
    rule_set_id=7,
    version=3,
    tiers=(
        TierPolicy("basic", 0),
        TierPolicy(
            "active",
            1,
            grace_days=30,
            entry=(cert("onboarding"), req("interactions", 12)),
            maintenance=(cert("onboarding"), req("interactions", 6)),
        ),
        TierPolicy(
            "koc",
            2,
            grace_days=10,
            entry=(req("posts", 6, 90),),
            maintenance=(req("posts", 3, 90),),
        ),
        TierPolicy(
            "kol",
            3,
            nomination_only=True,
            grace_days=20,
            entry=(req("posts", 6, 90),),
            maintenance=(req("posts", 3, 90),),
        ),
    ),
)


def facts(interactions: int = 0, posts: int = 0, certs: tuple[str, ...] = ()) -> Facts:
    return Facts(
        metrics={("interactions", 30): interactions, ("posts", 90): posts},
        certifications=frozenset(certs),
    )


ONBOARDED = ("onboarding",)
GRACE_PAST = NOW - DAY
GRACE_AHEAD = NOW + 5 * DAY

# (case, state, facts, expected tier, expected reason, expected grace_until, grace_started)
CASES = [
    ("nothing done stays basic", TierState("basic"), facts(), "basic", None, None, False),
    (
        "entry met without the certification stays",
        TierState("basic"),
        facts(interactions=20),
        "basic",
        None,
        None,
        False,
    ),
    (
        "entry met upgrades one rank",
        TierState("basic"),
        facts(interactions=12, certs=ONBOARDED),
        "active",
        "reassessment",
        None,
        False,
    ),
    (
        "upgrade goes as high as entry allows (skips a rank)",
        TierState("basic"),
        facts(posts=6),
        "koc",
        "reassessment",
        None,
        False,
    ),
    (
        "never promoted into a nomination-only tier",
        TierState("koc"),
        facts(posts=50, interactions=50, certs=ONBOARDED),
        "koc",
        None,
        None,
        False,
    ),
    (
        "an upgrade clears a running grace",
        TierState("active", grace_until=GRACE_AHEAD),
        facts(posts=6),
        "koc",
        "reassessment",
        None,
        False,
    ),
    (
        "maintenance met keeps the tier",
        TierState("active"),
        facts(interactions=6, certs=ONBOARDED),
        "active",
        None,
        None,
        False,
    ),
    (
        "recovering during grace clears it",
        TierState("active", grace_until=GRACE_AHEAD),
        facts(interactions=6, certs=ONBOARDED),
        "active",
        None,
        None,
        False,
    ),
    (
        "maintenance failing starts grace",
        TierState("active"),
        facts(interactions=5, certs=ONBOARDED),
        "active",
        None,
        NOW + 30 * DAY,
        True,
    ),
    (
        "a lost certification fails maintenance",
        TierState("active"),
        facts(interactions=50),
        "active",
        None,
        NOW + 30 * DAY,
        True,
    ),
    (
        "inside grace holds the tier",
        TierState("active", grace_until=GRACE_AHEAD),
        facts(),
        "active",
        None,
        GRACE_AHEAD,
        False,
    ),
    (
        "grace passed demotes one rank",
        TierState("koc", grace_until=GRACE_PAST),
        facts(interactions=50, certs=ONBOARDED),
        "active",
        "grace_expired",
        None,
        False,
    ),
    (
        "grace passed with the lower tier failing too keeps grace expired (next step next time)",
        TierState("kol", grace_until=GRACE_PAST),
        facts(),
        "koc",
        "grace_expired",
        GRACE_PAST,
        False,
    ),
    (
        "grace ending exactly now demotes",
        TierState("active", grace_until=NOW),
        facts(),
        "basic",
        "grace_expired",
        None,
        False,
    ),
    (
        "a pin holds the tier after grace",
        TierState("koc", grace_until=GRACE_PAST, pin="koc", pinned_until=NOW + DAY),
        facts(),
        "koc",
        None,
        GRACE_PAST,
        False,
    ),
    (
        "a pin on a lower tier allows demotion down to it",
        TierState("kol", grace_until=GRACE_PAST, pin="koc", pinned_until=NOW + DAY),
        facts(),
        "koc",
        "grace_expired",
        GRACE_PAST,
        False,
    ),
    (
        "the pin ended: the held demotion happens, reason pin expired",
        TierState("koc", grace_until=GRACE_PAST, pin="koc", pinned_until=NOW - DAY),
        facts(interactions=6, certs=ONBOARDED),
        "active",
        "pin_expired",
        None,
        False,
    ),
    (
        "a pin does not stop upgrades",
        TierState("active", pin="active", pinned_until=NOW + DAY),
        facts(posts=6),
        "koc",
        "reassessment",
        None,
        False,
    ),
    (
        "on probation: held whatever the metrics",
        TierState("kol", probation_until=NOW + DAY, probation_fallback="koc"),
        facts(),
        "kol",
        None,
        None,
        False,
    ),
    (
        "probation over, maintenance holds: confirmed",
        TierState("kol", probation_until=NOW - DAY, probation_fallback="koc"),
        facts(posts=3),
        "kol",
        "nomination_confirmed",
        None,
        False,
    ),
    (
        "probation over, maintenance fails: rolled back to the tier held before",
        TierState("kol", probation_until=NOW - DAY, probation_fallback="active"),
        facts(posts=2),
        "active",
        "nomination_rolled_back",
        None,
        False,
    ),
    (
        "rolled back without a recorded fallback goes one rank down",
        TierState("kol", probation_until=NOW - DAY),
        facts(),
        "koc",
        "nomination_rolled_back",
        None,
        False,
    ),
    (
        "the lowest tier is never demoted",
        TierState("basic", grace_until=GRACE_PAST),
        facts(),
        "basic",
        None,
        None,
        False,
    ),
]


@pytest.mark.parametrize(
    ("state", "member_facts", "tier", "reason", "grace_until", "grace_started"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_evaluate(state, member_facts, tier, reason, grace_until, grace_started) -> None:
    decision = evaluate(state=state, facts=member_facts, rules=RULES, at=NOW)
    assert decision.state.tier == tier
    assert decision.reason == reason
    assert decision.state.grace_until == grace_until
    assert decision.grace_started is grace_started


def test_an_ended_pin_is_cleared_and_an_active_one_kept() -> None:
    ended = TierState("koc", pin="koc", pinned_until=NOW - DAY)
    kept = TierState("koc", pin="koc", pinned_until=NOW + DAY)
    assert evaluate(state=ended, facts=facts(posts=3), rules=RULES, at=NOW).state.pin is None
    decision = evaluate(state=kept, facts=facts(posts=3), rules=RULES, at=NOW)
    assert (decision.state.pin, decision.state.pinned_until) == ("koc", NOW + DAY)


def test_a_decision_explains_itself_with_required_and_actual_values() -> None:
    decision = evaluate(
        state=TierState("basic"), facts=facts(interactions=14, certs=ONBOARDED), rules=RULES, at=NOW
    )
    assert [check.as_dict() for check in decision.checks] == [
        {
            "metric": "certification",
            "window_days": None,
            "certification": "onboarding",
            "required": 1,
            "current": 1,
            "met": True,
        },
        {
            "metric": "interactions",
            "window_days": 30,
            "certification": None,
            "required": 12,
            "current": 14,
            "met": True,
        },
    ]


def test_decimal_metrics_compare_exactly() -> None:
    rules = Rules(
        tiers=(
            TierPolicy("basic", 0),
            TierPolicy(
                "active",
                1,
                entry=(Requirement("purchase_amount", 30, Decimal("99.99")),),
            ),
        )
    )
    below = Facts(metrics={("purchase_amount", 30): Decimal("99.98")})
    at = Facts(metrics={("purchase_amount", 30): Decimal("99.99")})
    assert (
        evaluate(state=TierState("basic"), facts=below, rules=rules, at=NOW).state.tier == "basic"
    )
    assert evaluate(state=TierState("basic"), facts=at, rules=rules, at=NOW).state.tier == "active"


def test_progress_shows_the_next_tier_and_what_keeps_the_current_one() -> None:
    view = progress(state=TierState("active"), facts=facts(interactions=7, posts=2), rules=RULES)
    assert view.next_tier == "koc"
    assert not view.next_tier_nomination_only
    assert [(c.metric, c.required, c.current, c.met) for c in view.next_tier_checks] == [
        ("posts", 6, 2, False)
    ]
    assert [(c.metric, c.met) for c in view.keep_checks] == [
        ("certification", False),
        ("interactions", True),
    ]
    assert view.at_risk
    top = progress(state=TierState("kol"), facts=facts(posts=9), rules=RULES)
    assert (top.next_tier, top.next_tier_checks, top.at_risk) == (None, (), False)


def test_tenure_ignores_the_window() -> None:
    requirement = Requirement("tenure_days", 30, Decimal(10))
    assert requirement.metric_key == ("tenure_days", None)
    assert Facts(metrics={("tenure_days", None): 12}).value(requirement) == 12


# --- Validation ------------------------------------------------------------------------------


def _with(**active: object) -> Rules:
    policy = {
        "grace_days": 30,
        "entry": (req("interactions", 12),),
        "maintenance": (req("interactions", 6),),
        **active,
    }
    return Rules(tiers=(TierPolicy("basic", 0), TierPolicy("active", 1, **policy)))


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        (_with(entry=(req("karma", 1),), maintenance=()), "unknown metric 'karma'"),
        (_with(entry=(req("interactions", -1),), maintenance=()), "cannot be negative"),
        (_with(entry=(req("interactions", 1, window=0),), maintenance=()), "window must be"),
        (_with(entry=(req("interactions", 1, window=400),), maintenance=()), "window must be"),
        (
            _with(entry=(req("interactions", 12),), maintenance=(req("interactions", 13),)),
            "stricter",
        ),
        (_with(entry=(req("interactions", 12),), maintenance=(req("posts", 1),)), "stricter"),
        (_with(entry=(req("interactions", 12),), maintenance=(cert("onboarding"),)), "stricter"),
        (
            _with(entry=(req("interactions", 12), req("interactions", 13)), maintenance=()),
            "listed twice",
        ),
        (_with(entry=(Requirement("certification"),), maintenance=()), "names no certification"),
        (_with(grace_days=400), "grace days"),
        (
            Rules(tiers=(TierPolicy("basic", 0, entry=(req("posts", 1),)),)),
            "takes no requirements",
        ),
        (Rules(tiers=(TierPolicy("basic", 0, nomination_only=True),)), "cannot be nomination-only"),
    ],
)
def test_invalid_rules_are_explained(rules: Rules, problem: str) -> None:
    problems = rules_problems(rules)
    assert any(problem in text for text in problems), problems


def test_valid_rules_have_no_problems() -> None:
    assert rules_problems(RULES) == []
    # Maintenance may drop or loosen entry conditions.
    assert rules_problems(_with(maintenance=())) == []
    assert rules_problems(_with(maintenance=(req("interactions", 12),))) == []
