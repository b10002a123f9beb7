"""Tier reassessment: the population job (planned into id-range chunks that any number of
workers run), one member's reassessment, and the what-if simulation.

The job fixes its assessment time and rule version when it is created, so every chunk, a re-run
after a crash and a duplicate delivery all compute the same decisions. A chunk runs in one
transaction that locks its row first and skips it when it is done already; its writes, its
"done" mark and the job's counters commit together, so progress is exact and nothing is
written twice.
"""

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils.dateparse import parse_datetime

from core.actors import Actor
from core.broker import enqueue_on_commit
from core.db import durable_atomic, is_postgres, lock_timeout
from core.exceptions import ConflictError, NotFoundError
from core.models import Job, JobChunk, JobStatus
from core.read_cache import all_reads_changed
from core.selectors import job_chunks_stalled, jobs_unplanned
from members.models import Member
from tiers.evaluation import Rules
from tiers.models import RuleSet
from tiers.selectors import (
    REASSESSMENT_JOB,
    rule_set_get,
    rule_set_in_force,
    rules_compile,
    rules_in_force,
)
from tiers.services.assessment import (
    AssessmentCounts,
    decisions_apply,
    members_assess,
    members_in_range,
)
from tiers.services.assessment_sql import Scope, chunk_decide_and_write, simulation_cells

Progress = Callable[[int], None]


class ReassessmentRunningError(ConflictError):
    code = "reassessment_running"
    title = "A population reassessment is already running"


class SimulationBusyError(ConflictError):
    code = "simulation_running"
    title = "A simulation is already running; wait for it to finish"


def _rules_for(job: Job) -> Rules:
    rule_set_id = job.params.get("rule_set_id")
    rule_set = rule_set_get(rule_set_id=rule_set_id) if rule_set_id is not None else None
    return rules_compile(rule_set=rule_set)


def _as_of(job: Job) -> datetime:
    as_of = parse_datetime(job.params["as_of"])
    assert as_of is not None  # noqa: S101 - written by reassessment_start
    return as_of


# --- Starting and planning --------------------------------------------------------------------


def reassessment_start(
    *, actor: Actor, at: datetime, dedupe_key: str | None = None, chunk_size: int | None = None
) -> tuple[Job, bool]:
    """Create a population reassessment as of ``at`` under the rules in force then. Returns
    ``(job, created)``: with a ``dedupe_key`` (a schedule slot) a second start returns the first
    job. Refused while another population job is pending or running.

    The caller enqueues the planning task after commit (``tiers.tasks``).
    """
    rule_set = rule_set_in_force(at=at)
    with transaction.atomic():
        if dedupe_key is not None:
            existing = Job.objects.filter(kind=REASSESSMENT_JOB, dedupe_key=dedupe_key).first()
            if existing is not None:
                return existing, False
        # Serialise starts: two concurrent requests cannot both see "none running".
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext('tier_reassessment_start'))")
        running = Job.objects.filter(
            kind=REASSESSMENT_JOB, status__in=(JobStatus.PENDING, JobStatus.RUNNING)
        ).first()
        if running is not None:
            raise ReassessmentRunningError(
                f"Reassessment {running.pk} is {running.status}; it must finish first.",
                errors=[{"attr": None, "code": "reassessment_running", "detail": str(running.pk)}],
            )
        try:
            job = Job.objects.create(
                kind=REASSESSMENT_JOB,
                dedupe_key=dedupe_key,
                requested_by=actor.label,
                params={
                    "as_of": at.isoformat(),
                    "rule_set_id": rule_set.pk if rule_set else None,
                    "rule_version": rule_set.version if rule_set else None,
                    "chunk_size": chunk_size or settings.LOYALTY_TIER_CHUNK_SIZE,
                },
                created_at=at,
            )
        except IntegrityError:
            # The same schedule slot started concurrently: the other start won.
            existing = Job.objects.get(kind=REASSESSMENT_JOB, dedupe_key=dedupe_key)
            return existing, False
    return job, True


def reassessment_request(
    *, actor: Actor, at: datetime, dedupe_key: str | None = None, chunk_size: int | None = None
) -> tuple[Job, bool]:
    """Start a population reassessment and, once it commits, enqueue its planning (which runs
    inline when no broker is configured): what the API, the admin, the command and the nightly
    schedule call. Returns ``(job, created)`` like ``reassessment_start``."""
    from tiers.tasks import reassessment_plan_task  # the task module imports this one

    with transaction.atomic():
        job, created = reassessment_start(
            actor=actor, at=at, dedupe_key=dedupe_key, chunk_size=chunk_size
        )
        if created:
            # With the broker down the job stays pending and the watchdog plans it later.
            enqueue_on_commit(
                partial(reassessment_plan_task.delay, job_id=str(job.pk)),
                what="the reassessment's planning",
            )
    return job, created


def reassessment_plan(*, job_id: UUID, at: datetime) -> list[int]:
    """Split the population into id-range chunks (once) and mark the job running. Returns the
    indexes of the chunks not done yet: what to dispatch. Safe to call again (resume)."""
    with durable_atomic():
        job = Job.objects.select_for_update().filter(pk=job_id, kind=REASSESSMENT_JOB).first()
        if job is None:
            raise NotFoundError("No tier reassessment with this id.")
        if job.status == JobStatus.DONE:
            return []
        if not job.chunks.exists():
            bounds = _chunk_bounds(size=int(job.params["chunk_size"]))
            chunks = [
                JobChunk(
                    job=job,
                    index=index,
                    lower=None if index == 0 else lower,
                    upper=bounds[index + 1] if index + 1 < len(bounds) else None,
                )
                for index, lower in enumerate(bounds or [None])
            ]
            JobChunk.objects.bulk_create(chunks)
            job.chunks_total = len(chunks)
            job.items_total = members_in_range(lower=None, upper=None).count()
        open_chunks = list(
            job.chunks.exclude(status=JobStatus.DONE)
            .order_by("index")
            .values_list("index", flat=True)
        )
        job.status = JobStatus.RUNNING
        if not open_chunks:
            # Resuming a failed job whose chunks all finished after all (a duplicate of the
            # chunk that gave up succeeded): no chunk is left to mark the job done, so do it here.
            job.status, job.finished_at = JobStatus.DONE, at
        job.started_at = job.started_at or at
        job.save(
            update_fields=["status", "started_at", "finished_at", "chunks_total", "items_total"]
        )
        return open_chunks


def _chunk_bounds(*, size: int) -> list[UUID]:
    """Every ``size``-th member id in id order (one index scan, numbered by a window
    function): chunk i covers ``[bounds[i], bounds[i + 1])``."""
    table = connection.ops.quote_name(Member._meta.db_table)
    sql = (
        "SELECT id FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY id) AS n "  # noqa: S608
        f"FROM {table} WHERE erased_at IS NULL) numbered "
        "WHERE (n - 1) %% %s = 0 ORDER BY id"
    )
    pk_field = Member._meta.pk
    with connection.cursor() as cursor:
        cursor.execute(sql, [size])
        return [pk_field.to_python(value) for (value,) in cursor.fetchall()]


# --- Running a chunk --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    index: int
    ran: bool  # False: it was done already (a duplicate or a re-run)
    assessed: int = 0
    changed: int = 0
    job_done: bool = False


def reassessment_chunk_run(*, job_id: UUID, index: int, at: datetime) -> ChunkOutcome:
    """Run one chunk of a job; a no-op when it is done already."""
    claimed = JobChunk.objects.filter(job_id=job_id, index=index).exclude(status=JobStatus.DONE)
    lease_ms = settings.LOYALTY_TIER_CHUNK_LEASE_SECONDS * 1000
    # Visible progress ("running") in its own short transaction, before the work. A duplicate
    # delivery waits here while the first holds the chunk, bounded by the lease.
    with transaction.atomic(), lock_timeout(lease_ms):
        marked = claimed.update(status=JobStatus.RUNNING, started_at=at, attempts=F("attempts") + 1)
    if not marked:
        if not JobChunk.objects.filter(job_id=job_id, index=index).exists():
            raise NotFoundError("No such reassessment chunk.")
        return ChunkOutcome(index=index, ran=False)
    with durable_atomic(), lock_timeout(lease_ms):
        # Chunk lock: a duplicate delivery waits here, then finds the chunk done. Only the
        # chunk's row (``of``): locking the joined job row too would run chunks one at a time.
        chunk = (
            JobChunk.objects.select_for_update(of=("self",))
            .select_related("job")
            .get(job_id=job_id, index=index)
        )
        if chunk.status == JobStatus.DONE:
            return ChunkOutcome(index=index, ran=False)
        job = chunk.job
        if is_postgres():
            # Foreign keys checked as rows are written, not at commit: the job row locked by
            # the counters below stays locked only for the commit itself, so parallel chunks
            # do not queue behind each other's checks.
            with connection.cursor() as cursor:
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        counts = _chunk_assess(job=job, lower=chunk.lower, upper=chunk.upper)
        chunk.status = JobStatus.DONE
        chunk.items = counts.assessed
        chunk.changed = counts.changed
        chunk.result = counts.as_result()
        chunk.finished_at = at
        chunk.save(update_fields=["status", "items", "changed", "result", "finished_at"])
        Job.objects.filter(pk=job.pk).update(
            chunks_done=F("chunks_done") + 1,
            items_done=F("items_done") + counts.assessed,
            items_changed=F("items_changed") + counts.changed,
        )
        # The job row is locked by the update above until commit, so exactly one chunk (the
        # last to commit) sees all chunks done.
        job_done = bool(
            Job.objects.filter(
                pk=job.pk, status=JobStatus.RUNNING, chunks_done=F("chunks_total")
            ).update(status=JobStatus.DONE, finished_at=at)
        )
    return ChunkOutcome(
        index=index,
        ran=True,
        assessed=counts.assessed,
        changed=counts.changed,
        job_done=job_done,
    )


def _chunk_assess(*, job: Job, lower: UUID | None, upper: UUID | None) -> AssessmentCounts:
    """Decide and write one chunk's members: on PostgreSQL by the rules compiled to one SQL
    statement, elsewhere (or with ``LOYALTY_TIER_SQL_ASSESSMENT`` off) by the Python evaluation.
    The tests hold both to the same outcome."""
    rules = _rules_for(job)
    as_of = _as_of(job)
    actor_label = f"system:reassessment:{job.pk}"
    if sql_assessment_enabled():
        # The statement does not say which members it changed: every document is rebuilt.
        all_reads_changed()
        return chunk_decide_and_write(
            rules=rules,
            at=as_of,
            scope=Scope(lower=lower, upper=upper),
            job_id=job.pk,
            actor_label=actor_label,
        )
    assessed = members_assess(
        members=members_in_range(lower=lower, upper=upper), rules=rules, at=as_of
    )
    return decisions_apply(
        assessed=assessed, rules=rules, at=as_of, actor_label=actor_label, job_id=job.pk
    )


def sql_assessment_enabled() -> bool:
    return is_postgres() and settings.LOYALTY_TIER_SQL_ASSESSMENT


def reassessment_fail(*, job_id: UUID, error: str, at: datetime) -> None:
    """Record that a job cannot go on (a chunk gave up after its retries)."""
    Job.objects.filter(pk=job_id).exclude(status=JobStatus.DONE).update(
        status=JobStatus.FAILED, error=error[:2000], finished_at=at
    )


def reassessment_unplanned(*, at: datetime) -> list[UUID]:
    """Reassessments whose planning never ran (the watchdog's)."""
    return jobs_unplanned(
        kind=REASSESSMENT_JOB,
        lease=timedelta(seconds=settings.LOYALTY_TIER_CHUNK_LEASE_SECONDS),
        at=at,
    )


def reassessment_stalled(*, at: datetime) -> dict[UUID, list[int]]:
    """Open chunks of running reassessments that no worker seems to hold (the watchdog's)."""
    return job_chunks_stalled(
        kind=REASSESSMENT_JOB,
        lease=timedelta(seconds=settings.LOYALTY_TIER_CHUNK_LEASE_SECONDS),
        at=at,
    )


def reassessment_run_inline(*, job_id: UUID, at: datetime, progress: Progress | None = None) -> Job:
    """Plan and run every open chunk of a job in this process (the command without a broker)."""
    for index in reassessment_plan(job_id=job_id, at=at):
        outcome = reassessment_chunk_run(job_id=job_id, index=index, at=at)
        if progress:
            progress(outcome.assessed)
    return Job.objects.get(pk=job_id)


# --- One member -------------------------------------------------------------------------------


def member_tier_reassess(*, member_id: UUID, actor: Actor, at: datetime) -> AssessmentCounts:
    """Reassess one member now under the rules in force (after a certification change, a refund,
    a big award). Running it twice changes nothing the second time."""
    return members_tier_reassess(member_ids=[member_id], actor=actor, at=at)


def members_tier_reassess(
    *, member_ids: list[UUID], actor: Actor, at: datetime
) -> AssessmentCounts:
    """Reassess the given members now (the admin's bulk action), set-based, in one transaction."""
    rules = rules_in_force(at=at)
    with transaction.atomic():
        assessed = members_assess(
            members=Member.objects.filter(pk__in=member_ids, erased_at__isnull=True),
            rules=rules,
            at=at,
        )
        return decisions_apply(assessed=assessed, rules=rules, at=at, actor_label=actor.label)


# --- Simulation -------------------------------------------------------------------------------


@dataclass(slots=True)
class SimulationResult:
    rule_set: RuleSet
    at: datetime
    members: int = 0
    changed: int = 0
    matrix: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    samples: dict[str, dict[str, list[dict[str, str]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )

    def as_dict(self) -> dict[str, Any]:
        return {
            "members": self.members,
            "changed": self.changed,
            "matrix": {source: dict(row) for source, row in self.matrix.items()},
            "samples": {source: dict(row) for source, row in self.samples.items()},
        }


def tier_simulation_run(
    *, rule_set_id: int, at: datetime, sample_size: int | None = None
) -> SimulationResult:
    """What would happen if ``rule_set_id`` were in force at ``at``: the from-to matrix over the
    whole population and sample members per cell, by the reassessment's own code path, in
    chunks. Writes nothing. One simulation at a time (each reads the whole population)."""
    sample_size = (
        sample_size if sample_size is not None else settings.LOYALTY_TIER_SIMULATION_SAMPLE_SIZE
    )
    rule_set = rule_set_get(rule_set_id=rule_set_id)
    rules = rules_compile(rule_set=rule_set)
    result = SimulationResult(rule_set=rule_set, at=at)
    chunk_size = settings.LOYALTY_TIER_CHUNK_SIZE
    with transaction.atomic():
        _simulation_claim()
        after: UUID | None = None
        while True:
            members = Member.objects.filter(erased_at__isnull=True)
            if after is not None:
                members = members.filter(pk__gt=after)
            ids = list(members.order_by("pk").values_list("pk", flat=True)[:chunk_size])
            if not ids:
                return result
            after = ids[-1]
            if sql_assessment_enabled():
                _simulation_add_sql(result, rules=rules, at=at, ids=ids, sample_size=sample_size)
                continue
            for item in members_assess(
                members=Member.objects.filter(pk__in=ids), rules=rules, at=at
            ):
                source, target = item.before.tier, item.decision.state.tier
                result.members += 1
                result.matrix[source][target] += 1
                if source != target:
                    result.changed += 1
                cell = result.samples[source][target]
                if len(cell) < sample_size:
                    cell.append({"id": str(item.member_id), "external_id": item.external_id})


def _simulation_add_sql(
    result: SimulationResult, *, rules: Rules, at: datetime, ids: list[UUID], sample_size: int
) -> None:
    """Add one chunk to the simulation by the population job's own SQL decision."""
    for source, target, members, samples in simulation_cells(
        rules=rules, at=at, scope=Scope(ids=ids), sample_size=sample_size
    ):
        result.members += members
        result.matrix[source][target] += members
        if source != target:
            result.changed += members
        cell = result.samples[source][target]
        cell.extend(
            {"id": str(member_id), "external_id": external_id}
            for member_id, external_id in samples[: sample_size - len(cell)]
        )


def _simulation_claim() -> None:
    """Refuse a second concurrent simulation (a transaction-level advisory lock on PostgreSQL)."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(hashtext('tier_simulation'))")
        (claimed,) = cursor.fetchone()
    if not claimed:
        raise SimulationBusyError()
