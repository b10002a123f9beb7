"""Bulk operation tasks on the ``bulk`` queue: the plan dispatches one task per chunk (a group, so
every worker shares the operation); a watchdog re-dispatches chunks whose worker died."""

import logging
from uuid import UUID

from celery import group
from django.db import OperationalError
from django.utils import timezone

from bulk.services import (
    bulk_chunk_run,
    bulk_operation_fail,
    bulk_operation_plan,
    bulk_operations_stalled,
    bulk_operations_unplanned,
)
from core.exceptions import BusyError
from loyalty.celery import app

logger = logging.getLogger(__name__)

_CHUNK_MAX_RETRIES = 5


def bulk_dispatch(*, job_id: UUID, indexes: list[int]) -> None:
    """Send one task per chunk (a group: any number of workers take them)."""
    if indexes:
        group(
            bulk_chunk_task.si(job_id=str(job_id), index=index) for index in indexes
        ).apply_async()


@app.task(name="bulk.operation_plan", queue="bulk")
def bulk_operation_plan_task(*, job_id: str) -> int:
    indexes = bulk_operation_plan(job_id=UUID(job_id), at=timezone.now())
    bulk_dispatch(job_id=UUID(job_id), indexes=indexes)
    return len(indexes)


# A deadlock or a lock wait is transient: retry with backoff. The chunk transaction rolled back,
# so a retry starts clean.
@app.task(
    name="bulk.operation_chunk",
    queue="bulk",
    bind=True,
    max_retries=_CHUNK_MAX_RETRIES,
    acks_late=True,
    reject_on_worker_lost=True,
)
def bulk_chunk_task(self, *, job_id: str, index: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    try:
        outcome = bulk_chunk_run(job_id=UUID(job_id), index=index, at=timezone.now())
    except (BusyError, OperationalError) as error:
        if self.request.retries >= _CHUNK_MAX_RETRIES:
            bulk_operation_fail(
                job_id=UUID(job_id), error=f"chunk {index}: {error}", at=timezone.now()
            )
            raise
        raise self.retry(exc=error, countdown=2**self.request.retries) from error
    return {"index": outcome.index, "ran": outcome.ran, "done": outcome.done}


@app.task(name="bulk.operation_watchdog", queue="default")
def bulk_watchdog_task() -> int:
    """Plan the operations whose planning never ran and dispatch again the chunks whose worker
    died (acks-late redelivery covers most cases; this covers a lost message or a broker
    outage)."""
    now = timezone.now()
    for job_id in bulk_operations_unplanned(at=now):
        logger.warning("Planning bulk operation %s again (still pending)", job_id)
        bulk_operation_plan_task.delay(job_id=str(job_id))
    stalled = bulk_operations_stalled(at=now)
    for job_id, indexes in stalled.items():
        logger.warning(
            "Re-dispatching %d stalled chunks of bulk operation %s", len(indexes), job_id
        )
        bulk_dispatch(job_id=job_id, indexes=indexes)
    return sum(len(indexes) for indexes in stalled.values())
