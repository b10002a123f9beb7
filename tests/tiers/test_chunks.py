"""The reassessment job's chunks without a worker: a re-run is a no-op (J1), a chunk that dies
before its commit leaves nothing behind, a duplicate delivery waits for the chunk lock and finds
the chunk done (J4), the nightly schedule firing twice starts one job (J5), and the watchdog
dispatches again exactly the chunks whose lease ran out.

Every end state is compared with a reference: the same population (same seed, same ids) built
afresh and reassessed inline in one chunk.
"""

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
import time_machine
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnavailableError

from core.actors import system_actor
from core.models import Job, JobChunk, JobStatus, OutboxEvent
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
from tests.workers import WAIT_SECONDS, lock_waiters, wait_until
from tiers.models import TierChange
from tiers.services import reassessment
from tiers.services.reassessment import (
    reassessment_chunk_run,
    reassessment_fail,
    reassessment_plan,
    reassessment_request,
    reassessment_run_inline,
    reassessment_start,
)
from tiers.tasks import (
    reassess_population_task,
    reassessment_plan_task,
    reassessment_watchdog_task,
)

SIZE = 200
CHUNK_SIZE = 50  # 4 chunks


class WorkerDiedError(Exception):
    """Stands for the process dying at that point."""


@pytest.fixture
def reference(db: Any) -> PopulationState:
    """The end state of the population reassessed inline in one chunk; the population is then
    built again untouched for the test."""
    population_build(size=SIZE)
    job, _ = reassessment_start(actor=system_actor("reference"), at=AT, chunk_size=10 * SIZE)
    reassessment_run_inline(job_id=job.pk, at=AT)
    state = population_state()
    population_wipe()
    population_build(size=SIZE)
    return state


def _planned_job() -> Job:
    job, _ = reassessment_start(actor=system_actor("tests"), at=AT, chunk_size=CHUNK_SIZE)
    assert reassessment_plan(job_id=job.pk, at=AT) == [0, 1, 2, 3]
    return job


def _tables() -> dict[str, list[dict[str, Any]]]:
    """Every row the job touches, every column (ids and timestamps included)."""
    return {
        "members": list(Member.objects.order_by("pk").values()),
        "history": list(TierChange.objects.order_by("pk").values()),
        "outbox": list(OutboxEvent.objects.order_by("pk").values()),
        "jobs": list(Job.objects.order_by("pk").values()),
        "chunks": list(JobChunk.objects.order_by("job", "index").values()),
    }


def _assert_job_complete(job: Job) -> None:
    job.refresh_from_db()
    assert job.status == JobStatus.DONE
    assert (job.chunks_done, job.items_done) == (job.chunks_total, job.items_total)
    assert job.items_total == Member.objects.filter(erased_at__isnull=True).count()
    assert history_duplicates() == []
    assert members_disagreeing_with_history(job) == []


# --- J1: a re-run is a no-op --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_chunk_run_twice_writes_nothing_the_second_time(reference: PopulationState) -> None:
    job = _planned_job()
    first = reassessment_chunk_run(job_id=job.pk, index=1, at=AT)
    after_first = _tables()

    second = reassessment_chunk_run(job_id=job.pk, index=1, at=AT + timedelta(minutes=5))

    assert (first.ran, first.assessed) == (True, 50)
    assert first.changed > 0
    assert (second.ran, second.assessed, second.changed, second.job_done) == (False, 0, 0, False)
    assert _tables() == after_first
    chunk = JobChunk.objects.get(job=job, index=1)
    assert (chunk.status, chunk.attempts) == (JobStatus.DONE, 1)


@pytest.mark.django_db
def test_a_chunk_decided_again_past_its_done_mark_writes_nothing(
    reference: PopulationState,
) -> None:
    """The chunk's own statement, not only its "done" mark, refuses to write a member twice:
    the second pass changes no row and raises nothing (its history insert has no ON CONFLICT,
    so a member written twice would fail on the unique (job, member) key)."""
    job = _planned_job()
    chunk = JobChunk.objects.select_related("job").get(job=job, index=1)
    with transaction.atomic():
        first = reassessment._chunk_assess(job=chunk.job, lower=chunk.lower, upper=chunk.upper)
    after_first = _tables()

    with transaction.atomic():
        second = reassessment._chunk_assess(job=chunk.job, lower=chunk.lower, upper=chunk.upper)

    assert first.changed > 0
    assert (second.assessed, second.changed) == (first.assessed, 0)
    assert _tables() == after_first


@pytest.mark.django_db
def test_every_chunk_run_twice_in_any_order_reaches_the_reference_state(
    reference: PopulationState,
) -> None:
    job = _planned_job()

    outcomes = [
        reassessment_chunk_run(job_id=job.pk, index=index, at=AT) for index in (3, 1, 3, 0, 2, 1)
    ]
    again = [reassessment_chunk_run(job_id=job.pk, index=index, at=AT) for index in range(4)]

    assert [outcome.ran for outcome in outcomes] == [True, True, False, True, True, False]
    assert [outcome.job_done for outcome in outcomes] == [False] * 4 + [True, False]
    assert not any(outcome.ran for outcome in again)
    assert population_state().digests() == reference.digests()
    _assert_job_complete(job)
    assert job.items_changed == sum(1 for row in reference.history if row[1] != row[2])


@contextmanager
def _dies_before_commit() -> Iterator[None]:
    """The chunk's transaction does all its work (history, events, done mark, job counters),
    then the process dies before COMMIT."""

    @contextmanager
    def atomic_then_die() -> Iterator[None]:
        with transaction.atomic(durable=True):
            yield
            raise WorkerDiedError()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reassessment, "durable_atomic", atomic_then_die)
        yield


@pytest.mark.django_db
def test_a_chunk_that_dies_before_commit_leaves_nothing_and_its_rerun_writes_once(
    reference: PopulationState,
) -> None:
    job = _planned_job()
    before = _tables()
    with _dies_before_commit(), pytest.raises(WorkerDiedError):
        reassessment_chunk_run(job_id=job.pk, index=2, at=AT)
    # Only the claim (its own short transaction, before the work) survives: visible as running.
    chunk = JobChunk.objects.get(job=job, index=2)
    assert (chunk.status, chunk.attempts, chunk.items) == (JobStatus.RUNNING, 1, 0)
    after_crash = _tables()
    for table in ("members", "history", "outbox", "jobs"):
        assert after_crash[table] == before[table], table

    rerun = reassessment_chunk_run(job_id=job.pk, index=2, at=AT)
    job = reassessment_run_inline(job_id=job.pk, at=AT)

    assert (rerun.ran, rerun.assessed) == (True, 50)
    assert JobChunk.objects.get(job=job, index=2).attempts == 2
    assert population_state().digests() == reference.digests()
    _assert_job_complete(job)


def _reopen_chunk_of_a_pin_expiry(job: Job, reference: PopulationState) -> int:
    """Reopen by hand the done chunk holding a member demoted koc -> active by a pin expiry (a
    second assessment would demote them again, active's maintenance failing too). A chunk cannot
    lose its done mark (it commits with the chunk's writes): this is the worst case."""
    member_id = next(row[0] for row in reference.history if row[3] == "pin_expired")
    chunk = next(
        chunk
        for chunk in JobChunk.objects.filter(job=job)
        if (chunk.lower is None or str(chunk.lower) <= member_id)
        and (chunk.upper is None or member_id < str(chunk.upper))
    )
    JobChunk.objects.filter(pk=chunk.pk).update(status=JobStatus.PENDING)
    Job.objects.filter(pk=job.pk).update(chunks_done=F("chunks_done") - 1, status=JobStatus.RUNNING)
    return chunk.index


@pytest.mark.django_db
def test_a_done_chunk_reopened_by_hand_writes_no_second_history_row_or_event(
    reference: PopulationState,
) -> None:
    job = reassessment_run_inline(job_id=_planned_job().pk, at=AT)
    index = _reopen_chunk_of_a_pin_expiry(job, reference)

    rerun = reassessment_chunk_run(job_id=job.pk, index=index, at=AT)

    assert rerun.ran
    assert history_duplicates() == []
    state = population_state()
    assert state.history == reference.history
    assert state.outbox == reference.outbox


@pytest.mark.django_db
def test_a_done_chunk_reopened_by_hand_leaves_every_member_as_its_history_says(
    reference: PopulationState,
) -> None:
    job = reassessment_run_inline(job_id=_planned_job().pk, at=AT)
    index = _reopen_chunk_of_a_pin_expiry(job, reference)

    reassessment_chunk_run(job_id=job.pk, index=index, at=AT)

    assert members_disagreeing_with_history(job) == []
    assert population_state().members == reference.members


# --- J4: duplicate delivery -------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_duplicate_delivery_waits_for_the_chunk_lock_then_finds_the_chunk_done(
    reference: PopulationState, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _planned_job()
    inside, release = threading.Event(), threading.Event()
    real_assess = reassessment._chunk_assess

    def assess_held(**kwargs: Any) -> Any:
        if threading.current_thread().name == "first":
            inside.set()
            release.wait(WAIT_SECONDS)
        return real_assess(**kwargs)

    monkeypatch.setattr(reassessment, "_chunk_assess", assess_held)
    outcomes: dict[str, Any] = {}

    def deliver() -> None:
        try:
            outcomes[threading.current_thread().name] = reassessment_chunk_run(
                job_id=job.pk, index=1, at=AT
            )
        except Exception as error:
            outcomes[threading.current_thread().name] = error
        finally:
            connection.close()

    first = threading.Thread(target=deliver, name="first")
    duplicate = threading.Thread(target=deliver, name="duplicate")
    try:
        first.start()
        assert inside.wait(WAIT_SECONDS)
        duplicate.start()
        # The duplicate blocks on the chunk row the first delivery holds until its commit.
        wait_until(lambda: lock_waiters() == 1, WAIT_SECONDS, "the duplicate to wait", 0.02)
        assert not outcomes
    finally:
        release.set()
        first.join(WAIT_SECONDS)
        duplicate.join(WAIT_SECONDS)

    assert outcomes["first"].ran
    assert outcomes["first"].assessed == 50
    assert outcomes["duplicate"].ran is False
    chunk = JobChunk.objects.get(job=job, index=1)
    assert (chunk.status, chunk.attempts) == (JobStatus.DONE, 1)
    assert history_duplicates() == []
    job = reassessment_run_inline(job_id=job.pk, at=AT)
    assert population_state().digests() == reference.digests()
    _assert_job_complete(job)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_four_deliveries_of_a_chunk_at_once_run_it_once(reference: PopulationState) -> None:
    job = _planned_job()
    barrier = threading.Barrier(4)
    ran: list[bool] = []
    errors: list[Exception] = []

    def deliver() -> None:
        try:
            barrier.wait(WAIT_SECONDS)
            ran.append(reassessment_chunk_run(job_id=job.pk, index=0, at=AT).ran)
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_SECONDS)

    assert errors == []
    assert sorted(ran) == [False, False, False, True]
    assert history_duplicates() == []
    job = reassessment_run_inline(job_id=job.pk, at=AT)
    assert population_state().digests() == reference.digests()
    _assert_job_complete(job)


# --- J5: the schedule fires twice ---------------------------------------------------------------


@pytest.mark.django_db
def test_the_nightly_schedule_firing_twice_in_a_business_day_starts_one_job(
    reference: PopulationState, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    late_same_day = AT + timedelta(hours=11, minutes=50)  # 23:50 in Asia/Shanghai

    with time_machine.travel(AT, tick=False), django_capture_on_commit_callbacks(execute=True):
        first = reassess_population_task()
    after_first = _tables()
    with (
        time_machine.travel(late_same_day, tick=False),
        django_capture_on_commit_callbacks(execute=True) as enqueued,
    ):
        second = reassess_population_task()

    assert second == first
    assert enqueued == []  # the second firing planned and dispatched nothing
    assert _tables() == after_first
    job = Job.objects.get()
    assert (str(job.pk), job.dedupe_key) == (first, "nightly:2025-06-15")
    assert population_state().digests() == reference.digests()
    _assert_job_complete(job)


@pytest.mark.django_db
def test_the_nightly_schedule_starts_a_new_job_after_midnight_in_the_program_time_zone(
    reference: PopulationState, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    with time_machine.travel(AT, tick=False), django_capture_on_commit_callbacks(execute=True):
        first = reassess_population_task()
    next_day = AT + timedelta(hours=12, minutes=1)  # 00:01 on June 16 in Asia/Shanghai

    with (
        time_machine.travel(next_day, tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        second = reassess_population_task()

    assert second != first
    assert sorted(Job.objects.values_list("dedupe_key", "status")) == [
        ("nightly:2025-06-15", JobStatus.DONE),
        ("nightly:2025-06-16", JobStatus.DONE),
    ]


# --- The watchdog -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_watchdog_dispatches_again_only_the_chunks_whose_lease_ran_out(
    reference: PopulationState,
) -> None:
    now = timezone.now()
    lease = timedelta(seconds=settings.LOYALTY_TIER_CHUNK_LEASE_SECONDS)
    job = _planned_job()
    Job.objects.filter(pk=job.pk).update(started_at=now - 2 * lease)
    reassessment_chunk_run(job_id=job.pk, index=0, at=now - 2 * lease)
    # Chunk 1's worker died over a lease ago; chunk 2's is still at it; chunk 3's
    # message was lost (never started).
    JobChunk.objects.filter(job=job, index=1).update(
        status=JobStatus.RUNNING, started_at=now - lease - timedelta(seconds=30), attempts=1
    )
    JobChunk.objects.filter(job=job, index=2).update(
        status=JobStatus.RUNNING, started_at=now - lease + timedelta(seconds=30), attempts=1
    )

    redispatched = reassessment_watchdog_task()

    assert redispatched == 2
    assert list(JobChunk.objects.filter(job=job).values_list("index", "status", "attempts")) == [
        (0, JobStatus.DONE, 1),
        (1, JobStatus.DONE, 2),
        (2, JobStatus.RUNNING, 1),
        (3, JobStatus.DONE, 1),
    ]
    job.refresh_from_db()
    assert (job.status, job.chunks_done) == (JobStatus.RUNNING, 3)
    assert reassessment_watchdog_task() == 0

    # Chunk 2's worker finishing (or the watchdog after its lease) completes the job.
    reassessment_chunk_run(job_id=job.pk, index=2, at=now)
    assert population_state().digests() == reference.digests()
    _assert_job_complete(job)


@pytest.mark.django_db
def test_a_request_while_the_broker_is_down_stays_pending_until_the_watchdog_plans_it(
    reference: PopulationState, django_capture_on_commit_callbacks: Any
) -> None:
    lease = timedelta(seconds=settings.LOYALTY_TIER_CHUNK_LEASE_SECONDS)
    with (
        mock.patch.object(
            reassessment_plan_task, "delay", side_effect=BrokerUnavailableError("down")
        ),
        django_capture_on_commit_callbacks(execute=True),
    ):
        job, created = reassessment_request(
            actor=system_actor("tests"), at=AT, chunk_size=CHUNK_SIZE
        )

    assert created
    job.refresh_from_db()
    assert (job.status, job.chunks.count()) == (JobStatus.PENDING, 0)
    with time_machine.travel(job.created_at + lease - timedelta(seconds=1)):
        reassessment_watchdog_task()  # younger than a lease: its message may still be queued
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING

    with time_machine.travel(job.created_at + lease + timedelta(seconds=1)):
        reassessment_watchdog_task()  # plans it; the chunks run inline (no broker in tests)

    assert population_state().digests() == reference.digests()
    _assert_job_complete(job)


# --- Resuming a failed job ----------------------------------------------------------------------


@pytest.mark.django_db
def test_resuming_a_failed_job_whose_chunks_all_finished_closes_it(
    reference: PopulationState,
) -> None:
    job = _planned_job()
    for index in (0, 1, 3):
        reassessment_chunk_run(job_id=job.pk, index=index, at=AT)
    # Chunk 2 gave up after its retries, then a duplicate delivery of it succeeded.
    reassessment_fail(job_id=job.pk, error="chunk 2: lock timeout", at=AT)
    assert reassessment_chunk_run(job_id=job.pk, index=2, at=AT).job_done is False
    assert Job.objects.get(pk=job.pk).status == JobStatus.FAILED

    job = reassessment_run_inline(job_id=job.pk, at=AT + timedelta(hours=1))

    assert job.status == JobStatus.DONE
    assert job.finished_at == AT + timedelta(hours=1)
    assert population_state().digests() == reference.digests()
    _assert_job_complete(job)
    # A new job may start: nothing is left pending or running.
    assert reassessment_start(actor=system_actor("tests"), at=AT + timedelta(days=1))[1]
