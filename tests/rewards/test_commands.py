"""The points jobs as management commands and Celery tasks."""

import io
from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from core.actors import system_actor
from rewards.models import PointsAccount, PointsEntry
from rewards.services.ledger import points_award
from rewards.tasks import (
    ledger_audit_task,
    points_expire_task,
    points_expiring_notify_task,
    points_release_pending_task,
)

ACTOR = system_actor("tests")


def _run(name: str) -> str:
    out = io.StringIO()
    call_command(name, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_expire_and_release_commands(member, audited):
    now = timezone.now()
    points_award(
        member=member,
        points=10,
        reason="manual",
        actor=ACTOR,
        at=now,
        expires_at=now + timedelta(days=1),
    )
    points_award(
        member=member,
        points=4,
        reason="purchase",
        actor=ACTOR,
        at=now,
        pending_until=now + timedelta(days=1),
    )

    with time_machine.travel(now + timedelta(days=2), tick=False):
        expired = _run("expire_points")
        released = _run("release_pending_points")

    assert expired.strip() == "Expired 1 lots."
    assert released.strip() == "Released 1 lots."
    account = PointsAccount.objects.get(pk=member.pk)
    assert (account.available, account.pending) == (4, 0)


def test_audit_command_passes_on_a_sound_ledger_and_fails_on_a_broken_one(member):
    points_award(member=member, points=10, reason="manual", actor=ACTOR, at=timezone.now())

    assert _run("audit_ledger").strip() == "Ledger audit: no violations."
    PointsAccount.objects.filter(pk=member.pk).update(lifetime_earned=11)
    with pytest.raises(CommandError, match="1 ledger violations"):
        _run("audit_ledger")


def test_tasks_run_the_same_jobs(member, audited):
    now = timezone.now()
    points_award(
        member=member,
        points=3,
        reason="manual",
        actor=ACTOR,
        at=now,
        expires_at=now + timedelta(days=2),
    )

    assert points_expiring_notify_task.apply().get() == 1
    with time_machine.travel(now + timedelta(days=3), tick=False):
        assert points_release_pending_task.apply().get() == 0
        assert points_expire_task.apply().get() == 1
    assert ledger_audit_task.apply().get() == 0
    assert PointsEntry.objects.filter(kind="expire").count() == 1
