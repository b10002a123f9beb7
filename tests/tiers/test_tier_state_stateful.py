"""Hypothesis stateful test of one member's tier state against a small reference model.

Random sequences of activity, clock advances, reassessments, operators' promotions (with and
without a pin) and nominations (approve with probation, reject) run through the real services
(``tiers.services.*``, on the database: the set-based metric queries, the compare-and-set write,
the history rows). After every step the stored state (tier, grace, pin, probation), the history
row count and the nomination's status equal the model's.

The rule version is the test's own, small enough to reason about in the model:
active: interactions >= 4 in 30 days (keep: >= 2); koc: posts >= 3 in 30 days (keep: >= 1);
kol: nomination only, posts >= 5 (keep: >= 2); 10 days' grace everywhere.
"""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import transaction
from django.db.models import F
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from core.actors import system_actor
from core.exceptions import ConflictError
from members.models import Member, MemberDailyActivity
from members.services import member_create
from rewards.services.earning import business_date_of
from tiers.models import Nomination, RuleSet, TierChange, TierRequirement, TierRule
from tiers.services.promotions import (
    NominationOpenError,
    OnProbationError,
    nomination_create,
    nomination_review,
    tier_promote,
)
from tiers.services.reassessment import member_tier_reassess

ACTOR = system_actor("hypothesis")
START = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)  # noon in the business time zone
RANK = {"basic": 0, "active": 1, "koc": 2, "kol": 3}
CODES = ("basic", "active", "koc", "kol")
GRACE_DAYS = 10
WINDOW_DAYS = 30
# tier -> (metric, entry minimum, maintenance minimum); basic has no rule.
RULES = {"active": ("interactions", 4, 2), "koc": ("posts", 3, 1), "kol": ("posts", 5, 2)}
NOMINATION_ONLY = {"kol"}


def _publish_test_rules() -> None:
    rule_set = RuleSet.objects.create(
        version=RuleSet.objects.count() + 100,
        name="Stateful test",
        status="published",
        effective_at=START - timedelta(days=1),
        published_at=START,
        created_at=START,
    )
    for code in CODES:
        TierRule.objects.create(
            rule_set=rule_set,
            tier_id=code,
            nomination_only=code in NOMINATION_ONLY,
            grace_days=GRACE_DAYS,
        )
    TierRequirement.objects.bulk_create(
        TierRequirement(
            rule_set=rule_set,
            tier_id=code,
            purpose=purpose,
            metric=metric,
            window_days=WINDOW_DAYS,
            minimum=minimum,
        )
        for code, (metric, entry, keep) in RULES.items()
        for purpose, minimum in (("entry", entry), ("maintenance", keep))
    )


@dataclass
class Model:
    """What the spec says the member's tier state is (SPEC §2 "Tier rules", "Nominations")."""

    tier: str = "basic"
    grace_until: datetime | None = None
    pin: str | None = None
    pinned_until: datetime | None = None
    probation_until: datetime | None = None
    fallback: str | None = None
    nomination: str | None = None  # status of the latest nomination
    history: int = 0
    activity: dict[date, list[int]] = field(default_factory=dict)  # day -> [interactions, posts]

    def metric(self, name: str, at: datetime) -> int:
        today = business_date_of(at)
        column = 0 if name == "interactions" else 1
        return sum(
            counts[column]
            for day, counts in self.activity.items()
            if today - timedelta(days=WINDOW_DAYS) < day <= today
        )

    def meets(self, tier: str, at: datetime, *, entry: bool) -> bool:
        if tier == "basic":
            return True
        metric, entry_minimum, keep_minimum = RULES[tier]
        return self.metric(metric, at) >= (entry_minimum if entry else keep_minimum)

    def reassess(self, at: datetime) -> None:
        pin_active = (
            self.pin is not None and self.pinned_until is not None and self.pinned_until > at
        )
        pin_ended = self.pin is not None and not pin_active
        if pin_ended:
            self.pin = self.pinned_until = None
        if self.probation_until is not None:
            self.grace_until = None
            if at < self.probation_until:
                return
            self.probation_until = None
            self.history += 1
            if self.meets(self.tier, at, entry=False):
                self.nomination = "confirmed"
            else:
                self.nomination = "rolled_back"
                self.tier = self.fallback or CODES[max(0, RANK[self.tier] - 1)]
            self.fallback = None
            return
        higher = [
            code
            for code in CODES[RANK[self.tier] + 1 :]
            if code not in NOMINATION_ONLY and self.meets(code, at, entry=True)
        ]
        if higher:
            self.tier, self.grace_until = higher[-1], None
            self.history += 1
            return
        if self.meets(self.tier, at, entry=False):
            self.grace_until = None
            return
        self.grace_until = self.grace_until or at + timedelta(days=GRACE_DAYS)
        if self.tier == "basic" or at < self.grace_until:
            return
        lower = CODES[RANK[self.tier] - 1]
        if pin_active and self.pin is not None and RANK[lower] < RANK[self.pin]:
            return
        self.tier = lower
        self.history += 1
        if self.meets(lower, at, entry=False):
            self.grace_until = None


class TierMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        _publish_test_rules()
        self.now = START
        self.member = member_create(
            external_id="stateful", display_name="S", actor=ACTOR, at=self.now
        )
        self.model = Model()

    @rule(days=st.integers(1, 12))
    def advance(self, days: int) -> None:
        """Days pass, then the nightly reassessment runs."""
        self.now += timedelta(days=days)
        self.reassess()

    @rule(interactions=st.integers(0, 3), posts=st.integers(0, 2))
    def act(self, interactions: int, posts: int) -> None:
        day = business_date_of(self.now)
        row, _ = MemberDailyActivity.objects.get_or_create(member=self.member, business_date=day)
        MemberDailyActivity.objects.filter(pk=row.pk).update(
            interactions=F("interactions") + interactions + posts, posts=F("posts") + posts
        )
        counts = self.model.activity.setdefault(day, [0, 0])
        counts[0] += interactions + posts
        counts[1] += posts

    @rule()
    def reassess(self) -> None:
        member_tier_reassess(member_id=self.member.pk, actor=ACTOR, at=self.now)
        self.model.reassess(self.now)

    @rule(tier=st.sampled_from(CODES), pin_days=st.sampled_from([None, 5, 30]))
    def promote(self, tier: str, pin_days: int | None) -> None:
        model = self.model
        call = {"tier": tier, "reason": "ops", "actor": ACTOR, "at": self.now, "pin_days": pin_days}
        if model.probation_until is not None:
            with pytest.raises(OnProbationError):
                tier_promote(member=self._member(), **call)
            return
        if tier == model.tier and pin_days is None:
            with pytest.raises(ConflictError):
                tier_promote(member=self._member(), **call)
            return
        tier_promote(member=self._member(), **call)
        if pin_days is not None:
            model.pin, model.pinned_until = tier, self.now + timedelta(days=pin_days)
        elif model.pin is not None and RANK[tier] < RANK[model.pin]:
            model.pin = model.pinned_until = None
        model.tier, model.grace_until = tier, None
        model.history += 1

    @rule()
    def nominate(self) -> None:
        model = self.model
        call = {"tier": "kol", "evidence": "e", "evidence_urls": [], "actor": ACTOR}
        if RANK[model.tier] >= RANK["kol"]:
            with pytest.raises(ConflictError) as raised:
                nomination_create(member=self._member(), at=self.now, **call)
            assert not isinstance(raised.value, NominationOpenError)
            return
        if model.nomination in ("pending", "probation"):
            with pytest.raises(NominationOpenError):
                nomination_create(member=self._member(), at=self.now, **call)
            return
        nomination_create(member=self._member(), at=self.now, **call)
        model.nomination = "pending"

    @precondition(lambda self: self.model.nomination == "pending")
    @rule(approve=st.booleans(), probation_days=st.sampled_from([3, 15]))
    def review(self, approve: bool, probation_days: int) -> None:
        model = self.model
        nomination = Nomination.objects.get(member=self.member, status="pending")
        call = {"note": "", "actor": ACTOR, "at": self.now, "probation_days": probation_days}
        if approve and model.tier == "kol":
            with pytest.raises(ConflictError):
                nomination_review(nomination=nomination, approve=True, **call)
            return
        nomination_review(nomination=nomination, approve=approve, **call)
        if not approve:
            model.nomination = "rejected"
            return
        model.nomination = "probation"
        model.fallback, model.tier = model.tier, "kol"
        model.probation_until = self.now + timedelta(days=probation_days)
        model.grace_until = None
        model.history += 1

    def _member(self) -> Member:
        return Member.objects.select_related("tier").get(pk=self.member.pk)

    @invariant()
    def stored_state_matches_the_model(self) -> None:
        if not hasattr(self, "member"):
            return
        stored = Member.objects.filter(pk=self.member.pk).values(
            "tier_id",
            "tier_grace_until",
            "tier_pin_id",
            "tier_pinned_until",
            "tier_probation_until",
        )[0]
        model = self.model
        assert stored == {
            "tier_id": model.tier,
            "tier_grace_until": model.grace_until,
            "tier_pin_id": model.pin,
            "tier_pinned_until": model.pinned_until,
            "tier_probation_until": model.probation_until,
        }
        changes = TierChange.objects.filter(member=self.member)
        assert changes.count() == model.history
        latest = changes.order_by("-created_at", "-id").first()
        assert latest is None or latest.to_tier_id == model.tier
        statuses = list(
            Nomination.objects.filter(member=self.member)
            .order_by("-id")
            .values_list("status", flat=True)
        )
        assert (statuses[0] if statuses else None) == model.nomination
        assert sum(status in ("pending", "probation") for status in statuses) <= 1


SETTINGS = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.django_db
def test_tier_state_matches_the_model():
    class Isolated(TierMachine):
        """Each example runs in a savepoint rolled back afterwards, so examples are independent."""

        def __init__(self) -> None:
            super().__init__()
            self._atomic = transaction.atomic()
            self._atomic.__enter__()

        def teardown(self) -> None:
            transaction.set_rollback(True)
            self._atomic.__exit__(None, None, None)

    run_state_machine_as_test(Isolated, settings=SETTINGS)
