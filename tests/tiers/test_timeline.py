"""Tier state across dates, through the real job (inline) and services: grace, pins, one rank
per assessment, probation, the downgrade warning, the tier held on a past date."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from core.actors import Actor, ActorKind, system_actor
from core.models import OutboxEvent
from members.models import Member
from rewards.services.earning import business_date_of
from tiers.models import Nomination, NominationStatus, TierChange
from tiers.selectors import tier_held_on
from tiers.services.promotions import (
    OnProbationError,
    nomination_create,
    nomination_review,
    tier_promote,
)
from tiers.services.reassessment import reassessment_run_inline, reassessment_start

pytestmark = pytest.mark.django_db

START = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)  # 12:00 in Asia/Shanghai
GRACE_START = 88
OPERATOR = Actor(kind=ActorKind.OPERATOR, user_id=1)


def nightly(day: int) -> str:
    """Run the population job ``day`` days after START; returns the member's tier."""
    at = START + timedelta(days=day)
    with time_machine.travel(at, tick=False):
        job, _ = reassessment_start(actor=system_actor("tests"), at=at)
        reassessment_run_inline(job_id=job.pk, at=at)


def tier_of(member: Member) -> Member:
    return Member.objects.get(pk=member.pk)


@pytest.fixture
def koc(make_member: Callable[..., Member], add_activity, certify) -> Member:
    """A member who earned koc on START (posts and points), then went quiet."""
    member = make_member(at=START - timedelta(days=200))
    certify(member, "onboarding", at=START - timedelta(days=100))
    certify(member, "content-creator", at=START - timedelta(days=100))
    add_activity(member, days=8, ending=business_date_of(START), interactions=2, posts=1)
    from rewards.models import Reason
    from rewards.services.ledger import points_award

    with time_machine.travel(START - timedelta(days=1), tick=False):
        points_award(
            member=member,
            points=700,
            reason=Reason.MANUAL,
            actor=OPERATOR,
            at=timezone.now(),
        )
    nightly(0)
    assert tier_of(member).tier_id == "koc"
    return member


def test_grace_then_one_rank_per_assessment_then_history_answers_past_dates(koc: Member) -> None:
    # The 90-day window ending on day 88 holds only 2 of the 8 post days: maintenance (3 posts)
    # fails from then on.
    nightly(GRACE_START - 1)
    assert tier_of(koc).tier_grace_until is None
    nightly(GRACE_START)
    state = tier_of(koc)
    assert state.tier_id == "koc"
    assert state.tier_grace_until == START + timedelta(days=GRACE_START + 30)
    warnings = OutboxEvent.objects.filter(event_type="tier.will_downgrade")
    assert warnings.count() == 1
    assert warnings.get().payload["downgrade_to"] == "active"
    nightly(GRACE_START + 1)  # same grace, no second "start" warning
    assert warnings.count() == 1
    nightly(GRACE_START + 30 - 5)  # inside the last days: the final warning, once
    nightly(GRACE_START + 30 - 4)
    assert warnings.count() == 2

    nightly(GRACE_START + 30)  # grace over: one rank down
    state = tier_of(koc)
    assert state.tier_id == "active"
    # active's maintenance fails too (no interactions): the next assessment takes the next
    # rank, without a fresh grace.
    nightly(GRACE_START + 31)
    assert tier_of(koc).tier_id == "basic"

    reasons = list(
        TierChange.objects.filter(member=koc)
        .order_by("created_at")
        .values_list("from_tier_id", "to_tier_id", "reason")
    )
    assert reasons == [
        ("basic", "koc", "reassessment"),
        ("koc", "active", "grace_expired"),
        ("active", "basic", "grace_expired"),
    ]
    day = business_date_of(START)
    assert tier_held_on(member=koc, day=day - timedelta(days=1))[0] == "basic"
    assert tier_held_on(member=koc, day=day + timedelta(days=100))[0] == "koc"
    assert tier_held_on(member=koc, day=day + timedelta(days=GRACE_START + 30))[0] == "active"
    assert tier_held_on(member=koc, day=day + timedelta(days=200))[0] == "basic"


def test_a_pin_holds_the_tier_until_it_ends(koc: Member) -> None:
    with time_machine.travel(START + timedelta(days=1), tick=False):
        tier_promote(
            member=koc,
            tier="koc",
            reason="Campaign lead",
            pin_days=150,
            actor=OPERATOR,
            at=timezone.now(),
        )
    nightly(GRACE_START + 30)  # grace over, but pinned until day 151
    assert tier_of(koc).tier_id == "koc"
    nightly(150)
    assert tier_of(koc).tier_id == "koc"
    nightly(152)
    state = tier_of(koc)
    assert (state.tier_id, state.tier_pin_id) == ("active", None)
    assert TierChange.objects.filter(member=koc).latest("created_at").reason == "pin_expired"


def test_nomination_probation_confirms_when_maintenance_holds(koc: Member, add_activity) -> None:
    with time_machine.travel(START + timedelta(days=1), tick=False):
        nomination = nomination_create(
            member=koc,
            tier="kol",
            evidence="Ran three meetups",
            evidence_urls=[],
            actor=OPERATOR,
            at=timezone.now(),
        )
        nomination_review(
            nomination=nomination,
            approve=True,
            note="Great work",
            actor=OPERATOR,
            at=timezone.now(),
        )
    state = tier_of(koc)
    assert (state.tier_id, state.tier_probation_until) == ("kol", START + timedelta(days=31))
    with pytest.raises(OnProbationError):
        tier_promote(member=koc, tier="koc", reason="x", actor=OPERATOR, at=timezone.now())
    nightly(20)  # on probation: held
    assert tier_of(koc).tier_id == "kol"
    nightly(32)  # probation over; kol maintenance needs brand-ambassador: missing -> rolled back
    state = tier_of(koc)
    assert (state.tier_id, state.tier_probation_until) == ("koc", None)
    assert Nomination.objects.get().status == NominationStatus.ROLLED_BACK


def test_nomination_confirmed(koc: Member, certify) -> None:
    certify(koc, "brand-ambassador", at=START)
    with time_machine.travel(START + timedelta(days=1), tick=False):
        nomination = nomination_create(
            member=koc,
            tier="kol",
            evidence="Brand talks",
            evidence_urls=["https://e.x/1"],
            actor=OPERATOR,
            at=timezone.now(),
        )
        nomination_review(
            nomination=nomination,
            approve=True,
            note="",
            actor=OPERATOR,
            at=timezone.now(),
            probation_days=10,
        )
    nightly(12)
    assert tier_of(koc).tier_id == "kol"
    assert Nomination.objects.get().status == NominationStatus.CONFIRMED
    assert list(
        TierChange.objects.filter(member=koc)
        .order_by("created_at")
        .values_list("reason", flat=True)
    ) == ["reassessment", "nomination_approved", "nomination_confirmed"]
    # Confirmed and active kol: nightly runs keep it while maintenance holds.
    nightly(13)
    assert tier_of(koc).tier_id == "kol"
