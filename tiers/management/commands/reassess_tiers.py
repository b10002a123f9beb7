"""Reassess members' tiers: the population job inline with a progress bar (the nightly job,
runnable without a broker), queued for the workers, resumed, or for one member."""

from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from tqdm import tqdm

from core.actors import system_actor
from core.db import durable_atomic
from core.exceptions import DomainError
from core.models import Job, JobStatus
from members.selectors import member_ids_by_external_id
from tiers.selectors import reassessment_get, reassessment_report, tier_list
from tiers.services.reassessment import (
    ReassessmentRunningError,
    member_tier_reassess,
    reassessment_request,
    reassessment_run_inline,
    reassessment_start,
)

MAX_CHUNK_SIZE = 100_000


class Command(BaseCommand):
    help = (
        "Reassess every member's tier now under the rules in force, in this process with a "
        "progress bar (the nightly job without a broker). --async queues it for the Celery "
        "workers instead, --resume runs the open chunks of an existing job, --member reassesses "
        "one member. Re-running is safe: a chunk done is never run twice."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--chunk-size",
            type=int,
            default=None,
            help=f"Members per chunk (default LOYALTY_TIER_CHUNK_SIZE, "
            f"{settings.LOYALTY_TIER_CHUNK_SIZE}).",
        )
        parser.add_argument(
            "--async",
            action="store_true",
            dest="run_async",
            help="Only create the job and queue its planning for the workers; print the job id.",
        )
        parser.add_argument(
            "--resume",
            metavar="JOB_ID",
            default=None,
            help="Run the open chunks of an existing reassessment here (after a crash, or to "
            "finish a job the workers left).",
        )
        parser.add_argument(
            "--member",
            metavar="EXTERNAL_ID",
            default=None,
            help="Reassess one member now (by external id).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        chunk_size, run_async = options["chunk_size"], options["run_async"]
        resume, external_id = options["resume"], options["member"]
        if chunk_size is not None and not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise CommandError(f"--chunk-size must be between 1 and {MAX_CHUNK_SIZE}.")
        if external_id is not None and (run_async or resume or chunk_size is not None):
            raise CommandError("--member reassesses one member: it takes no other option.")
        if resume is not None and (run_async or chunk_size is not None):
            raise CommandError(
                "--resume runs an existing job as it was planned: no --async or --chunk-size."
            )
        try:
            if external_id is not None:
                self._member(external_id)
            elif resume is not None:
                self._resume(resume)
            elif run_async:
                self._enqueue(chunk_size)
            else:
                self._run(chunk_size)
        except ReassessmentRunningError as error:
            raise CommandError(
                f"{error.detail} Run its open chunks here with --resume "
                f"{error.errors[0]['detail'] if error.errors else 'JOB_ID'}."
            ) from error
        except DomainError as error:
            raise CommandError(error.detail) from error

    # --- The population job ----------------------------------------------------------------------

    def _run(self, chunk_size: int | None) -> None:
        job, _ = reassessment_start(
            actor=system_actor("reassess_tiers"), at=timezone.now(), chunk_size=chunk_size
        )
        self.stderr.write(f"Reassessment {job.pk} started.")
        self._run_inline(job)

    def _resume(self, job_id: str) -> None:
        job = reassessment_get(job_id=_uuid(job_id))
        if job.status == JobStatus.DONE:
            self.stderr.write(f"Reassessment {job.pk} is done already; nothing to run.")
            self._summary(job)
            return
        self.stderr.write(
            f"Resuming reassessment {job.pk} ({job.chunks_done} of {job.chunks_total} chunks done)."
        )
        self._run_inline(job)

    def _run_inline(self, job: Job) -> None:
        with tqdm(desc="members", unit="member", file=self.stderr) as bar:
            job = reassessment_run_inline(job_id=job.pk, at=timezone.now(), progress=bar.update)
        self._summary(job)

    def _enqueue(self, chunk_size: int | None) -> None:
        with durable_atomic():
            job, _ = reassessment_request(
                actor=system_actor("reassess_tiers"), at=timezone.now(), chunk_size=chunk_size
            )
        if settings.CELERY_TASK_ALWAYS_EAGER:
            self.stderr.write(
                "No broker is configured (CELERY_BROKER_URL unset): the job ran inline."
            )
        else:
            self.stderr.write(
                f"Queued. Follow it at tier-reassessments/{job.pk}/ or in the admin (Jobs)."
            )
        self.stdout.write(str(job.pk))

    def _summary(self, job: Job) -> None:
        job.refresh_from_db()
        report = reassessment_report(job=job)
        counts = report["counts"]
        version = job.params.get("rule_version")
        self.stdout.write(
            f"Reassessment {job.pk}: {job.status}, rules v{version if version else '-'}, "
            f"as of {job.params.get('as_of')}."
        )
        self.stdout.write(
            f"Members assessed: {job.items_done}, changed tier: {job.items_changed} "
            f"(grace started {counts.get('grace_started', 0)}, nominations confirmed "
            f"{counts.get('confirmed', 0)}, rolled back {counts.get('rolled_back', 0)}, "
            f"skipped as changed meanwhile {counts.get('skipped_concurrent', 0)})."
        )
        self.stdout.write(_matrix_table(list(tier_list().values_list("code", flat=True)), report))

    # --- One member ------------------------------------------------------------------------------

    def _member(self, external_id: str) -> None:
        member_id = member_ids_by_external_id(external_ids=[external_id]).get(external_id)
        if member_id is None:
            raise CommandError(f"No member with external id {external_id!r} (or it is erased).")
        with durable_atomic():
            counts = member_tier_reassess(
                member_id=member_id, actor=system_actor("reassess_tiers"), at=timezone.now()
            )
        if not counts.assessed:
            raise CommandError(f"{external_id} was not assessed (erased meanwhile).")
        [(source, row)] = counts.matrix.items()
        [target] = row
        if counts.skipped_concurrent:
            self.stdout.write(f"{external_id}: changed meanwhile; run again to reassess.")
        elif counts.changed:
            self.stdout.write(f"{external_id}: {source} -> {target}.")
        elif counts.grace_started:
            self.stdout.write(f"{external_id}: stays {source}; maintenance failing, grace started.")
        else:
            self.stdout.write(f"{external_id}: stays {source}.")


def _uuid(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a job id (a UUID).") from None


def _matrix_table(tiers: list[str], report: dict[str, Any]) -> str:
    """The from-to matrix as a small fixed-width table (rows: before, columns: after)."""
    matrix = report["matrix"]
    header = ["from \\ to", *tiers]
    lines = [header]
    lines.extend(
        [source, *(str(matrix.get(source, {}).get(target, 0)) for target in tiers)]
        for source in tiers
    )
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )
