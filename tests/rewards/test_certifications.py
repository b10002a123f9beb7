"""Certification grants, re-certification, revocation and expiry, and the tier reassessment
each triggers."""

from collections.abc import Callable
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from core.actors import Actor, ActorKind
from core.exceptions import InvalidInputError
from core.models import OutboxEvent
from members.models import Member
from rewards.models import CertificationGrant
from rewards.services.certifications import (
    NotCertifiedError,
    PrerequisiteMissingError,
    certification_grant,
    certification_revoke,
    certifications_expire,
)

pytestmark = pytest.mark.django_db
OPERATOR = Actor(kind=ActorKind.OPERATOR, user_id=1)


@pytest.fixture
def grant(django_capture_on_commit_callbacks):
    """Grant, then run the commit hooks (the reassessment task runs eagerly in tests)."""

    def run(member: Member, code: str, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return certification_grant(
                member=member,
                code=code,
                actor=OPERATOR,
                at=kwargs.pop("at", timezone.now()),
                **kwargs,
            )

    return run


@pytest.fixture
def revoke(django_capture_on_commit_callbacks):
    def run(member: Member, code: str, reason: str):
        with django_capture_on_commit_callbacks(execute=True):
            return certification_revoke(
                member=member, code=code, reason=reason, actor=OPERATOR, at=timezone.now()
            )

    return run


def test_a_grant_promotes_a_member_who_met_everything_else(
    make_member: Callable[..., Member], add_activity, grant
) -> None:
    member = make_member(at=timezone.now() - timedelta(days=40))
    add_activity(member, days=5, interactions=3)
    grant(member, "onboarding", evidence="Finished the guide")
    member.refresh_from_db()
    assert member.tier_id == "active"
    event = OutboxEvent.objects.get(event_type="certification.granted")
    assert event.payload["certification"] == "onboarding"
    assert not event.payload["renewed"]


def test_prerequisites_must_be_held(make_member, grant) -> None:
    member = make_member()
    with pytest.raises(PrerequisiteMissingError) as error:
        grant(member, "content-creator")
    assert error.value.errors[0]["detail"] == "onboarding"
    assert not CertificationGrant.objects.exists()


def test_recertification_extends_validity_and_never_shortens(make_member, grant) -> None:
    member = make_member()
    now = timezone.now()
    grant(member, "onboarding")
    first = grant(member, "content-creator", at=now)
    assert first.grant.expires_at == now + timedelta(days=365)
    later = grant(member, "content-creator", at=now + timedelta(days=100))
    assert later.renewed
    assert later.grant.expires_at == now + timedelta(days=465)
    shorter = grant(member, "content-creator", expires_at=now + timedelta(days=200), at=now)
    assert shorter.grant.expires_at == now + timedelta(days=465)
    assert CertificationGrant.objects.filter(certification_id="content-creator").count() == 1


def test_unknown_certification_and_past_expiry_are_refused(make_member, grant) -> None:
    member = make_member()
    with pytest.raises(InvalidInputError):
        grant(member, "astronaut")
    with pytest.raises(InvalidInputError):
        grant(member, "onboarding", expires_at=timezone.now() - timedelta(days=1))


def test_revocation_starts_grace_and_is_refused_when_not_held(
    make_member, add_activity, grant, revoke
) -> None:
    member = make_member(at=timezone.now() - timedelta(days=40))
    add_activity(member, days=5, interactions=3)
    grant(member, "onboarding")
    revoke(member, "onboarding", "Fraudulent")
    member.refresh_from_db()
    assert member.tier_id == "active"  # kept during grace
    assert member.tier_grace_until is not None
    assert OutboxEvent.objects.filter(event_type="certification.revoked").count() == 1
    assert OutboxEvent.objects.filter(event_type="tier.will_downgrade").count() == 1
    with pytest.raises(NotCertifiedError):
        revoke(member, "onboarding", "again")
    # A fresh grant after revocation is a new grant, not a renewal.
    assert not grant(member, "onboarding").renewed


def test_expiry_is_announced_once(make_member, grant) -> None:
    member = make_member()
    now = timezone.now()
    grant(member, "onboarding", expires_at=now + timedelta(days=1), at=now)
    assert certifications_expire(at=now) == 0
    assert certifications_expire(at=now + timedelta(days=2)) == 1
    assert certifications_expire(at=now + timedelta(days=3)) == 1
    assert OutboxEvent.objects.filter(event_type="certification.expired").count() == 1


def test_the_expiry_command_announces_and_reassesses(make_member, grant, capsys) -> None:
    from django.core.management import call_command

    member = make_member()
    grant(member, "onboarding", expires_at=timezone.now() + timedelta(seconds=1))
    with time_machine.travel(timezone.now() + timedelta(days=1)):
        call_command("expire_certifications")
    assert "1 expired certifications announced." in capsys.readouterr().out
    assert OutboxEvent.objects.filter(event_type="certification.expired").count() == 1


def test_revocation_demotes_after_the_grace_period(
    make_member, add_activity, grant, revoke
) -> None:
    from core.actors import system_actor
    from tiers.services.reassessment import reassessment_run_inline, reassessment_start

    member = make_member(at=timezone.now() - timedelta(days=40))
    add_activity(member, days=5, interactions=3)
    grant(member, "onboarding")
    revoke(member, "onboarding", "Shared account")
    member.refresh_from_db()
    grace_until = member.tier_grace_until
    assert (member.tier_id, grace_until is not None) == ("active", True)
    # Still engaged every day after: only the missing certification fails maintenance.
    from rewards.services.earning import business_date_of

    add_activity(
        member,
        days=31,
        ending=business_date_of(timezone.now() + timedelta(days=31)),
        interactions=1,
    )

    for days, tier in ((29, "active"), (31, "basic")):
        at = timezone.now() + timedelta(days=days)
        with time_machine.travel(at, tick=False):
            job, _ = reassessment_start(actor=system_actor("tests"), at=at)
            reassessment_run_inline(job_id=job.pk, at=at)
        member.refresh_from_db()
        assert member.tier_id == tier
    assert member.tier_changes.latest("created_at").reason == "grace_expired"
