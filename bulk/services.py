"""Bulk operations: award points, grant a certification or reassess tiers on a selection of
members of any size, as a background job with progress and a per-item outcome.

Starting an operation validates its parameters and materializes the selection once, set-based,
into ``BulkItem`` rows (``INSERT ... SELECT`` for a member filter; a bulk insert and one
``UPDATE`` for external ids, unknown ones recorded as failed items), each item assigned to a
chunk. Chunks then run like the tier reassessment's: a chunk locks its row, skips itself when
done, acts on its pending items set-based, and commits its effects, its items' outcomes, its
"done" mark and the job's counters together, so a duplicate delivery or a re-run after a crash
does nothing twice. Points awards carry an idempotency key per (job, member) as a second guard.
"""

import csv
import io
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, OuterRef, QuerySet, Subquery
from django.utils.dateparse import parse_datetime

from bulk.models import BulkItem, BulkOperation, BulkOperationKind, ItemStatus, SelectionKind
from bulk.selectors import BULK_JOB
from core.actors import Actor, ActorKind
from core.broker import enqueue_on_commit
from core.db import durable_atomic, lock_timeout
from core.exceptions import DomainError, InvalidInputError, NotFoundError
from core.models import Job, JobChunk, JobStatus
from core.selectors import job_chunks_stalled, jobs_unplanned
from members.models import Member
from rewards.services.certifications import (
    GRANT_ALREADY_HELD,
    GRANT_GRANTED,
    certification_grant_validate,
    certifications_grant_batch,
)
from rewards.services.ledger import AwardSpec, points_award_batch
from tiers.services.reassessment import members_tier_reassess

# Reasons an operator may give a bulk award (the admin's points actions offer the same).
POINTS_REASONS = ("manual", "correction")
INSERT_BATCH_SIZE = 2000

Outcome = tuple[str, str, str]  # status, outcome code, detail


class EmptySelectionError(InvalidInputError):
    code = "empty_selection"
    title = "The selection has no members"


def _chunk_size() -> int:
    return int(getattr(settings, "LOYALTY_BULK_CHUNK_SIZE", settings.LOYALTY_JOB_CHUNK_SIZE))


def _lease_seconds() -> int:
    return int(settings.LOYALTY_TIER_CHUNK_LEASE_SECONDS)


def _invalid(attr: str, detail: str, code: str = "invalid") -> InvalidInputError:
    return InvalidInputError(
        detail, errors=[{"attr": attr, "pointer": f"#/{attr}", "code": code, "detail": detail}]
    )


# --- Parameters -----------------------------------------------------------------------------------


def _params_validate(*, operation: str, params: dict[str, Any], at: datetime) -> dict[str, Any]:
    """The operation's parameters, checked and made JSON-ready (stored on the job).

    :raises InvalidInputError: for an unknown operation or a bad parameter.
    """
    if operation == BulkOperationKind.POINTS_AWARD:
        points = params.get("points")
        if not isinstance(points, int) or not 0 < points <= settings.LOYALTY_POINTS_MAX_AWARD:
            raise _invalid("points", f"Must be from 1 to {settings.LOYALTY_POINTS_MAX_AWARD}.")
        reason = params.get("reason") or "manual"
        if reason not in POINTS_REASONS:
            raise _invalid("reason", f"Must be one of: {', '.join(POINTS_REASONS)}.")
        expires_at = params.get("expires_at")
        if expires_at is not None and expires_at <= at:
            raise _invalid("expires_at", "Must be in the future.", "in_past")
        return {
            "points": points,
            "reason": reason,
            "note": params.get("note") or "",
            "expires_at": expires_at.isoformat() if expires_at else None,
        }
    if operation == BulkOperationKind.CERTIFICATION_GRANT:
        code = params.get("certification") or ""
        expires_at = params.get("expires_at")
        certification_grant_validate(code=code, at=at, expires_at=expires_at)
        return {
            "certification": code,
            "evidence": params.get("evidence") or "",
            "expires_at": expires_at.isoformat() if expires_at else None,
        }
    if operation == BulkOperationKind.TIER_REASSESSMENT:
        return {}
    raise _invalid("operation", f"Must be one of: {', '.join(BulkOperationKind.values)}.")


def _actor_params(actor: Actor) -> dict[str, Any]:
    return {"kind": actor.kind.value, "user_id": actor.user_id, "name": actor.name}


def _actor_of(job: Job) -> Actor:
    stored = job.params["actor"]
    return Actor(kind=ActorKind(stored["kind"]), user_id=stored["user_id"], name=stored["name"])


def _datetime_param(value: str | None) -> datetime | None:
    return parse_datetime(value) if value else None


def external_ids_from_csv(text: str) -> list[str]:
    """The first column of CSV text (an uploaded file, a request body); a first row reading
    ``external_id`` is a header. Blank rows are left out.

    :raises InvalidInputError: for text that is not CSV (a NUL character, say).
    """
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    try:
        rows = [row for row in reader if row and row[0].strip()]
    except csv.Error as error:
        raise _invalid("external_ids_csv", f"Not valid CSV: {error}.") from None
    if rows and rows[0][0].strip() == "external_id":
        rows = rows[1:]
    return [row[0].strip() for row in rows]


# --- Materializing the selection ------------------------------------------------------------------


def _items_from_members(*, job: Job, members: QuerySet[Member], size: int) -> int:
    """``INSERT ... SELECT`` the selected members (erased ones left out) as numbered items, in
    id order; never read into Python. Returns how many."""
    selected = (
        Member.objects.filter(pk__in=members.order_by().values("pk"), erased_at__isnull=True)
        .order_by()
        .values(selected_member_id=F("pk"), selected_external_id=F("external_id"))
    )
    inner_sql, inner_params = selected.query.sql_with_params()
    ops = connection.ops
    table = ops.quote_name(BulkItem._meta.db_table)
    columns = ", ".join(
        ops.quote_name(BulkItem._meta.get_field(name).column)
        for name in ("job", "position", "chunk", "member", "external_id", "status", "outcome")
    )
    columns += ", " + ops.quote_name("detail")
    # Chunk i holds positions (i * size, (i + 1) * size]: numbered once, here, by a window
    # function, so every chunk, re-run or not, covers the same items.
    sql = (
        f"INSERT INTO {table} ({columns}) "  # noqa: S608 - names from the models
        "SELECT %s, n, (n - 1) / %s, member_id, external_id, %s, '', '' FROM ("
        "SELECT s.selected_member_id AS member_id, s.selected_external_id AS external_id, "
        "ROW_NUMBER() OVER (ORDER BY s.selected_member_id) AS n "
        f"FROM ({inner_sql}) s) numbered"
    )
    job_id = Job._meta.pk.get_db_prep_value(job.pk, connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, [job_id, size, ItemStatus.PENDING, *inner_params])
        return cursor.rowcount


def _items_from_external_ids(
    *, job: Job, external_ids: Iterable[str], size: int, at: datetime
) -> tuple[int, int]:
    """Bulk insert the external ids (first occurrence kept) as numbered items, resolve them to
    members in one ``UPDATE``, and fail the unknown (or erased) ones. Returns (items, unknown)."""
    unique = list(dict.fromkeys(external_id.strip() for external_id in external_ids))
    unique = [external_id for external_id in unique if external_id]
    for start in range(0, len(unique), INSERT_BATCH_SIZE):
        BulkItem.objects.bulk_create(
            BulkItem(
                job=job,
                position=start + offset + 1,
                chunk=(start + offset) // size,
                external_id=external_id,
                # Failed until resolved: an item without a member is always failed.
                status=ItemStatus.FAILED,
            )
            for offset, external_id in enumerate(unique[start : start + INSERT_BATCH_SIZE])
        )
    items = BulkItem.objects.filter(job=job)
    items.update(
        member_id=Subquery(
            Member.objects.filter(
                external_id=OuterRef("external_id"), erased_at__isnull=True
            ).values("pk")[:1]
        )
    )
    items.filter(member__isnull=False).update(status=ItemStatus.PENDING)
    unknown = items.filter(member__isnull=True).update(
        outcome="unknown_member", detail="No member with this external_id.", finished_at=at
    )
    return len(unique), unknown


# --- Starting -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selection:
    """Either a queryset of members (a filter, the admin's selection) or external ids."""

    members: QuerySet[Member] | None = None
    external_ids: Sequence[str] | None = None

    @property
    def kind(self) -> str:
        return SelectionKind.FILTER if self.members is not None else SelectionKind.EXTERNAL_IDS


def bulk_operation_start(
    *,
    operation: str,
    params: dict[str, Any],
    selection: Selection,
    actor: Actor,
    at: datetime,
    description: dict[str, Any] | None = None,
    chunk_size: int | None = None,
) -> BulkOperation:
    """Create the operation's job with its items and chunks, pending. The caller enqueues it.

    :raises InvalidInputError: for a bad parameter.
    :raises EmptySelectionError: when the selection names no member and no external id.
    """
    stored = _params_validate(operation=operation, params=params, at=at)
    size = chunk_size or _chunk_size()
    with transaction.atomic():
        job = Job.objects.create(
            kind=BULK_JOB,
            requested_by=actor.label,
            params={
                "operation": operation,
                **stored,
                "selection": {"kind": selection.kind, **(description or {})},
                "actor": _actor_params(actor),
                "chunk_size": size,
            },
            created_at=at,
        )
        if selection.members is not None:
            total, unknown = _items_from_members(job=job, members=selection.members, size=size), 0
        else:
            total, unknown = _items_from_external_ids(
                job=job, external_ids=selection.external_ids or (), size=size, at=at
            )
        if total == 0:
            # Rolls the job back with it: nothing is created.
            raise EmptySelectionError(
                "The selection has no members.",
                errors=[
                    {
                        "attr": "selection",
                        "pointer": "#/",
                        "code": "empty_selection",
                        "detail": "No member matches the selection.",
                    }
                ],
            )
        chunks_total = (total + size - 1) // size
        JobChunk.objects.bulk_create(
            JobChunk(job=job, index=index) for index in range(chunks_total)
        )
        job.chunks_total, job.items_total, job.items_done = chunks_total, total, unknown
        job.save(update_fields=["chunks_total", "items_total", "items_done"])
        return BulkOperation.objects.create(
            job=job,
            operation=operation,
            selection=selection.kind,
            requested_by_user_id=actor.user_id if actor.kind is ActorKind.OPERATOR else None,
            failed_count=unknown,
            created_at=at,
        )


def bulk_operation_request(
    *,
    operation: str,
    params: dict[str, Any],
    selection: Selection,
    actor: Actor,
    at: datetime,
    description: dict[str, Any] | None = None,
    chunk_size: int | None = None,
) -> BulkOperation:
    """Start an operation and, once it commits, enqueue its planning on the ``bulk`` queue (run
    inline when no broker is configured): what the API and the admin call.

    :raises InvalidInputError: for a bad parameter.
    :raises EmptySelectionError: when the selection names no member and no external id.
    """
    from bulk.tasks import bulk_operation_plan_task  # the task module imports this one

    with transaction.atomic():
        bulk_operation = bulk_operation_start(
            operation=operation,
            params=params,
            selection=selection,
            actor=actor,
            at=at,
            description=description,
            chunk_size=chunk_size,
        )
        # With the broker down the operation stays pending and the watchdog plans it later.
        enqueue_on_commit(
            partial(bulk_operation_plan_task.delay, job_id=str(bulk_operation.pk)),
            what="the bulk operation's planning",
        )
    return bulk_operation


# --- Planning and running chunks ------------------------------------------------------------------


def bulk_operation_plan(*, job_id: UUID, at: datetime) -> list[int]:
    """Mark the job running and return the indexes of its chunks not done yet: what to dispatch.
    Safe to call again (resume)."""
    with durable_atomic():
        job = Job.objects.select_for_update().filter(pk=job_id, kind=BULK_JOB).first()
        if job is None:
            raise NotFoundError("No bulk operation with this id.")
        if job.status == JobStatus.DONE:
            return []
        open_chunks = list(
            job.chunks.exclude(status=JobStatus.DONE)
            .order_by("index")
            .values_list("index", flat=True)
        )
        job.status = JobStatus.RUNNING
        if not open_chunks:
            job.status, job.finished_at = JobStatus.DONE, at
        job.started_at = job.started_at or at
        job.save(update_fields=["status", "started_at", "finished_at"])
        return open_chunks


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    index: int
    ran: bool  # False: it was done already (a duplicate or a re-run)
    done: int = 0
    job_done: bool = False


Runner = Callable[[Job, list[UUID], Actor, datetime], tuple[dict[UUID, Outcome], int]]


def _points_award(
    job: Job, member_ids: list[UUID], actor: Actor, at: datetime
) -> tuple[dict[UUID, Outcome], int]:
    params = job.params
    results = points_award_batch(
        items=[
            AwardSpec(
                member_id=member_id,
                points=params["points"],
                reason=params["reason"],
                note=params["note"],
                expires_at=_datetime_param(params["expires_at"]),
                # Per (job, member): a chunk run twice can never award anyone twice.
                idempotency_key=f"bulk:{job.pk}:{member_id}",
            )
            for member_id in member_ids
        ],
        actor=actor,
        at=at,
    )
    outcomes: dict[UUID, Outcome] = {}
    for member_id, result in zip(member_ids, results, strict=True):
        if result.status == "accepted":
            outcomes[member_id] = (ItemStatus.SUCCEEDED, "awarded", "")
        elif result.status == "duplicate":
            outcomes[member_id] = (ItemStatus.SKIPPED, "already_awarded", "")
        else:
            detail = "; ".join(str(error.get("detail", "")) for error in result.errors)
            outcomes[member_id] = (ItemStatus.FAILED, "rejected", detail[:500])
    return outcomes, sum(1 for status, _, _ in outcomes.values() if status == ItemStatus.SUCCEEDED)


def _certification_grant(
    job: Job, member_ids: list[UUID], actor: Actor, at: datetime
) -> tuple[dict[UUID, Outcome], int]:
    params = job.params
    results = certifications_grant_batch(
        member_ids=member_ids,
        code=params["certification"],
        evidence=params["evidence"],
        expires_at=_datetime_param(params["expires_at"]),
        actor=actor,
        at=at,
    )
    outcomes: dict[UUID, Outcome] = {}
    for member_id, (outcome, detail) in results.items():
        if outcome == GRANT_GRANTED:
            outcomes[member_id] = (ItemStatus.SUCCEEDED, outcome, detail)
        elif outcome == GRANT_ALREADY_HELD:
            outcomes[member_id] = (ItemStatus.SKIPPED, outcome, detail)
        else:
            outcomes[member_id] = (ItemStatus.FAILED, outcome, detail[:500])
    return outcomes, sum(1 for status, _, _ in outcomes.values() if status == ItemStatus.SUCCEEDED)


def _tier_reassessment(
    job: Job, member_ids: list[UUID], actor: Actor, at: datetime
) -> tuple[dict[UUID, Outcome], int]:
    counts = members_tier_reassess(member_ids=member_ids, actor=actor, at=at)
    return dict.fromkeys(member_ids, (ItemStatus.SUCCEEDED, "reassessed", "")), counts.changed


RUNNERS: dict[str, Runner] = {
    BulkOperationKind.POINTS_AWARD: _points_award,
    BulkOperationKind.CERTIFICATION_GRANT: _certification_grant,
    BulkOperationKind.TIER_REASSESSMENT: _tier_reassessment,
}


def _items_finish(*, job_id: UUID, outcomes: dict[int, Outcome], at: datetime) -> dict[str, int]:
    """Write the items' outcomes: one ``UPDATE`` per distinct outcome (a handful per chunk).
    Returns the counts by status."""
    grouped: dict[Outcome, list[int]] = defaultdict(list)
    for item_id, outcome in outcomes.items():
        grouped[outcome].append(item_id)
    counts: dict[str, int] = defaultdict(int)
    for (status, outcome, detail), item_ids in grouped.items():
        BulkItem.objects.filter(pk__in=item_ids).update(
            status=status, outcome=outcome, detail=detail, finished_at=at
        )
        counts[status] += len(item_ids)
    return counts


def _chunk_act(job: Job, member_ids: list[UUID], at: datetime) -> tuple[dict[UUID, Outcome], int]:
    """Run the operation on the chunk's members. A refusal of the whole chunk (the certification
    was deactivated since the start, say) fails its items instead of failing the job; a
    transient one (busy) is raised for the task to retry."""
    runner = RUNNERS[job.bulk_operation.operation]
    try:
        # A savepoint: a refusal leaves the chunk's transaction clean for the outcomes.
        with transaction.atomic():
            return runner(job, member_ids, _actor_of(job), at)
    except DomainError as error:
        if not error.replayable:
            raise
        failed = (ItemStatus.FAILED, error.code, str(error.detail)[:500])
        return dict.fromkeys(member_ids, failed), 0


def bulk_chunk_run(*, job_id: UUID, index: int, at: datetime) -> ChunkOutcome:
    """Run one chunk of an operation; a no-op when it is done already."""
    claimed = JobChunk.objects.filter(job_id=job_id, index=index, job__kind=BULK_JOB).exclude(
        status=JobStatus.DONE
    )
    lease_ms = _lease_seconds() * 1000
    # Visible progress ("running") in its own short transaction, before the work.
    with transaction.atomic(), lock_timeout(lease_ms):
        marked = claimed.update(status=JobStatus.RUNNING, started_at=at, attempts=F("attempts") + 1)
    if not marked:
        if not JobChunk.objects.filter(job_id=job_id, index=index, job__kind=BULK_JOB).exists():
            raise NotFoundError("No such bulk operation chunk.")
        return ChunkOutcome(index=index, ran=False)
    with durable_atomic(), lock_timeout(lease_ms):
        # Chunk lock: a duplicate delivery waits here, then finds the chunk done.
        chunk = (
            JobChunk.objects.select_for_update(of=("self",))
            .select_related("job__bulk_operation")
            .get(job_id=job_id, index=index)
        )
        if chunk.status == JobStatus.DONE:
            return ChunkOutcome(index=index, ran=False)
        job = chunk.job
        rows = list(
            BulkItem.objects.filter(job_id=job_id, chunk=index, status=ItemStatus.PENDING)
            .order_by("member_id")
            .values_list("pk", "member_id", "member__erased_at")
        )
        erased = {member_id for _, member_id, erased_at in rows if erased_at is not None}
        active = [member_id for _, member_id, erased_at in rows if erased_at is None]
        by_member: dict[UUID, Outcome] = {}
        changed = 0
        if active:
            by_member, changed = _chunk_act(job, active, at)
        outcomes: dict[int, Outcome] = {}
        for item_id, member_id, _ in rows:
            if member_id in erased:
                outcomes[item_id] = (ItemStatus.SKIPPED, "member_erased", "")
            else:
                outcomes[item_id] = by_member.get(
                    member_id, (ItemStatus.FAILED, "unknown_member", "No such member.")
                )
        counts = _items_finish(job_id=job_id, outcomes=outcomes, at=at)
        chunk.status = JobStatus.DONE
        chunk.items = len(rows)
        chunk.changed = changed
        chunk.result = {"counts": dict(counts)}
        chunk.finished_at = at
        chunk.save(update_fields=["status", "items", "changed", "result", "finished_at"])
        BulkOperation.objects.filter(pk=job.pk).update(
            succeeded_count=F("succeeded_count") + counts[ItemStatus.SUCCEEDED],
            skipped_count=F("skipped_count") + counts[ItemStatus.SKIPPED],
            failed_count=F("failed_count") + counts[ItemStatus.FAILED],
        )
        Job.objects.filter(pk=job.pk).update(
            chunks_done=F("chunks_done") + 1,
            items_done=F("items_done") + len(rows),
            items_changed=F("items_changed") + changed,
        )
        # The job row is locked by the update above until commit, so exactly one chunk (the
        # last to commit) sees all chunks done.
        job_done = bool(
            Job.objects.filter(
                pk=job.pk, status=JobStatus.RUNNING, chunks_done=F("chunks_total")
            ).update(status=JobStatus.DONE, finished_at=at)
        )
    return ChunkOutcome(index=index, ran=True, done=len(rows), job_done=job_done)


def bulk_operation_fail(*, job_id: UUID, error: str, at: datetime) -> None:
    """Record that an operation cannot go on (a chunk gave up after its retries)."""
    Job.objects.filter(pk=job_id, kind=BULK_JOB).exclude(status=JobStatus.DONE).update(
        status=JobStatus.FAILED, error=error[:2000], finished_at=at
    )


def bulk_operations_unplanned(*, at: datetime) -> list[UUID]:
    """Operations whose planning never ran (the watchdog's)."""
    return jobs_unplanned(kind=BULK_JOB, lease=timedelta(seconds=_lease_seconds()), at=at)


def bulk_operations_stalled(*, at: datetime) -> dict[UUID, list[int]]:
    """Open chunks of running operations that no worker seems to hold (the watchdog's)."""
    return job_chunks_stalled(kind=BULK_JOB, lease=timedelta(seconds=_lease_seconds()), at=at)
