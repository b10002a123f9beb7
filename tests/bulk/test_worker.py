"""A bulk operation on real Celery workers (Redis broker): two workers share its chunks, and
every chunk delivered twice still acts on each member once."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from django.utils import timezone

from bulk.models import BulkItem, BulkOperation
from bulk.services import Selection, bulk_operation_start
from bulk.tasks import bulk_chunk_task, bulk_operation_plan_task
from core.actors import system_actor
from core.models import Job, JobChunk, JobStatus
from members.models import Member
from rewards.models import PointsAccount, PointsEntry
from tests.workers import (
    Worker,
    broker_prefix_reserved,
    producer_app,
    wait_until,
    worker_environment,
    workers_killed_after,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True),
]

SIZE = 600
CHUNK_SIZE = 50
CHUNKS = SIZE // CHUNK_SIZE
JOB_SECONDS = 60


@pytest.fixture
def broker_prefix() -> Iterator[str]:
    with broker_prefix_reserved() as prefix:
        yield prefix


@pytest.fixture
def producer(broker_prefix: str) -> Iterator[Celery]:
    with producer_app(broker_prefix) as app:
        yield app


def _started() -> BulkOperation:
    return bulk_operation_start(
        operation="points_award",
        params={"points": 9},
        selection=Selection(members=Member.objects.all()),
        actor=system_actor("worker-test"),
        at=timezone.now(),
        chunk_size=CHUNK_SIZE,
    )


def _wait_done(job_id: Any, workers: list[Worker]) -> Job:
    try:
        wait_until(
            lambda: Job.objects.filter(pk=job_id, status=JobStatus.DONE).exists(),
            JOB_SECONDS,
            f"bulk operation {job_id} to be done",
        )
    except AssertionError as error:
        logs = "\n".join(f"--- {worker.name}\n{worker.log()}" for worker in workers)
        raise AssertionError(f"{error}\n{logs}") from None
    return Job.objects.get(pk=job_id)


def _assert_each_member_awarded_once(job: Job) -> None:
    assert (job.chunks_done, job.items_done) == (CHUNKS, SIZE)
    assert PointsEntry.objects.count() == SIZE
    assert set(PointsAccount.objects.values_list("available", flat=True)) == {9}
    assert BulkItem.objects.filter(job=job, status="succeeded").count() == SIZE
    assert BulkOperation.objects.get(pk=job.pk).succeeded_count == SIZE


def test_two_workers_share_a_bulk_award_and_redelivered_chunks_do_nothing_twice(
    bulk_members: Callable[..., list[Member]], broker_prefix: str, producer: Celery
) -> None:
    bulk_members(SIZE)
    operation = _started()
    env = worker_environment(broker_prefix)
    with workers_killed_after() as workers:
        workers += [Worker(name, env, queues=("bulk",)) for name in ("left", "right")]
        for worker in workers:
            worker.wait_ready()

        producer.send_task(
            bulk_operation_plan_task.name, kwargs={"job_id": str(operation.pk)}, queue="bulk"
        )
        # A duplicate delivery of every chunk, as a broker redelivering after a lost ack would.
        for index in range(CHUNKS):
            producer.send_task(
                bulk_chunk_task.name,
                kwargs={"job_id": str(operation.pk), "index": index},
                queue="bulk",
            )
        job = _wait_done(operation.pk, workers)
        wait_until(
            lambda: (
                sum(
                    "bulk.operation_chunk" in line and "succeeded" in line
                    for worker in workers
                    for line in worker.lines
                )
                >= 2 * CHUNKS
            ),
            JOB_SECONDS,
            "every chunk message to be handled",
        )

    _assert_each_member_awarded_once(job)
    assert not JobChunk.objects.filter(job=job).exclude(status=JobStatus.DONE).exists()
