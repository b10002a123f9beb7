"""Throughput and latency of the award endpoint as a ratio against a minimal DRF view (SPEC §5).

    DJANGO_SETTINGS_MODULE=bench.settings \
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/loyalty_bench \
    .venv/bin/python -m bench.award_throughput [--quick]

(or ``make bench`` / ``make bench-quick``). Steps: migrate the bench database and empty its member,
partner, idempotency and outbox tables; create two equal pools of members with open points
accounts (one for the award endpoint, one for the reference, because the reference writes no lots
and so fails audit invariant I3 by design) and a partner holding ``points:award``; start gunicorn on
127.0.0.1 with ``bench.settings``; warm both endpoints up; then run wrk against the award endpoint
and the reference in alternating order, round after round, and take the median of each figure.
Every request awards 1 point to a random member of the pool and carries a unique Idempotency-Key.
The machine may be shared: before each run it waits (bounded) until other processes leave the CPU
alone, measures their share during the run, and measures a noisy run again.

Afterwards it checks that every 2xx response is one point in the ledger (up to the requests still
in flight when wrk stopped), that no request failed, and that the ledger audit finds nothing but
the reference's designed I3 rows. It prints a markdown report, writes it to
``bench/results/award.md`` and exits 1 when a target is missed, 2 when a check fails, 3 when
the measurement was noisy (other processes kept the CPU busy despite waiting and measuring again),
so inconclusive.
"""

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.rows import Row

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
LUA_SCRIPT = BENCH_DIR / "wrk_award.lua"
DEFAULT_OUTPUT = BENCH_DIR / "results" / "award.md"

RATIO_TARGET = 0.70
P99_TARGET_MS = 50.0

AWARD_POOL = "bench-award-"
REFERENCE_POOL = "bench-reference-"


@dataclass(frozen=True, slots=True)
class Target:
    key: str
    label: str
    pool: str
    path_prefix: str
    path_suffix: str


AWARD = Target(
    "award",
    "award endpoint `POST /api/v1/members/{id}/points/awards/`",
    AWARD_POOL,
    "/api/v1/members/",
    "/points/awards/",
)
REFERENCE = Target(
    "reference",
    "reference `POST /bench/reference-award/{id}/`",
    REFERENCE_POOL,
    "/bench/reference-award/",
    "/",
)


@dataclass(slots=True)
class Run:
    target: Target
    round_number: int
    requests: int
    responses: int
    ok: int
    duration_s: float
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    points_written: int = 0
    foreign_cpu_percent: float = 0.0
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    # False when other processes were busy during the run and it was measured again.
    kept: bool = True

    @property
    def ok_per_second(self) -> float:
        return self.ok / self.duration_s

    @property
    def failed(self) -> int:
        return self.responses - self.ok

    def cpu_ms_per_request(self, group: str) -> float:
        return 1000 * self.cpu_seconds.get(group, 0.0) / max(self.ok, 1)


@dataclass(slots=True)
class Summary:
    rps: float
    p50_ms: float
    p99_ms: float
    failed: int
    socket_errors: int
    app_cpu_ms: float
    db_cpu_ms: float


@dataclass(slots=True)
class Report:
    started_at: datetime
    config: argparse.Namespace
    machine: dict[str, str]
    runs: list[Run] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    expected_violation_count: int = 0
    checks: list[tuple[str, bool, str]] = field(default_factory=list)


# --- Command line ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="10 s runs instead of 30 s")
    parser.add_argument("--members", type=int, default=1000, help="members per pool")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--duration", type=int, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up per endpoint")
    parser.add_argument("--rounds", type=int, default=3, help="measured runs per endpoint")
    # 2 sync workers measured best on 2 cores for both endpoints (bench/README.md).
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--worker-class", default="sync", help="gunicorn worker class")
    parser.add_argument("--gunicorn-threads", type=int, default=1, help="threads per worker")
    parser.add_argument(
        "--noisy-cpu-percent",
        type=float,
        default=10.0,
        help="other processes' CPU share above which a run is noisy, measured again",
    )
    parser.add_argument(
        "--retries", type=int, default=2, help="extra attempts per run when it was noisy"
    )
    parser.add_argument(
        "--quiet-wait",
        type=int,
        default=60,
        help="seconds to wait at most for a quiet machine before each run",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 10 if args.quick else 30
    if args.warmup is None:
        # Full mode warms up for longer than the throttle's 1-minute window: DRF's throttle keeps
        # a list of the client's request times in the cache, and its cost grows until that list
        # stops growing.
        args.warmup = 5 if args.quick else 30
    args.mode = "quick" if args.quick else "full"
    return args


# --- Database ----------------------------------------------------------------------------------


def prepare_database(members_per_pool: int) -> str:
    """Migrate, empty what earlier runs wrote, create both member pools and the partner.

    Returns the partner's plain API key.
    """
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.utils import timezone

    from core.models import Scope
    from core.services import partner_create
    from members.models import Member
    from rewards.models import PointsAccount

    name = settings.DATABASES["default"]["NAME"]
    if "bench" not in name:
        # The reset below empties whole tables: never do that to a database not made for it.
        raise SystemExit(f"Refusing to reset database {name!r}: its name must contain 'bench'.")
    call_command("migrate", interactive=False, verbosity=0)
    with connection.cursor() as cursor:
        # Members cascade to everything hanging off them (accounts, entries, lots, tags, ...);
        # the seeded ladder and earning rules stay.
        cursor.execute(
            "TRUNCATE members_member, core_partner, core_idempotencyrecord, core_outboxevent "
            "RESTART IDENTITY CASCADE"
        )
        # The entries went with the members: the system accounts' shards go back to zero with
        # them, or the ledger audit (invariant I5) would report what an earlier run posted.
        cursor.execute("UPDATE rewards_systemaccountbalance SET balance = 0 WHERE balance <> 0")
    at = timezone.now()
    with transaction.atomic():
        members = [
            Member(
                external_id=f"{pool}{number:06d}",
                display_name=f"Bench member {number}",
                joined_at=at,
                tier_since=at,
                lifecycle_changed_at=at,
                created_at=at,
                updated_at=at,
            )
            for pool in (AWARD_POOL, REFERENCE_POOL)
            for number in range(members_per_pool)
        ]
        Member.objects.bulk_create(members, batch_size=1000)
        PointsAccount.objects.bulk_create(
            [PointsAccount(member_id=member.pk, updated_at=at) for member in members],
            batch_size=1000,
        )
        _, key = partner_create(name="Bench partner", scopes=[Scope.POINTS_AWARD], at=at)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return key


def pool_member_ids(pool: str) -> list[str]:
    from members.models import Member

    return [
        str(member_id)
        for member_id in Member.objects.filter(external_id__startswith=pool)
        .order_by("external_id")
        .values_list("pk", flat=True)
    ]


def pool_points(pool: str) -> int:
    from django.db.models import Sum

    from rewards.models import PointsEntry

    total = PointsEntry.objects.filter(member__external_id__startswith=pool).aggregate(
        total=Sum("points")
    )["total"]
    return total or 0


def ledger_audit(reference_member_ids: set[str]) -> tuple[list[dict[str, Any]], int]:
    """The audit's violations, less the reference's designed ones (I3: it writes no lots).

    Returns the unexpected violations and how many expected ones were set aside.
    """
    from rewards.selectors import ledger_violations

    unexpected, expected = [], 0
    for violation in ledger_violations():
        if (
            violation["invariant"] == "I3 lots match the balance"
            and str(violation["row"][0]) in reference_member_ids
        ):
            expected += 1
        else:
            unexpected.append(violation)
    return unexpected, expected


# --- Server and load ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """gunicorn serving ``loyalty.wsgi`` with the bench settings, on the loopback only."""

    def __init__(self, args: Any, log_path: Path, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        gunicorn = Path(sys.executable).parent / "gunicorn"
        self.command = [
            str(gunicorn),
            "loyalty.wsgi:application",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(args.workers),
            "--worker-class",
            args.worker_class,
            "--threads",
            str(args.gunicorn_threads),
            "--log-level",
            "warning",
            "--chdir",
            str(PROJECT_DIR),
        ]
        # Each worker keeps one PostgreSQL backend for the whole benchmark (instead of reconnecting
        # every 60 s): a backend that exits mid-run takes its CPU time out of the accounting.
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "DB_CONN_MAX_AGE": "3600",
            # The production cache: throttling counters and cached read documents in Redis, so
            # every request pays what it pays in production (e.g. an award replaces the
            # member's read tokens).
            "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7"),
            **(extra_env or {}),
        }
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "Server":
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=PROJECT_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout_s=60)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # gunicorn runs in its own session: stop the arbiter and its workers, nothing else.
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def _wait_ready(self, timeout_s: float) -> None:
        assert self.process is not None  # noqa: S101
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"gunicorn exited at start-up:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/health/", timeout=10) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except OSError:  # refused while binding, or a worker still importing Django
                pass
            time.sleep(0.2)
        raise SystemExit(
            f"gunicorn did not answer /health/ within {timeout_s} s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_cpu_seconds(stat: str) -> float:
    # Fields after the parenthesised command name: state is 3rd, utime 14th, stime 15th.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    busy_s: float  # machine-wide busy CPU seconds
    ours: dict[int, tuple[str, float]]  # pid -> (group, CPU seconds); pid 0: reaped children


@dataclass(frozen=True, slots=True)
class CpuUsage:
    foreign_percent: float  # other processes' share of the machine's CPU
    seconds_by_group: dict[str, float]  # "app" (gunicorn), "db" (PostgreSQL), "load" (wrk)


class CpuMeter:
    """Who used the CPU while a run was measured: gunicorn, PostgreSQL, wrk, or someone else.

    The benchmark shares the machine with whatever else runs there; a busy neighbour lowers both
    endpoints' figures, and not always alike. Ours: the gunicorn process group, wrk (a reaped
    child), this process, PostgreSQL's backends for the bench database and its shared auxiliary
    processes. Everything else that kept a CPU busy is foreign.
    """

    POSTGRES_AUXILIARY = frozenset(
        {"checkpointer", "background", "walwriter", "autovacuum", "logical", "archiver"}
    )

    def __init__(self, server_pgid: int, database: str):
        self.server_pgid = server_pgid
        self.database = database

    def _group(self, pid: int, stat: str) -> str | None:
        if pid == os.getpid():
            return "self"
        if int(stat.rsplit(")", 1)[1].split()[2]) == self.server_pgid:
            return "app"
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return None
        words = command.split()
        if len(words) < 3 or words[0] != "postgres:":
            return None
        # "postgres: 15/main: walwriter", or a backend "postgres: 15/main: <user> <database> ..."
        if words[2] in self.POSTGRES_AUXILIARY or (len(words) > 3 and words[3] == self.database):
            return "db"
        return None

    def snapshot(self) -> CpuSnapshot:
        cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in cpu[:8])
        ours = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            group = self._group(int(entry.name), stat)
            if group is not None:
                ours[int(entry.name)] = (group, _process_cpu_seconds(stat))
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours[0] = ("load", children.ru_utime + children.ru_stime)
        return CpuSnapshot((user + nice + system + irq + softirq + steal) / CLOCK_TICKS, ours)

    @staticmethod
    def usage(before: CpuSnapshot, after: CpuSnapshot, seconds: float) -> CpuUsage:
        by_group: dict[str, float] = {}
        for pid, (group, cpu) in after.ours.items():
            by_group[group] = by_group.get(group, 0.0) + cpu - before.ours.get(pid, (group, 0.0))[1]
        foreign = (after.busy_s - before.busy_s) - sum(by_group.values())
        capacity = seconds * len(os.sched_getaffinity(0))
        return CpuUsage(min(100.0, max(0.0, 100 * foreign / capacity)), by_group)

    def wait_quiet(self, *, threshold_percent: float, timeout_s: float) -> float:
        """Wait (bounded) for a 2 s window in which other processes stay under the threshold.

        Returns the last window's foreign CPU share.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            before = self.snapshot()
            time.sleep(2.0)
            foreign = self.usage(before, self.snapshot(), 2.0).foreign_percent
            if foreign <= threshold_percent or time.monotonic() >= deadline:
                return foreign


def run_wrk(
    *,
    server: Server,
    target: Target,
    ids_file: Path,
    api_key: str,
    args: argparse.Namespace,
    duration_s: int,
    round_number: int,
) -> Run:
    command = [
        "wrk",
        f"-t{args.wrk_threads}",
        f"-c{args.connections}",
        f"-d{duration_s}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        server.base_url,
        "--",
        str(ids_file),
        target.path_prefix,
        target.path_suffix,
        api_key,
        uuid.uuid4().hex,
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("BENCH_JSON ")]
    if completed.returncode != 0 or not lines:
        raise SystemExit(
            f"wrk failed ({completed.returncode}):\n{completed.stdout}{completed.stderr}"
        )
    data = json.loads(lines[-1].removeprefix("BENCH_JSON "))
    return Run(
        target=target,
        round_number=round_number,
        requests=data["requests"],
        responses=data["responses"],
        ok=data["ok"],
        duration_s=data["duration_us"] / 1e6,
        socket_errors=sum(
            data[key] for key in ("connect_errors", "read_errors", "write_errors", "timeouts")
        ),
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
    )


def settle(server: Server) -> None:
    """Let requests still in flight when wrk stopped commit before the ledger is counted."""
    time.sleep(1.0)
    assert server.process is not None  # noqa: S101
    if server.process.poll() is not None:
        raise SystemExit(f"gunicorn died during the run:\n{server.log_tail()}")


# --- Reporting ---------------------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    from django.db import connection

    def first(path: str, prefix: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "unknown"

    mem_kb = first("/proc/meminfo", "MemTotal").split()[0]
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
        cursor.execute("SHOW synchronous_commit")
        sync_commit = cursor.fetchone()[0]
        cursor.execute("SHOW autovacuum")
        autovacuum = cursor.fetchone()[0]
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    import django
    import gunicorn

    return {
        "cpus (nproc)": str(len(os.sched_getaffinity(0))),
        "cpu model": first("/proc/cpuinfo", "model name"),
        "ram": f"{int(mem_kb) / 1024 / 1024:.1f} GiB" if mem_kb.isdigit() else "unknown",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "gunicorn": gunicorn.__version__,
        "postgresql": (
            f"{pg_version} (synchronous_commit={sync_commit}, autovacuum={autovacuum}, "
            "same machine)"
        ),
        "wrk": (wrk_version.stdout + wrk_version.stderr).splitlines()[0].strip(),
        "load average at start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "source digest": source_digest(),
    }


SOURCE_PACKAGES = ("loyalty", "core", "members", "tiers", "rewards")


def source_digest() -> str:
    """SHA-256 over the application's Python sources, to tell which code was measured."""
    digest = hashlib.sha256()
    for package in SOURCE_PACKAGES:
        for path in sorted((PROJECT_DIR / package).rglob("*.py")):
            digest.update(str(path.relative_to(PROJECT_DIR)).encode() + b"\0")
            digest.update(path.read_bytes())
    return f"{digest.hexdigest()[:16]} (sha256 of {', '.join(SOURCE_PACKAGES)} *.py)"


def summarise(runs: list[Run], target: Target) -> Summary:
    mine = [run for run in runs if run.target is target and run.kept]
    return Summary(
        rps=statistics.median(run.ok_per_second for run in mine),
        p50_ms=statistics.median(run.p50_ms for run in mine),
        p99_ms=statistics.median(run.p99_ms for run in mine),
        failed=sum(run.failed for run in mine),
        socket_errors=sum(run.socket_errors for run in mine),
        app_cpu_ms=statistics.median(run.cpu_ms_per_request("app") for run in mine),
        db_cpu_ms=statistics.median(run.cpu_ms_per_request("db") for run in mine),
    )


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


@dataclass(frozen=True, slots=True)
class Outcome:
    text: str
    targets_met: bool
    checks_passed: bool
    noisy: bool

    @property
    def exit_code(self) -> int:
        if not self.checks_passed:
            return 2
        if self.noisy:
            return 3
        return 0 if self.targets_met else 1


def render(report: Report) -> Outcome:
    """The markdown report and its verdicts."""
    args = report.config
    award, reference = summarise(report.runs, AWARD), summarise(report.runs, REFERENCE)
    ratio = award.rps / reference.rps if reference.rps else 0.0
    ratio_ok = ratio >= RATIO_TARGET
    p99_ok = award.p99_ms <= P99_TARGET_MS
    checks_ok = all(passed for _, passed, _ in report.checks)
    kept = [run for run in report.runs if run.kept]
    noisy = [run for run in kept if run.foreign_cpu_percent > args.noisy_cpu_percent]
    discarded = len(report.runs) - len(kept)
    lines = [
        "# Award endpoint throughput",
        "",
        f"**Measurement: {'NOISY, inconclusive' if noisy else 'clean'}.** "
        f"{len(noisy)} of {len(kept)} kept runs had other processes using more than "
        f"{args.noisy_cpu_percent:.0f}% of the CPU; {discarded} noisy runs were discarded and "
        "measured again.",
        "",
        f"{report.started_at:%Y-%m-%d %H:%M} UTC, {args.mode} mode: {args.rounds} alternating "
        f"rounds of {args.duration} s per endpoint after {args.warmup} s of warm-up each; "
        f"wrk {args.connections} connections, {args.wrk_threads} threads; gunicorn "
        f"{args.workers} {args.worker_class} workers"
        + (f" x {args.gunicorn_threads} threads" if args.gunicorn_threads > 1 else "")
        + f"; {args.members} members per endpoint, 1 point per request, a unique "
        "Idempotency-Key per request, partner API key auth. Figures are medians over rounds; "
        "req/s counts 2xx responses.",
        "",
        "| endpoint | req/s | p50 ms | p99 ms | gunicorn CPU ms/req | PostgreSQL CPU ms/req "
        "| non-2xx | socket errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target, summary in ((AWARD, award), (REFERENCE, reference)):
        lines.append(
            f"| {target.label} | {summary.rps:.0f} | {summary.p50_ms:.1f} | "
            f"{summary.p99_ms:.1f} | {summary.app_cpu_ms:.2f} | {summary.db_cpu_ms:.2f} | "
            f"{summary.failed} | {summary.socket_errors} |"
        )
    award_cpu, reference_cpu = (
        award.app_cpu_ms + award.db_cpu_ms,
        reference.app_cpu_ms + reference.db_cpu_ms,
    )
    suffix = " (noisy: inconclusive)" if noisy else ""
    lines += [
        "",
        "| target (SPEC §5) | measured | required | result |",
        "|---|---:|---:|---|",
        f"| throughput ratio award / reference | {ratio:.2f} | >= {RATIO_TARGET:.2f} | "
        f"{verdict(ratio_ok)}{suffix} |",
        f"| award endpoint p99 at {args.connections} connections | {award.p99_ms:.1f} ms | "
        f"<= {P99_TARGET_MS:.0f} ms | {verdict(p99_ok)}{suffix} |",
        "",
        "For information, less sensitive to neighbours: gunicorn + PostgreSQL CPU per request is "
        f"{award_cpu:.2f} ms for the award endpoint and {reference_cpu:.2f} ms for the "
        f"reference, a cost ratio (reference / award) of "
        f"{reference_cpu / award_cpu if award_cpu else 0.0:.2f}.",
        "",
        "## Runs",
        "",
        "| round | endpoint | req/s | p50 ms | p90 ms | p99 ms | max ms | 2xx | non-2xx | "
        "points written | gunicorn CPU ms/req | PostgreSQL CPU ms/req | wrk CPU ms/req | "
        "other processes' CPU | kept |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {run.round_number} | {run.target.key} | {run.ok_per_second:.0f} | {run.p50_ms:.1f} | "
        f"{run.p90_ms:.1f} | {run.p99_ms:.1f} | {run.max_ms:.1f} | {run.ok} | {run.failed} | "
        f"{run.points_written} | {run.cpu_ms_per_request('app'):.2f} | "
        f"{run.cpu_ms_per_request('db'):.2f} | {run.cpu_ms_per_request('load'):.2f} | "
        f"{run.foreign_cpu_percent:.0f}% | "
        f"{'yes' if run.kept else 'no (noisy)'} |"
        for run in report.runs
    ]
    lines += ["", "## Checks", "", "| check | result | detail |", "|---|---|---|"]
    lines += [
        f"| {name} | {verdict(passed)} | {detail} |" for name, passed, detail in report.checks
    ]
    lines += ["", "## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in report.machine.items()]
    lines += [""]
    return Outcome("\n".join(lines), ratio_ok and p99_ok, checks_ok, bool(noisy))


def integrity_checks(report: Report, connections: int) -> None:
    for target in (AWARD, REFERENCE):
        runs = [run for run in report.runs if run.target is target]
        failed = sum(run.failed + run.socket_errors for run in runs)
        report.checks.append(
            (
                f"{target.key}: every request answered 2xx",
                failed == 0,
                f"{sum(run.failed for run in runs)} non-2xx, "
                f"{sum(run.socket_errors for run in runs)} socket errors",
            )
        )
        # A 2xx response is one committed point; a request in flight when wrk stopped may have
        # committed without being counted, so the ledger may exceed the count by the connections.
        extra = [run.points_written - run.ok for run in runs]
        report.checks.append(
            (
                f"{target.key}: ledger points = 2xx responses (+ in flight at stop)",
                all(0 <= excess <= connections for excess in extra),
                f"points - 2xx per run: {extra} (allowed 0..{connections})",
            )
        )
    report.checks.append(
        (
            "ledger audit (rewards.selectors.ledger_violations)",
            not report.violations,
            f"{len(report.violations)} violations; {report.expected_violation_count} I3 rows "
            "set aside for the reference's members (it writes no lots, by design)"
            + "".join(
                f"; {violation['invariant']}: {violation['row']}"
                for violation in report.violations[:3]
            ),
        )
    )


# --- Main --------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, api_key: str, workdir: Path, report: Report) -> None:
    from django.conf import settings

    from bench.db import analyze_after_warm_up

    ids_files = {}
    for target in (AWARD, REFERENCE):
        ids_files[target.key] = workdir / f"{target.key}-ids.txt"
        ids_files[target.key].write_text("\n".join(pool_member_ids(target.pool)) + "\n")

    with Server(args, workdir / "gunicorn.log") as server:
        print(f"gunicorn on {server.base_url}: {' '.join(server.command[1:])}", flush=True)
        assert server.process is not None  # noqa: S101
        meter = CpuMeter(server.process.pid, settings.DATABASES["default"]["NAME"])
        for target in (AWARD, REFERENCE):
            warm = run_wrk(
                server=server,
                target=target,
                ids_file=ids_files[target.key],
                api_key=api_key,
                args=args,
                duration_s=args.warmup,
                round_number=0,
            )
            print(f"warm-up {target.key}: {warm.ok_per_second:.0f} req/s", flush=True)
            if warm.ok == 0:
                raise SystemExit(f"No 2xx during warm-up of {target.key}:\n{server.log_tail()}")
        analyze_after_warm_up()
        settle(server)
        for round_number in range(1, args.rounds + 1):
            # ABBA order, so a drift over time (table growth, autovacuum) hits both alike.
            order = (AWARD, REFERENCE) if round_number % 2 else (REFERENCE, AWARD)
            for target in order:
                for attempt in range(args.retries + 1):
                    meter.wait_quiet(
                        threshold_percent=args.noisy_cpu_percent, timeout_s=args.quiet_wait
                    )
                    before = pool_points(target.pool)
                    cpu_before = meter.snapshot()
                    run = run_wrk(
                        server=server,
                        target=target,
                        ids_file=ids_files[target.key],
                        api_key=api_key,
                        args=args,
                        duration_s=args.duration,
                        round_number=round_number,
                    )
                    usage = meter.usage(cpu_before, meter.snapshot(), run.duration_s)
                    run.foreign_cpu_percent = usage.foreign_percent
                    run.cpu_seconds = usage.seconds_by_group
                    settle(server)
                    run.points_written = pool_points(target.pool) - before
                    report.runs.append(run)
                    noisy = run.foreign_cpu_percent > args.noisy_cpu_percent
                    # A noisy run is kept only when it was the last attempt.
                    run.kept = not noisy or attempt == args.retries
                    print(
                        f"round {round_number} {target.key}: {run.ok_per_second:.0f} req/s, "
                        f"p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms, "
                        f"non-2xx {run.failed}, socket errors {run.socket_errors}, "
                        f"other processes' CPU {run.foreign_cpu_percent:.0f}%"
                        + ("" if run.kept else " (noisy: measured again)"),
                        flush=True,
                    )
                    if run.kept:
                        break


def run(args: argparse.Namespace) -> tuple[Report, Outcome]:
    """Prepare, measure, check and render; Django must be set up."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk).")
    report = Report(started_at=datetime.now(UTC), config=args, machine=machine_info())
    print(f"Preparing the database ({args.members} members per endpoint)...", flush=True)
    api_key = prepare_database(args.members)
    with tempfile.TemporaryDirectory(prefix="loyalty-bench-") as directory:
        measure(args, api_key, Path(directory), report)

    report.violations, report.expected_violation_count = ledger_audit(
        set(pool_member_ids(REFERENCE_POOL))
    )
    integrity_checks(report, args.connections)
    outcome = render(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(outcome.text)
    return report, outcome


def suite(*, quick: bool) -> list["Row"]:
    """The award rows of the combined table (``bench/run.py``); the detail goes to award.md.

    Quick mode is shortened to fit the combined quick run: 2 rounds of 8 s, a short wait for a
    quiet machine and no re-measuring of noisy runs (the table says when a run was noisy); full
    mode waits at most 15 s for a quiet machine and re-measures a noisy run once.
    """
    from bench.rows import Row, per_s, verdict

    argv = ["--quick", "--rounds", "2", "--duration", "8", "--warmup", "4", "--quiet-wait", "2"]
    # Full mode keeps the standalone run's rounds and warm-ups but bounds the waiting for a quiet
    # machine (at most one re-measurement), so that a busy machine cannot stretch it for long.
    args = parse_args(
        [*argv, "--retries", "0"] if quick else ["--retries", "1", "--quiet-wait", "15"]
    )
    report, outcome = run(args)
    award, reference = summarise(report.runs, AWARD), summarise(report.runs, REFERENCE)
    ratio = award.rps / reference.rps if reference.rps else 0.0
    kept = [run for run in report.runs if run.kept]
    foreign = max((run.foreign_cpu_percent for run in kept), default=0.0)
    note = (
        f"other processes used up to {foreign:.0f}% of the CPU during a run"
        + (" (noisy)" if outcome.noisy else "")
        + f"; {args.rounds} rounds x {args.duration} s, medians; detail in results/award.md"
    )
    checks = "; ".join(f"{name}: {detail}" for name, ok, detail in report.checks if not ok)
    # A busy neighbour squeezes both endpoints toward the same CPU share: say so on the verdicts.
    noisy = " (noisy)" if outcome.noisy else ""
    rows = [
        Row(
            "award endpoint req/s (8 connections)",
            per_s(award.rps),
            f"minimal DRF view {per_s(reference.rps)}",
            f"{ratio:.2f}",
            f">= {RATIO_TARGET:.2f}",
            verdict(ratio >= RATIO_TARGET) + noisy,
            note,
        ),
        Row(
            "award endpoint p50 latency (8 connections)",
            f"{award.p50_ms:.1f} ms",
            f"{reference.p50_ms:.1f} ms",
            f"{award.p50_ms / reference.p50_ms:.2f}" if reference.p50_ms else "-",
        ),
        Row(
            "award endpoint p99 latency (8 connections)",
            f"{award.p99_ms:.1f} ms",
            f"{reference.p99_ms:.1f} ms",
            f"{award.p99_ms / reference.p99_ms:.2f}" if reference.p99_ms else "-",
            f"<= {P99_TARGET_MS:.0f} ms",
            verdict(award.p99_ms <= P99_TARGET_MS) + noisy,
        ),
    ]
    rows.append(
        Row(
            "award endpoint integrity under load",
            f"{sum(ok for _, ok, _ in report.checks)} of {len(report.checks)} checks pass",
            target="all: 2xx only, ledger = 2xx count, ledger audit clean",
            status=verdict(outcome.checks_passed),
            note=checks,
        )
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/loyalty_bench")
    import django

    django.setup()
    _, outcome = run(args)
    print()
    print(outcome.text)
    print(f"Written to {args.output}")
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
