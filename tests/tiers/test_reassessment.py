"""The population job end to end (inline, no broker): decisions, history, events, counts."""

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone

from core.actors import system_actor
from core.models import Job, JobStatus, OutboxEvent
from core.read_cache import TokensReplace
from members.models import Member
from tiers.models import TierChange
from tiers.services.reassessment import reassessment_run_inline, reassessment_start

pytestmark = pytest.mark.django_db


def _run(at=None, chunk_size=2):
    at = at or timezone.now()
    job, _ = reassessment_start(actor=system_actor("tests"), at=at, chunk_size=chunk_size)
    return reassessment_run_inline(job_id=job.pk, at=at)


def test_population_job_promotes_by_entry_rules_and_records_why(
    make_member: Callable[..., Member], add_activity, certify
) -> None:
    regular = make_member(at=timezone.now() - timedelta(days=60))
    certify(regular, "onboarding")
    add_activity(regular, days=5, interactions=3)
    creator = make_member(at=timezone.now() - timedelta(days=60))
    certify(creator, "onboarding")
    certify(creator, "content-creator")
    add_activity(creator, days=5, interactions=3, posts=2)
    idle = make_member()
    uncertified = make_member()
    add_activity(uncertified, days=5, interactions=3)

    job = _run()

    assert job.status == JobStatus.DONE
    assert (job.items_total, job.items_done, job.items_changed) == (4, 4, 2)
    tiers = dict(Member.objects.values_list("pk", "tier_id"))
    assert tiers[regular.pk] == "active"
    # Posts but no qualifying points: koc's entry fails on points, active's passes.
    assert tiers[creator.pk] == "active"
    assert tiers[idle.pk] == "basic"
    assert tiers[uncertified.pk] == "basic"
    change = TierChange.objects.get(member=regular)
    assert (change.from_tier_id, change.to_tier_id, change.reason) == (
        "basic",
        "active",
        "reassessment",
    )
    checks = {c["metric"]: c for c in change.details["checks"]}
    assert (checks["interactions"]["current"], checks["interactions"]["required"]) == (15, 12)
    assert OutboxEvent.objects.filter(event_type="member.tier_changed").count() == 2


def test_rerunning_a_done_job_chunk_writes_nothing(make_member, add_activity, certify) -> None:
    member = make_member()
    certify(member, "onboarding")
    add_activity(member, days=5, interactions=3)
    job = _run()
    assert Job.objects.get(pk=job.pk).status == JobStatus.DONE
    from tiers.services.reassessment import reassessment_chunk_run

    outcome = reassessment_chunk_run(job_id=job.pk, index=0, at=timezone.now())
    assert not outcome.ran
    assert TierChange.objects.count() == 1


def test_a_big_award_and_its_refund_reassess_the_member_at_once(
    make_member, add_activity, certify, django_capture_on_commit_callbacks, settings
) -> None:
    from rewards.models import Reason
    from rewards.services.ledger import points_award, points_reverse

    settings.LOYALTY_TIER_REASSESS_AWARD_THRESHOLD = 500
    member = make_member(at=timezone.now() - timedelta(days=60))
    certify(member, "onboarding")
    certify(member, "content-creator")
    add_activity(member, days=6, posts=1)
    with django_capture_on_commit_callbacks(execute=True):
        earn = points_award(
            member=member,
            points=650,
            reason=Reason.PURCHASE,
            actor=system_actor("t"),
            at=timezone.now(),
        )
    member.refresh_from_db()
    assert (member.tier_id, member.tier_grace_until) == ("koc", None)

    # The refund takes the qualifying points back: koc's maintenance fails, grace starts.
    with django_capture_on_commit_callbacks(execute=True):
        points_reverse(entry=earn, actor=system_actor("t"), at=timezone.now())
    member.refresh_from_db()
    assert member.tier_id == "koc"
    assert member.tier_grace_until is not None


def test_a_small_award_does_not_reassess(make_member, django_capture_on_commit_callbacks) -> None:
    from rewards.models import Reason
    from rewards.services.ledger import points_award

    member = make_member()
    with django_capture_on_commit_callbacks() as callbacks:
        points_award(
            member=member,
            points=10,
            reason=Reason.MANUAL,
            actor=system_actor("t"),
            at=timezone.now(),
        )
    # Nothing but the replacement of the member's cached read documents.
    assert [c for c in callbacks if not isinstance(c, TokensReplace)] == []
