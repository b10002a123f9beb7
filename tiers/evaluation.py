"""Tier evaluation: pure functions from a member's metrics, certifications and tier state under
one version of the rules to a decision. No Django imports: the reassessment job, the simulation
and the progress view all call these, so what the API explains is what the job does.

Rules (SPEC §2 "Tier rules"):
- an upgrade goes as high as the entry rules allow, never into a nomination-only tier;
- a member failing the maintenance rule of their tier enters a grace period; demotion comes only
  once it has passed without recovering, one rank per assessment, never below a pinned tier while
  the pin lasts (a demotion held back by a pin happens when the pin ends);
- a member on a nomination's probation keeps the tier until the probation ends, then is
  confirmed if the tier's maintenance rule holds, or rolled back to the tier held before.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

# The metrics a requirement can name (SPEC §2 default metrics), and the pseudo-metric for
# holding a certification.
METRICS = (
    "interactions",
    "active_days",
    "posts",
    "shares",
    "purchases",
    "purchase_amount",
    "qualifying_points",
    "checkin_streak",
    "tenure_days",
)
CERTIFICATION = "certification"
# Tenure counts from joining, whatever the window.
UNWINDOWED_METRICS = frozenset({"tenure_days"})
MAX_WINDOW_DAYS = 366

# Reasons, as stored on tier history rows (tiers.models.TierChangeReason).
REASSESSMENT = "reassessment"
GRACE_EXPIRED = "grace_expired"
PIN_EXPIRED = "pin_expired"
NOMINATION_CONFIRMED = "nomination_confirmed"
NOMINATION_ROLLED_BACK = "nomination_rolled_back"

Number = int | Decimal
MetricKey = tuple[str, int | None]


@dataclass(frozen=True, slots=True)
class Requirement:
    """A metric over a window at least ``minimum``, or (``metric == "certification"``) holding
    the certification ``certification``."""

    metric: str
    window_days: int | None = None
    minimum: Decimal = Decimal(0)
    certification: str = ""

    @property
    def metric_key(self) -> MetricKey:
        return (self.metric, None if self.metric in UNWINDOWED_METRICS else self.window_days)

    @property
    def is_certification(self) -> bool:
        return self.metric == CERTIFICATION


@dataclass(frozen=True, slots=True)
class TierPolicy:
    code: str
    rank: int
    nomination_only: bool = False
    grace_days: int = 30
    entry: tuple[Requirement, ...] = ()
    maintenance: tuple[Requirement, ...] = ()


@dataclass(frozen=True, slots=True)
class Rules:
    """One rule version over the whole ladder, lowest rank first."""

    tiers: tuple[TierPolicy, ...]
    rule_set_id: int | None = None
    version: int | None = None
    _by_code: dict[str, TierPolicy] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.tiers, key=lambda tier: tier.rank))
        object.__setattr__(self, "tiers", ordered)
        object.__setattr__(self, "_by_code", {tier.code: tier for tier in ordered})

    def tier(self, code: str) -> TierPolicy:
        return self._by_code[code]

    def has_tier(self, code: str) -> bool:
        return code in self._by_code

    def below(self, code: str) -> TierPolicy | None:
        rank = self._by_code[code].rank
        lower = [tier for tier in self.tiers if tier.rank < rank]
        return lower[-1] if lower else None

    def above(self, code: str) -> TierPolicy | None:
        rank = self._by_code[code].rank
        higher = [tier for tier in self.tiers if tier.rank > rank]
        return higher[0] if higher else None

    @property
    def lowest(self) -> TierPolicy:
        return self.tiers[0]

    def requirements(self) -> Iterable[Requirement]:
        for tier in self.tiers:
            yield from tier.entry
            yield from tier.maintenance

    def metric_keys(self) -> frozenset[MetricKey]:
        """The (metric, window) pairs any requirement reads: what the job must compute."""
        return frozenset(
            requirement.metric_key
            for requirement in self.requirements()
            if not requirement.is_certification
        )

    def certifications(self) -> frozenset[str]:
        return frozenset(
            requirement.certification
            for requirement in self.requirements()
            if requirement.is_certification
        )


@dataclass(frozen=True, slots=True)
class Facts:
    """What a member has done: metric values by (metric, window) and held certifications.
    A metric missing from ``metrics`` is 0 (no activity)."""

    metrics: Mapping[MetricKey, Number] = field(default_factory=dict)
    certifications: frozenset[str] = frozenset()

    def value(self, requirement: Requirement) -> Number:
        if requirement.is_certification:
            return int(requirement.certification in self.certifications)
        return self.metrics.get(requirement.metric_key, 0)


@dataclass(frozen=True, slots=True)
class TierState:
    """A member's tier and the clocks running on it."""

    tier: str
    grace_until: datetime | None = None
    pin: str | None = None
    pinned_until: datetime | None = None
    probation_until: datetime | None = None
    # Where a failed probation returns the member (the tier held before the nomination).
    probation_fallback: str | None = None


@dataclass(frozen=True, slots=True)
class Check:
    """One requirement against the member's value."""

    metric: str
    window_days: int | None
    certification: str
    required: Number
    current: Number
    met: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "window_days": self.window_days,
            "certification": self.certification or None,
            "required": json_number(self.required),
            "current": json_number(self.current),
            "met": self.met,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The state after an assessment; ``reason`` is set when a history row is due."""

    state: TierState
    reason: str | None = None
    # The checks that decided: the entry rule passed for an upgrade, else the maintenance rule
    # of the tier held before the decision.
    checks: tuple[Check, ...] = ()
    # Grace started at this assessment: the member is to be warned (tier.will_downgrade).
    grace_started: bool = False

    def changes(self, before: TierState) -> bool:
        """Whether anything stored about the member's tier differs from ``before``."""
        return self.state != before or self.reason is not None


def checks_run(requirements: Iterable[Requirement], facts: Facts) -> tuple[Check, ...]:
    checks = []
    for requirement in requirements:
        current = facts.value(requirement)
        required: Number = 1 if requirement.is_certification else _plain(requirement.minimum)
        checks.append(
            Check(
                metric=requirement.metric,
                window_days=None if requirement.is_certification else requirement.window_days,
                certification=requirement.certification,
                required=required,
                current=current,
                met=current >= required,
            )
        )
    return tuple(checks)


def _all_met(checks: Iterable[Check]) -> bool:
    return all(check.met for check in checks)


def evaluate(*, state: TierState, facts: Facts, rules: Rules, at: datetime) -> Decision:
    """Decide a member's tier at ``at`` (an assessment). Pure and total: every tier in
    ``state`` must be in ``rules``."""
    pin_active = (
        state.pin is not None and state.pinned_until is not None and state.pinned_until > at
    )
    # An ended pin is cleared at the first assessment after it.
    if state.pin is not None and not pin_active:
        held_by_pin = True
        state = replace(state, pin=None, pinned_until=None)
    else:
        held_by_pin = False
    current = rules.tier(state.tier)

    if state.probation_until is not None:
        return _probation(state=state, current=current, facts=facts, rules=rules, at=at)

    upgrade = _best_upgrade(current=current, facts=facts, rules=rules)
    if upgrade is not None:
        target, entry_checks = upgrade
        return Decision(
            state=replace(state, tier=target.code, grace_until=None),
            reason=REASSESSMENT,
            checks=entry_checks,
        )

    maintenance = checks_run(current.maintenance, facts)
    if _all_met(maintenance):
        return Decision(state=replace(state, grace_until=None), checks=maintenance)

    grace_started = state.grace_until is None
    grace_until = state.grace_until or at + timedelta(days=current.grace_days)
    lower = rules.below(current.code)
    pin_floor = rules.tier(state.pin).rank if pin_active and state.pin else -1
    if at < grace_until or lower is None or lower.rank < pin_floor:
        return Decision(
            state=replace(state, grace_until=grace_until),
            checks=maintenance,
            grace_started=grace_started and lower is not None,
        )
    # Demote one rank. If the lower tier's maintenance fails too the grace stays expired, so the
    # next assessment takes the next rank: one step per assessment, no fresh grace per step.
    still_failing = not _all_met(checks_run(lower.maintenance, facts))
    return Decision(
        state=replace(state, tier=lower.code, grace_until=grace_until if still_failing else None),
        reason=PIN_EXPIRED if held_by_pin else GRACE_EXPIRED,
        checks=maintenance,
    )


def _best_upgrade(
    *, current: TierPolicy, facts: Facts, rules: Rules
) -> tuple[TierPolicy, tuple[Check, ...]] | None:
    for tier in reversed(rules.tiers):
        if tier.rank <= current.rank:
            return None
        # Decide first without building explanations: most members meet no higher rule.
        if not tier.nomination_only and _passes(tier.entry, facts):
            return tier, checks_run(tier.entry, facts)
    return None


def _passes(requirements: Iterable[Requirement], facts: Facts) -> bool:
    return all(
        facts.value(requirement) >= (1 if requirement.is_certification else requirement.minimum)
        for requirement in requirements
    )


def _probation(
    *, state: TierState, current: TierPolicy, facts: Facts, rules: Rules, at: datetime
) -> Decision:
    maintenance = checks_run(current.maintenance, facts)
    assert state.probation_until is not None  # noqa: S101 - the caller checked
    if at < state.probation_until:
        return Decision(state=replace(state, grace_until=None), checks=maintenance)
    ended = replace(state, probation_until=None, probation_fallback=None, grace_until=None)
    if _all_met(maintenance):
        return Decision(state=ended, reason=NOMINATION_CONFIRMED, checks=maintenance)
    fallback = state.probation_fallback
    if fallback is None or not rules.has_tier(fallback):
        below = rules.below(current.code)
        fallback = below.code if below is not None else current.code
    return Decision(
        state=replace(ended, tier=fallback), reason=NOMINATION_ROLLED_BACK, checks=maintenance
    )


# --- Progress (the member's view) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a member stands: the next tier's entry checks and the current tier's maintenance."""

    next_tier: str | None
    next_tier_nomination_only: bool
    next_tier_checks: tuple[Check, ...]
    keep_checks: tuple[Check, ...]
    at_risk: bool


def progress(*, state: TierState, facts: Facts, rules: Rules) -> Progress:
    current = rules.tier(state.tier)
    above = rules.above(current.code)
    keep = checks_run(current.maintenance, facts)
    return Progress(
        next_tier=above.code if above else None,
        next_tier_nomination_only=bool(above and above.nomination_only),
        next_tier_checks=checks_run(above.entry, facts) if above else (),
        keep_checks=keep,
        at_risk=state.grace_until is not None or not _all_met(keep),
    )


# --- Validation of a rule version -------------------------------------------------------------


def rules_problems(rules: Rules, *, known_tiers: Iterable[str] | None = None) -> list[str]:
    """Everything wrong with a rule version, as sentences (empty when it is valid).

    Checks: known metrics, windows, non-negative thresholds, certification codes, nothing on the
    lowest tier (every member's floor), and maintenance never stricter than entry: every
    maintenance requirement must have an entry requirement on the same metric and window with a
    minimum at least as high (maintenance may only drop or loosen entry conditions).
    """
    problems: list[str] = []
    known = set(known_tiers) if known_tiers is not None else None
    for tier in rules.tiers:
        if known is not None and tier.code not in known:
            problems.append(f"{tier.code}: unknown tier.")
        if tier.grace_days < 0 or tier.grace_days > MAX_WINDOW_DAYS:
            problems.append(f"{tier.code}: grace days must be between 0 and {MAX_WINDOW_DAYS}.")
        for purpose, requirements in (("entry", tier.entry), ("maintenance", tier.maintenance)):
            problems.extend(
                f"{tier.code} {purpose}: {problem}"
                for problem in _requirements_problems(requirements)
            )
    lowest = rules.lowest if rules.tiers else None
    if lowest is not None:
        if lowest.entry or lowest.maintenance:
            problems.append(
                f"{lowest.code}: the lowest tier is every member's floor and takes no requirements."
            )
        if lowest.nomination_only:
            problems.append(f"{lowest.code}: the lowest tier cannot be nomination-only.")
    for tier in rules.tiers:
        entry_minimums: dict[tuple[str, int | None, str], Decimal] = {}
        for requirement in tier.entry:
            key = (requirement.metric, requirement.metric_key[1], requirement.certification)
            entry_minimums[key] = max(requirement.minimum, entry_minimums.get(key, Decimal(0)))
        for requirement in tier.maintenance:
            key = (requirement.metric, requirement.metric_key[1], requirement.certification)
            entry_minimum = entry_minimums.get(key)
            if entry_minimum is None:
                problems.append(
                    f"{tier.code} maintenance: {_describe(requirement)} is stricter than entry "
                    "(entry has no such requirement)."
                )
            elif requirement.minimum > entry_minimum:
                problems.append(
                    f"{tier.code} maintenance: {_describe(requirement)} is stricter than entry "
                    f"(entry requires {_plain(entry_minimum)})."
                )
    return problems


def _requirements_problems(requirements: Iterable[Requirement]) -> list[str]:
    problems = []
    seen: set[tuple[str, int | None, str]] = set()
    for requirement in requirements:
        problems.extend(_requirement_problems(requirement))
        key = (requirement.metric, requirement.metric_key[1], requirement.certification)
        if key in seen:
            problems.append(f"{_describe(requirement)} is listed twice.")
        seen.add(key)
    return problems


def _requirement_problems(requirement: Requirement) -> list[str]:
    if requirement.is_certification:
        if not requirement.certification:
            return ["a certification requirement names no certification."]
        return []
    problems = []
    if requirement.metric not in METRICS:
        problems.append(
            f"unknown metric {requirement.metric!r} (one of {', '.join(METRICS)}, "
            f"or {CERTIFICATION})."
        )
    if requirement.certification:
        problems.append(f"{requirement.metric} takes no certification.")
    if requirement.minimum < 0:
        problems.append(f"{_describe(requirement)}: the minimum cannot be negative.")
    if requirement.metric not in UNWINDOWED_METRICS and (
        requirement.window_days is None or not 1 <= requirement.window_days <= MAX_WINDOW_DAYS
    ):
        problems.append(
            f"{requirement.metric}: the window must be between 1 and {MAX_WINDOW_DAYS} days."
        )
    return problems


def _describe(requirement: Requirement) -> str:
    if requirement.is_certification:
        return f"certification {requirement.certification}"
    if requirement.metric in UNWINDOWED_METRICS:
        return f"{requirement.metric} >= {_plain(requirement.minimum)}"
    return (
        f"{requirement.metric} >= {_plain(requirement.minimum)} in {requirement.window_days} days"
    )


def json_number(value: Number) -> int | float:
    """A value as it is stored in JSON (history details, event payloads): whole numbers as
    ints, amounts with cents as floats (``json`` cannot write a ``Decimal``)."""
    plain = _plain(value)
    return float(plain) if isinstance(plain, Decimal) else plain


def _plain(value: Number) -> Number:
    """Whole decimals as ints, so 12 reads as 12 and not 12.00 in explanations."""
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return value
