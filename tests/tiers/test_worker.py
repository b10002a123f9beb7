"""The population reassessment on real Celery workers (Redis broker): one worker, two workers
sharing a job (J3), and a worker killed mid-job then the job re-run (J2).

Each run reassesses 2,000 members in 40 chunks of 50 and must end exactly where an undisturbed
inline run on the same population ends: same member tier state, same history rows, same outbox
events (compared table by table, job ids left out), with no (job, member) history row or event
written twice and the job's progress at 100 %.
"""

import ast
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from celery import Celery
from django.conf import settings
from django.db import transaction

from core.actors import system_actor
from core.models import Job, JobChunk, JobStatus
from members.models import Member
from tests.tiers.population import (
    AT,
    PopulationState,
    history_duplicates,
    members_disagreeing_with_history,
    population_build,
    population_state,
    population_wipe,
)
from tests.workers import (
    WAIT_SECONDS,
    Worker,
    broker_prefix_reserved,
    lock_waiters,
    other_sessions,
    producer_app,
    wait_until,
    worker_environment,
    workers_killed_after,
)
from tiers.services.reassessment import reassessment_run_inline, reassessment_start
from tiers.tasks import reassessment_chunk_task, reassessment_plan_task

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True),
]

SIZE = 2000
CHUNK_SIZE = 50
CHUNKS = 40
JOB_SECONDS = 45
CHUNK_DONE_LINE = re.compile(
    r"Task tiers\.reassessment_chunk\[[^\]]+\] succeeded in [^:]+: (\{.*\})"
)

_reference_cache: list[PopulationState] = []


@pytest.fixture
def reference(transactional_db: Any) -> PopulationState:
    """The undisturbed run: the population reassessed inline in one chunk. Computed once (the
    population and the assessment time are fixed), then the population is built afresh."""
    if not _reference_cache:
        population_build(size=SIZE)
        job, _ = reassessment_start(actor=system_actor("reference"), at=AT, chunk_size=SIZE)
        reassessment_run_inline(job_id=job.pk, at=AT)
        _reference_cache.append(population_state())
        population_wipe()
    population_build(size=SIZE)
    return _reference_cache[0]


@pytest.fixture
def broker_prefix() -> Iterator[str]:
    with broker_prefix_reserved() as prefix:
        yield prefix


@pytest.fixture
def worker_env(broker_prefix: str) -> dict[str, str]:
    return worker_environment(broker_prefix)


@pytest.fixture
def producer(broker_prefix: str) -> Iterator[Celery]:
    with producer_app(broker_prefix) as app:
        yield app


def _bulk_worker(name: str, env: dict[str, str], concurrency: int = 1) -> Worker:
    return Worker(name, env, queues=("bulk",), concurrency=concurrency)


def _job_started() -> Job:
    job, created = reassessment_start(actor=system_actor("tests"), at=AT, chunk_size=CHUNK_SIZE)
    assert created
    return job


def _plan(producer: Celery, job: Job) -> None:
    """``reassessment_plan_task.delay`` as the workers' broker sees it (this process is eager)."""
    producer.send_task(reassessment_plan_task.name, kwargs={"job_id": str(job.pk)}, queue="bulk")


def _wait_done(job: Job, workers: list[Worker]) -> Job:
    try:
        wait_until(
            lambda: Job.objects.filter(pk=job.pk, status=JobStatus.DONE).exists(),
            JOB_SECONDS,
            f"reassessment {job.pk} to be done",
        )
    except AssertionError as error:
        logs = "\n".join(f"--- {worker.name}\n{worker.log()}" for worker in workers)
        raise AssertionError(f"{error}\n{logs}") from None
    job.refresh_from_db()
    return job


def _chunks_ran(worker: Worker) -> list[int]:
    """The chunk indexes this worker ran (not the no-op duplicates), from its log."""
    ran = []
    for line in worker.lines:
        match = CHUNK_DONE_LINE.search(line)
        if match:
            outcome = ast.literal_eval(match.group(1))
            if outcome["ran"]:
                ran.append(outcome["index"])
    return ran


def _assert_matches_reference(job: Job, reference: PopulationState) -> None:
    assert population_state().digests() == reference.digests()
    assert history_duplicates() == []
    assert members_disagreeing_with_history(job) == []
    assert job.status == JobStatus.DONE
    assert job.progress == 1.0
    assert (job.chunks_done, job.chunks_total) == (CHUNKS, CHUNKS)
    assert job.items_done == job.items_total == Member.objects.filter(erased_at=None).count()
    assert job.items_changed == sum(1 for row in reference.history if row[1] != row[2])
    assert not JobChunk.objects.filter(job=job).exclude(status=JobStatus.DONE).exists()


def test_a_worker_runs_the_population_job_in_chunks_to_the_reference_state(
    reference: PopulationState, worker_env: dict[str, str], producer: Celery
) -> None:
    job = _job_started()
    with workers_killed_after() as workers:
        worker = _bulk_worker("bulk", worker_env, concurrency=2)
        workers.append(worker)
        worker.wait_ready()

        _plan(producer, job)
        job = _wait_done(job, workers)

    _assert_matches_reference(job, reference)
    assert sorted(_chunks_ran(worker)) == list(range(CHUNKS))
    assert set(JobChunk.objects.filter(job=job).values_list("attempts", flat=True)) == {1}


def test_two_workers_share_one_job_and_reach_the_reference_state(
    reference: PopulationState, worker_env: dict[str, str], producer: Celery
) -> None:
    job = _job_started()
    with workers_killed_after() as workers:
        workers += [_bulk_worker(name, worker_env) for name in ("left", "right")]
        for worker in workers:
            worker.wait_ready()

        _plan(producer, job)
        job = _wait_done(job, workers)

    _assert_matches_reference(job, reference)
    left, right = (_chunks_ran(worker) for worker in workers)
    assert left, "the left worker ran no chunk"
    assert right, "the right worker ran no chunk"
    # Every chunk ran exactly once, on one of the two workers.
    assert sorted(left + right) == list(range(CHUNKS))
    assert set(JobChunk.objects.filter(job=job).values_list("attempts", flat=True)) == {1}


def _chunk_of_a_changing_member(reference: PopulationState, index: int) -> UUID:
    """A member of chunk ``index`` whose tier state the job writes (it has a history row)."""
    ids = list(Member.objects.filter(erased_at=None).order_by("pk").values_list("pk", flat=True))
    changing = {row[0] for row in reference.history}
    return next(
        pk for pk in ids[index * CHUNK_SIZE : (index + 1) * CHUNK_SIZE] if str(pk) in changing
    )


def test_a_worker_killed_mid_job_then_the_job_re_run_reach_the_reference_state(
    reference: PopulationState, worker_env: dict[str, str], producer: Celery
) -> None:
    # What makes a killed chunk recoverable: the message is acknowledged only after the task,
    # and one at a time per process.
    assert reassessment_chunk_task.acks_late
    assert reassessment_chunk_task.reject_on_worker_lost
    assert settings.CELERY_WORKER_PREFETCH_MULTIPLIER == 1
    job = _job_started()
    stuck = 5
    # A concurrent writer holds one member of chunk 5, so the worker stops inside that chunk's
    # transaction, its writes made and not committed: the moment to kill it.
    victim = _chunk_of_a_changing_member(reference, stuck)
    with workers_killed_after() as workers:
        with transaction.atomic():
            Member.objects.select_for_update().get(pk=victim)  # held until the kill
            first = _bulk_worker("first", worker_env)
            workers.append(first)
            first.wait_ready()
            _plan(producer, job)
            wait_until(
                lambda: (
                    lock_waiters() == 1
                    and JobChunk.objects.filter(
                        job=job, index=stuck, status=JobStatus.RUNNING
                    ).exists()
                ),
                WAIT_SECONDS,
                "the worker to block inside chunk 5",
            )
            done_before_kill = set(
                JobChunk.objects.filter(job=job, status=JobStatus.DONE).values_list(
                    "index", flat=True
                )
            )

            first.kill()

        assert done_before_kill == set(range(stuck))
        job.refresh_from_db()
        assert (job.status, job.chunks_done) == (JobStatus.RUNNING, stuck)
        # The killed chunk wrote nothing: its transaction died with the worker's connection.
        wait_until(lambda: other_sessions() == 0, WAIT_SECONDS, "the dead chunk to roll back")
        assert Member.objects.get(pk=victim).tier_version == 0
        assert list(
            JobChunk.objects.filter(job=job, index=stuck).values_list("status", "items")
        ) == [(JobStatus.RUNNING, 0)]

        second = _bulk_worker("second", worker_env)
        workers.append(second)
        second.wait_ready()
        _plan(producer, job)  # the job re-run: resume its open chunks
        job = _wait_done(job, workers)

    _assert_matches_reference(job, reference)
    # Every chunk ran exactly once to completion across both workers; the killed one twice
    # claimed (its first attempt rolled back).
    assert Counter(_chunks_ran(first) + _chunks_ran(second)) == Counter(range(CHUNKS))
    assert sorted(_chunks_ran(first)) == list(range(stuck))
    attempts = dict(JobChunk.objects.filter(job=job).values_list("index", "attempts"))
    assert attempts.pop(stuck) == 2
    assert set(attempts.values()) == {1}
