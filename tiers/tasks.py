"""Tier reassessment tasks: the population job is planned into chunks dispatched as a Celery
group, so every worker on the ``bulk`` queue shares it. Each is also reachable without a broker
through the ``reassess_tiers`` command."""

import logging
from uuid import UUID

from celery import group
from django.db import OperationalError
from django.utils import timezone

from core.actors import system_actor
from core.exceptions import BusyError
from loyalty.celery import app
from rewards.services.earning import business_date_of
from tiers.services.reassessment import (
    members_tier_reassess,
    reassessment_chunk_run,
    reassessment_fail,
    reassessment_plan,
    reassessment_request,
    reassessment_stalled,
    reassessment_unplanned,
)

logger = logging.getLogger(__name__)

_CHUNK_MAX_RETRIES = 5


def reassessment_dispatch(*, job_id: UUID, indexes: list[int]) -> None:
    """Send one task per chunk (a group: any number of workers take them)."""
    if indexes:
        group(
            reassessment_chunk_task.si(job_id=str(job_id), index=index) for index in indexes
        ).apply_async()


@app.task(name="tiers.reassessment_plan", queue="bulk")
def reassessment_plan_task(*, job_id: str) -> int:
    indexes = reassessment_plan(job_id=UUID(job_id), at=timezone.now())
    reassessment_dispatch(job_id=UUID(job_id), indexes=indexes)
    return len(indexes)


# A deadlock with a concurrent writer or a lock wait is transient: retry with backoff. The chunk
# transaction rolled back, so a retry starts clean.
@app.task(
    name="tiers.reassessment_chunk",
    queue="bulk",
    bind=True,
    max_retries=_CHUNK_MAX_RETRIES,
    acks_late=True,
    reject_on_worker_lost=True,
)
def reassessment_chunk_task(self, *, job_id: str, index: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    try:
        outcome = reassessment_chunk_run(job_id=UUID(job_id), index=index, at=timezone.now())
    except (BusyError, OperationalError) as error:
        if self.request.retries >= _CHUNK_MAX_RETRIES:
            reassessment_fail(
                job_id=UUID(job_id), error=f"chunk {index}: {error}", at=timezone.now()
            )
            raise
        raise self.retry(exc=error, countdown=2**self.request.retries) from error
    return {"index": outcome.index, "ran": outcome.ran, "changed": outcome.changed}


@app.task(name="tiers.reassess_population", queue="bulk")
def reassess_population_task() -> str:
    """The nightly schedule. One job per business day: beat firing twice starts it once."""
    now = timezone.now()
    job, _ = reassessment_request(
        actor=system_actor("reassessment_schedule"),
        at=now,
        dedupe_key=f"nightly:{business_date_of(now).isoformat()}",
    )
    return str(job.pk)


@app.task(name="tiers.reassessment_watchdog", queue="default")
def reassessment_watchdog_task() -> int:
    """Plan the jobs whose planning never ran and dispatch again the chunks whose worker died
    (acks-late redelivery covers most cases; this covers a lost message or a broker outage)."""
    now = timezone.now()
    for job_id in reassessment_unplanned(at=now):
        logger.warning("Planning reassessment %s again (still pending)", job_id)
        reassessment_plan_task.delay(job_id=str(job_id))
    stalled = reassessment_stalled(at=now)
    for job_id, indexes in stalled.items():
        logger.warning("Re-dispatching %d stalled chunks of reassessment %s", len(indexes), job_id)
        reassessment_dispatch(job_id=job_id, indexes=indexes)
    return sum(len(indexes) for indexes in stalled.values())


@app.task(name="tiers.reassess_members", queue="default")
def reassess_members_task(*, member_ids: list[str], trigger: str) -> int:
    """Reassess a few members at once (after certification changes, a refund, a big award)."""
    counts = members_tier_reassess(
        member_ids=[UUID(member_id) for member_id in member_ids],
        actor=system_actor(f"reassess:{trigger}"),
        at=timezone.now(),
    )
    return counts.changed
