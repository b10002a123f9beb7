"""Bulk operations through the services: materializing the selection, running chunks, re-runs."""

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
import time_machine
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnavailableError

from bulk.models import BulkItem, BulkOperation, ItemStatus
from bulk.services import (
    EmptySelectionError,
    Selection,
    bulk_chunk_run,
    bulk_operation_plan,
    bulk_operation_request,
    bulk_operation_start,
    bulk_operations_stalled,
)
from bulk.tasks import bulk_operation_plan_task, bulk_watchdog_task
from core.actors import system_actor
from core.exceptions import InvalidInputError
from core.models import Job, JobChunk, JobStatus
from members.models import Member
from rewards.models import Certification, CertificationGrant, PointsAccount, PointsEntry

pytestmark = pytest.mark.django_db
ACTOR = system_actor("tests")


def _run_all(job_id: Any) -> None:
    at = timezone.now()
    for index in bulk_operation_plan(job_id=job_id, at=at):
        bulk_chunk_run(job_id=job_id, index=index, at=at)


def test_points_award_by_filter_awards_each_tagged_member_once_in_chunks(
    bulk_members: Callable[..., list[Member]],
) -> None:
    tagged = bulk_members(5, prefix="vip", tag="shop:vip")
    bulk_members(3, prefix="plain")
    at = timezone.now()

    operation = bulk_operation_start(
        operation="points_award",
        params={"points": 25, "reason": "manual", "note": "thanks"},
        selection=Selection(members=Member.objects.filter(tags__key="vip")),
        actor=ACTOR,
        at=at,
        chunk_size=2,
    )
    _run_all(operation.pk)

    job = Job.objects.get(pk=operation.pk)
    operation.refresh_from_db()
    assert (job.status, job.chunks_total, job.chunks_done) == (JobStatus.DONE, 3, 3)
    assert (job.items_total, job.items_done) == (5, 5)
    assert (operation.succeeded_count, operation.skipped_count, operation.failed_count) == (5, 0, 0)
    balances = dict(PointsAccount.objects.values_list("member_id", "available"))
    assert balances == {member.pk: 25 for member in tagged}
    assert set(BulkItem.objects.filter(job=job).values_list("status", "outcome")) == {
        ("succeeded", "awarded")
    }
    assert list(
        BulkItem.objects.filter(job=job).order_by("position").values_list("chunk", flat=True)
    ) == [0, 0, 1, 1, 2]


def test_a_chunk_run_again_does_nothing_twice(bulk_members: Callable[..., list[Member]]) -> None:
    bulk_members(4)
    at = timezone.now()
    operation = bulk_operation_start(
        operation="points_award",
        params={"points": 10},
        selection=Selection(members=Member.objects.all()),
        actor=ACTOR,
        at=at,
        chunk_size=2,
    )
    _run_all(operation.pk)

    again = bulk_chunk_run(job_id=operation.pk, index=0, at=at)
    # Even a chunk forced open again (its done mark lost) awards nobody twice: the per (job,
    # member) idempotency keys skip them.
    JobChunk.objects.filter(job_id=operation.pk, index=1).update(status=JobStatus.PENDING)
    BulkItem.objects.filter(job_id=operation.pk, chunk=1).update(status=ItemStatus.PENDING)
    Job.objects.filter(pk=operation.pk).update(
        status=JobStatus.RUNNING, chunks_done=1, items_done=2
    )
    forced = bulk_chunk_run(job_id=operation.pk, index=1, at=at)

    assert again.ran is False
    assert forced.ran is True
    assert PointsEntry.objects.count() == 4
    assert sorted(PointsAccount.objects.values_list("available", flat=True)) == [10] * 4
    assert set(
        BulkItem.objects.filter(job_id=operation.pk, chunk=1).values_list("status", "outcome")
    ) == {("skipped", "already_awarded")}


def test_external_ids_unknown_ones_are_failed_items(
    bulk_members: Callable[..., list[Member]],
) -> None:
    members = bulk_members(3)
    at = timezone.now()

    operation = bulk_operation_start(
        operation="certification_grant",
        params={"certification": "onboarding", "evidence": "guide finished"},
        selection=Selection(
            external_ids=[members[0].external_id, "nobody", members[2].external_id, "nobody"]
        ),
        actor=ACTOR,
        at=at,
    )
    _run_all(operation.pk)

    operation.refresh_from_db()
    items = list(
        BulkItem.objects.filter(job_id=operation.pk)
        .order_by("position")
        .values_list("external_id", "status", "outcome")
    )
    assert items == [
        (members[0].external_id, "succeeded", "granted"),
        ("nobody", "failed", "unknown_member"),
        (members[2].external_id, "succeeded", "granted"),
    ]
    assert (operation.succeeded_count, operation.skipped_count, operation.failed_count) == (2, 0, 1)
    assert set(
        CertificationGrant.objects.filter(certification_id="onboarding").values_list(
            "member_id", flat=True
        )
    ) == {members[0].pk, members[2].pk}


def test_certification_already_held_is_skipped_and_missing_prerequisite_fails(
    bulk_members: Callable[..., list[Member]], certify: Callable[..., Any]
) -> None:
    holder, ready, unready = bulk_members(3)
    certify(holder, "onboarding")
    certify(holder, "content-creator")
    certify(ready, "onboarding")
    before = CertificationGrant.objects.get(member=holder, certification_id="content-creator")

    operation = bulk_operation_start(
        operation="certification_grant",
        params={"certification": "content-creator"},
        selection=Selection(members=Member.objects.all()),
        actor=ACTOR,
        at=timezone.now(),
    )
    _run_all(operation.pk)

    outcomes = dict(
        BulkItem.objects.filter(job_id=operation.pk).values_list("member_id", "outcome")
    )
    assert outcomes == {
        holder.pk: "already_held",
        ready.pk: "granted",
        unready.pk: "prerequisite_missing",
    }
    operation.refresh_from_db()
    assert (operation.succeeded_count, operation.skipped_count, operation.failed_count) == (1, 1, 1)
    after = CertificationGrant.objects.get(member=holder, certification_id="content-creator")
    assert (after.granted_at, after.expires_at) == (before.granted_at, before.expires_at)
    assert not CertificationGrant.objects.filter(
        member=unready, certification_id="content-creator"
    ).exists()


@pytest.mark.parametrize(
    ("operation", "params", "attr"),
    [
        ("points_award", {"points": 0}, "points"),
        ("points_award", {"points": 5, "reason": "purchase"}, "reason"),
        ("certification_grant", {"certification": "no-such-thing"}, "certification"),
        ("unknown", {}, "operation"),
    ],
)
def test_bad_parameters_create_nothing(
    bulk_members: Callable[..., list[Member]], operation: str, params: dict[str, Any], attr: str
) -> None:
    bulk_members(2)

    with pytest.raises(InvalidInputError) as raised:
        bulk_operation_start(
            operation=operation,
            params=params,
            selection=Selection(members=Member.objects.all()),
            actor=ACTOR,
            at=timezone.now(),
        )

    assert raised.value.errors[0]["attr"] == attr
    assert (Job.objects.count(), BulkOperation.objects.count(), BulkItem.objects.count()) == (
        0,
        0,
        0,
    )


def test_an_empty_selection_creates_nothing(bulk_members: Callable[..., list[Member]]) -> None:
    bulk_members(2)

    with pytest.raises(EmptySelectionError):
        bulk_operation_start(
            operation="tier_reassessment",
            params={},
            selection=Selection(members=Member.objects.filter(external_id="none")),
            actor=ACTOR,
            at=timezone.now(),
        )

    assert (Job.objects.count(), BulkItem.objects.count(), JobChunk.objects.count()) == (0, 0, 0)


def test_request_runs_inline_without_a_broker(
    bulk_members: Callable[..., list[Member]], django_capture_on_commit_callbacks: Any
) -> None:
    bulk_members(3)

    with django_capture_on_commit_callbacks(execute=True):
        operation = bulk_operation_request(
            operation="tier_reassessment",
            params={},
            selection=Selection(members=Member.objects.all()),
            actor=ACTOR,
            at=timezone.now(),
        )

    job = Job.objects.get(pk=operation.pk)
    operation.refresh_from_db()
    assert (job.status, job.items_done, operation.succeeded_count) == (JobStatus.DONE, 3, 3)
    assert set(BulkItem.objects.values_list("outcome", flat=True)) == {"reassessed"}


def test_erased_members_are_left_out_or_skipped(bulk_members: Callable[..., list[Member]]) -> None:
    first, second, third = bulk_members(3)
    Member.objects.filter(pk=first.pk).update(erased_at=timezone.now())
    operation = bulk_operation_start(
        operation="points_award",
        params={"points": 3},
        selection=Selection(members=Member.objects.all()),
        actor=ACTOR,
        at=timezone.now(),
    )
    # Erased after the selection was taken: skipped when its chunk runs.
    Member.objects.filter(pk=second.pk).update(erased_at=timezone.now())

    _run_all(operation.pk)

    outcomes = dict(
        BulkItem.objects.filter(job_id=operation.pk).values_list("member_id", "outcome")
    )
    assert outcomes == {second.pk: "member_erased", third.pk: "awarded"}


def test_stalled_chunks_are_found_for_the_watchdog(
    bulk_members: Callable[..., list[Member]],
) -> None:
    bulk_members(3)
    at = timezone.now()
    operation = bulk_operation_start(
        operation="tier_reassessment",
        params={},
        selection=Selection(members=Member.objects.all()),
        actor=ACTOR,
        at=at,
        chunk_size=2,
    )
    bulk_operation_plan(job_id=operation.pk, at=at)
    bulk_chunk_run(job_id=operation.pk, index=0, at=at)

    soon = bulk_operations_stalled(at=at)
    later = bulk_operations_stalled(at=at + timedelta(hours=1))

    assert soon == {}
    assert later == {operation.pk: [1]}


def test_the_watchdog_runs_chunks_whose_worker_died(
    bulk_members: Callable[..., list[Member]],
) -> None:
    bulk_members(3)
    started_at = timezone.now() - timedelta(hours=1)
    operation = bulk_operation_start(
        operation="points_award",
        params={"points": 4},
        selection=Selection(members=Member.objects.all()),
        actor=ACTOR,
        at=started_at,
        chunk_size=2,
    )
    # Planned an hour ago; its chunk messages were lost with the worker.
    bulk_operation_plan(job_id=operation.pk, at=started_at)

    dispatched = bulk_watchdog_task()

    assert dispatched == 2
    job = Job.objects.get(pk=operation.pk)
    assert (job.status, job.chunks_done) == (JobStatus.DONE, 2)
    assert sorted(PointsAccount.objects.values_list("available", flat=True)) == [4, 4, 4]
    assert bulk_watchdog_task() == 0


def test_a_refusal_of_a_whole_chunk_fails_its_items_and_the_job_finishes(
    bulk_members: Callable[..., list[Member]],
) -> None:
    bulk_members(2)
    operation = bulk_operation_start(
        operation="certification_grant",
        params={"certification": "onboarding"},
        selection=Selection(members=Member.objects.all()),
        actor=ACTOR,
        at=timezone.now(),
    )
    Certification.objects.filter(pk="onboarding").update(is_active=False)

    _run_all(operation.pk)

    operation.refresh_from_db()
    assert Job.objects.get(pk=operation.pk).status == JobStatus.DONE
    assert operation.failed_count == 2
    assert set(BulkItem.objects.values_list("status", "outcome")) == {
        ("failed", "validation_error")
    }
    assert CertificationGrant.objects.count() == 0


def test_an_operation_started_while_the_broker_is_down_is_planned_by_the_watchdog(
    bulk_members: Callable[..., list[Member]], django_capture_on_commit_callbacks: Any
) -> None:
    bulk_members(3)
    with (
        mock.patch.object(
            bulk_operation_plan_task, "delay", side_effect=BrokerUnavailableError("down")
        ),
        django_capture_on_commit_callbacks(execute=True),
    ):
        operation = bulk_operation_start(
            operation="points_award",
            params={"points": 4},
            selection=Selection(members=Member.objects.all()),
            actor=ACTOR,
            at=timezone.now(),
            chunk_size=2,
        )
    job = Job.objects.get(pk=operation.pk)
    assert job.status == JobStatus.PENDING

    with time_machine.travel(job.created_at + timedelta(minutes=1)):
        bulk_watchdog_task()  # younger than a lease: its message may still be queued
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING

    with time_machine.travel(job.created_at + timedelta(hours=1)):
        bulk_watchdog_task()  # plans it; the chunks run inline (no broker in tests)
    job.refresh_from_db()
    assert (job.status, job.items_done) == (JobStatus.DONE, 3)
    assert PointsEntry.objects.filter(points=4).count() == 3
