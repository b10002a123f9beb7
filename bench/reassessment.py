"""Population tier reassessment against hand-written SQL doing the same work, same run.

Run with DJANGO_SETTINGS_MODULE=bench.settings and DATABASE_URL pointing at a database whose
name contains "bench" (its members are replaced):

    .venv/bin/python -m bench.reassessment [--sizes 100000,1000000] [--workers 2] [--quick]

For each population size it generates members and about 10 daily rollup rows per member over
90 days (``generate_load_data``), then, from the same starting state (everyone at the lowest
tier, no history):

- **job**: the real population job: ``reassessment_start`` + plan, then the chunk tasks run by
  ``--workers`` worker processes (each runs ``reassessment_chunk_run`` like a Celery worker on
  the ``bulk`` queue, taking the next open chunk); wall time and each worker's peak RSS;
- **reference**: one hand-written SQL statement computing the default ladder's metrics over
  the rollups, the ledger and certifications, deciding the target tier and writing the tier
  update plus a history row per changed member (no events, no explanation, no progress).

The ratio is job time / reference time (target <= 1.5); peak worker memory must not grow with
the population (target: independent of member count). Writes bench/results/reassessment.md.
"""

import argparse
import os
import resource
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import django

if TYPE_CHECKING:
    from bench.rows import Row

TARGET_RATIO = 1.5
OUTPUT = Path(__file__).resolve().parent / "results" / "reassessment.md"


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    django.setup()


def generate(members: int) -> float:
    from django.core.management import call_command
    from django.db import connection

    name = connection.settings_dict["NAME"]
    if "bench" not in name:
        raise SystemExit(f"Refusing to reset database {name!r}: its name must contain 'bench'.")
    call_command("migrate", interactive=False, verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE members_member, core_outboxevent, core_job, tiers_tierchange "
            "RESTART IDENTITY CASCADE"
        )
        # The entries went with the members: the system accounts' shards go back to zero with
        # them, or the ledger audit (invariant I5) would report what an earlier run posted.
        cursor.execute("UPDATE rewards_systemaccountbalance SET balance = 0 WHERE balance <> 0")
    started = time.perf_counter()
    call_command(
        "generate_load_data", members=members, days=90, yes=True, verbosity=0, replace=True
    )
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    return seconds


def reset() -> None:
    """Everyone back at the lowest tier with no history: the common starting state."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE tiers_tierchange, core_job RESTART IDENTITY CASCADE")
        cursor.execute(
            "DELETE FROM core_outboxevent WHERE event_type IN "
            "('member.tier_changed', 'tier.will_downgrade')"
        )
        cursor.execute(
            "UPDATE members_member SET tier_code = 'basic', tier_grace_until = NULL, "
            "tier_pin_code = NULL, tier_pinned_until = NULL, tier_probation_until = NULL, "
            "tier_version = 0 WHERE tier_code <> 'basic' OR tier_grace_until IS NOT NULL"
        )
        cursor.execute("VACUUM ANALYZE members_member")


def tier_counts() -> dict[str, int]:
    from django.db.models import Count

    from members.models import Member

    return dict(Member.objects.values_list("tier").annotate(n=Count("pk")).order_by())


# The default ladder (tiers/ladder.py) as one statement: metrics over the widest window, the
# target tier (highest entry rule met, never the nomination-only kol), the update and history.
REFERENCE_SQL = """
WITH activity AS (
    SELECT m.id, m.tier_code,
           COALESCE(SUM(d.interactions) FILTER (WHERE d.business_date > %(as_of)s - 30), 0) AS i30,
           COUNT(d.member_id) FILTER (WHERE d.interactions > 0
                                        AND d.business_date > %(as_of)s - 30) AS ad30,
           COALESCE(SUM(d.posts), 0) AS p90
    FROM members_member m
    LEFT JOIN members_memberdailyactivity d
           ON d.member_id = m.id AND d.business_date > %(as_of)s - 90
          AND d.business_date <= %(as_of)s
    WHERE m.erased_at IS NULL
    GROUP BY m.id
), points AS (
    SELECT e.member_id, SUM(e.points) AS qp
    FROM rewards_pointsentry e
    WHERE e.kind = 'earn' AND e.created_at >= %(points_from)s AND e.created_at < %(points_to)s
    GROUP BY e.member_id
), certified AS (
    SELECT g.member_id,
           bool_or(g.certification_id = 'onboarding') AS onboarding,
           bool_or(g.certification_id = 'content-creator') AS creator
    FROM rewards_certificationgrant g
    WHERE g.revoked_at IS NULL AND g.granted_at <= %(at)s
      AND (g.expires_at IS NULL OR g.expires_at > %(at)s)
    GROUP BY g.member_id
), decided AS (
    SELECT a.id, a.tier_code AS old_tier,
           CASE WHEN COALESCE(c.creator, false) AND a.p90 >= 6 AND COALESCE(p.qp, 0) >= 600
                     THEN 'koc'
                WHEN COALESCE(c.onboarding, false) AND a.i30 >= 12 AND a.ad30 >= 4
                     THEN 'active'
                ELSE a.tier_code END AS new_tier
    FROM activity a
    LEFT JOIN points p ON p.member_id = a.id
    LEFT JOIN certified c ON c.member_id = a.id
), changed AS (
    UPDATE members_member m
       SET tier_code = d.new_tier, tier_since = %(at)s, tier_version = m.tier_version + 1
      FROM decided d
     WHERE m.id = d.id AND d.new_tier <> d.old_tier
    RETURNING m.id, d.old_tier, d.new_tier
)
INSERT INTO tiers_tierchange
    (member_id, from_tier_id, to_tier_id, reason, actor, note, details, created_at)
SELECT id, old_tier, new_tier, 'reassessment', 'bench:reference', '', '{}'::jsonb, %(at)s
FROM changed
"""


def reference_run() -> tuple[float, int]:
    from django.db import connection, transaction
    from django.utils import timezone

    from rewards.services.earning import business_date_of
    from tiers.selectors import business_day_end

    at = timezone.now()
    as_of = business_date_of(at)
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            REFERENCE_SQL,
            {
                "at": at,
                "as_of": as_of,
                "points_from": business_day_end(as_of - timedelta(days=90)),
                "points_to": business_day_end(as_of),
            },
        )
        changed = cursor.rowcount
    return time.perf_counter() - started, changed


def job_run(workers: int) -> tuple[float, int, list[int]]:
    """The population job with ``workers`` worker processes. Returns seconds, members changed,
    each worker's peak RSS in KiB.

    The workers start and set Django up first, like Celery workers already running: the clock
    starts when the job is created, not at process start."""
    from django.utils import timezone

    from core.actors import system_actor
    from core.models import Job
    from tiers.services.reassessment import reassessment_plan, reassessment_start

    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.reassessment", "--worker", "stdin"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    for process in processes:
        assert process.stdout is not None  # noqa: S101 - a pipe was asked for
        if process.stdout.readline().strip() != "ready":
            raise SystemExit("A worker did not start.")
    started = time.perf_counter()
    at = timezone.now()
    job, _ = reassessment_start(actor=system_actor("bench"), at=at)
    reassessment_plan(job_id=job.pk, at=at)
    for process in processes:
        assert process.stdin is not None  # noqa: S101 - a pipe was asked for
        process.stdin.write(f"{job.pk}\n")
        process.stdin.flush()
    # The clock stops when every worker has found no chunk left, not when the processes have
    # exited: a Celery worker stays up after a job, so its interpreter's shutdown is no part of it.
    reports = []
    for process in processes:
        assert process.stdout is not None  # noqa: S101 - a pipe was asked for
        reports.append(process.stdout.readline().strip())
    seconds = time.perf_counter() - started
    peaks = []
    for process, report in zip(processes, reports, strict=True):
        process.communicate()
        if process.returncode or not report.startswith("done "):
            raise SystemExit(f"A worker failed with exit code {process.returncode}.")
        peaks.append(int(report.split()[1]))
    job = Job.objects.get(pk=job.pk)
    if job.status != "done":
        raise SystemExit(f"The job ended {job.status}: {job.error}")
    return seconds, job.items_changed, peaks


def worker(job_id: str) -> None:
    """Take open chunks one at a time (``SKIP LOCKED``: no two workers take the same chunk, as
    a broker would hand them out) and run each with the job's own chunk code. Prints
    "done <peak RSS KiB>" when no chunk is left. With ``job_id`` "stdin" it says "ready" once
    set up and reads the job id from stdin."""
    from django.db import connection, transaction
    from django.utils import timezone

    from core.models import JobChunk
    from tiers.services.reassessment import reassessment_chunk_run

    if job_id == "stdin":
        connection.ensure_connection()
        print("ready", flush=True)
        job_id = sys.stdin.readline().strip()
    table = JobChunk._meta.db_table
    claim = (
        f"UPDATE {table} SET status = 'running' WHERE id = ("  # noqa: S608 - model table name
        f"SELECT id FROM {table} WHERE job_id = %s AND status = 'pending' "
        "ORDER BY index LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING index"
    )
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(claim, [job_id])
            claimed = cursor.fetchone()
        if claimed is None:
            break
        reassessment_chunk_run(job_id=UUID(job_id), index=claimed[0], at=timezone.now())
    print(f"done {peak_rss_kib()}", flush=True)
    connection.close()


def peak_rss_kib() -> int:
    """This process's own peak resident memory. Not ``getrusage``'s ``ru_maxrss``: on Linux it
    survives ``exec``, so a worker started by a big parent (the orchestrator after generating a
    population) would report the parent's high-water mark. ``VmHWM`` belongs to this program."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure_size(size: int, workers: int) -> dict[str, object]:
    """Generate ``size`` members, then time the reference SQL and the job from the same state.

    The population stays in the database afterwards (the read and analytics suites use it)."""
    from members.models import MemberDailyActivity

    print(f"== {size:,} members: generating…", flush=True)
    generated = generate(size)
    rollups = MemberDailyActivity.objects.count()
    reset()
    reference_seconds, reference_changed = reference_run()
    reference_tiers = tier_counts()
    reset()
    job_seconds, job_changed, peaks = job_run(workers)
    job_tiers = tier_counts()
    if job_tiers != reference_tiers:
        raise SystemExit(f"Job and reference disagree: {job_tiers} vs {reference_tiers}")
    row: dict[str, object] = {
        "members": size,
        "rollups": rollups,
        "generate_s": generated,
        "reference_s": reference_seconds,
        "job_s": job_seconds,
        "ratio": job_seconds / reference_seconds,
        "changed": job_changed,
        "reference_changed": reference_changed,
        "peak_mib": max(peaks) / 1024,
        "tiers": job_tiers,
    }
    print(row, flush=True)
    return row


MEMORY_GROWTH_LIMIT = 1.25


def suite(*, sizes: list[int], workers: int = 2) -> tuple[list["Row"], list[dict[str, object]]]:
    """The reassessment rows of the combined table (``bench/run.py``) and the raw figures."""
    from bench.rows import Row, verdict

    measured = [measure_size(size, workers) for size in sizes]
    report(measured, workers, exit_on_miss=False)
    rows = [
        Row(
            f"population reassessment, {row['members']:,} members",
            f"job {row['job_s']:.1f} s ({workers} workers)",
            f"hand-written SQL {row['reference_s']:.1f} s",
            f"{row['ratio']:.2f}",
            f"<= {TARGET_RATIO}",
            verdict(float(row["ratio"]) <= TARGET_RATIO),  # type: ignore[arg-type]
            f"{row['rollups']:,} rollup rows, {row['changed']:,} members changed tier; "
            f"peak worker RSS {row['peak_mib']:.0f} MiB",
        )
        for row in measured
    ]
    smallest, largest = measured[0], measured[-1]
    growth = float(largest["peak_mib"]) / float(smallest["peak_mib"])  # type: ignore[arg-type]
    if len(measured) > 1:
        rows.append(
            Row(
                "reassessment peak worker memory vs member count",
                f"{largest['peak_mib']:.0f} MiB at {largest['members']:,}",
                f"{smallest['peak_mib']:.0f} MiB at {smallest['members']:,}",
                f"{growth:.2f}",
                f"<= {MEMORY_GROWTH_LIMIT} (independent of member count)",
                verdict(growth <= MEMORY_GROWTH_LIMIT),
            )
        )
    else:
        rows.append(
            Row(
                "reassessment peak worker memory",
                f"{largest['peak_mib']:.0f} MiB at {largest['members']:,}",
                note="one size only (quick mode): growth is checked by the full run",
            )
        )
    return rows, measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="Sizes 20,000 and 100,000.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _setup()
    if args.worker:
        worker(args.worker)
        return
    sizes = [20_000, 100_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    rows = [measure_size(size, args.workers) for size in sizes]
    report(rows, args.workers)


def report(rows: list[dict[str, object]], workers: int, *, exit_on_miss: bool = True) -> None:
    lines = [
        "# Population reassessment vs hand-written SQL",
        "",
        f"Workers: {workers}. Target: ratio <= {TARGET_RATIO}, peak worker memory independent "
        "of the member count.",
        "",
        "| members | rollup rows | reference SQL s | job s | ratio | changed | peak worker MiB "
        "| tiers after |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines.extend(
        f"| {row['members']:,} | {row['rollups']:,} | {row['reference_s']:.1f} "
        f"| {row['job_s']:.1f} | **{row['ratio']:.2f}** | {row['changed']:,} "
        f"| {row['peak_mib']:.0f} | {row['tiers']} |"
        for row in rows
    )
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if exit_on_miss and any(row["ratio"] > TARGET_RATIO for row in rows):  # type: ignore[operator]
        sys.exit(1)


if __name__ == "__main__":
    main()
