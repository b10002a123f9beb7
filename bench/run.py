"""Every benchmark in one run, one table: ``make bench-quick`` / ``make bench`` (bench/README.md).

    DJANGO_SETTINGS_MODULE=bench.settings \
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/loyalty_bench \
    .venv/bin/python -m bench.run [--quick]

Suites, in order, on one PostgreSQL database whose name must contain "bench" (it is emptied):
award endpoint vs a minimal DRF view (wrk, 8 connections), batch awards and event ingestion vs
plain multi-row INSERTs, population reassessment vs hand-written SQL at each size (quick:
50,000 members; full: 100,000 and 1,000,000), then, on the largest population, the read
endpoints (wrk, 16 connections; queries per request) and the analytics endpoints. Each suite
returns rows; the table goes to stdout and ``bench/results/latest.md`` with the date, the git
commit and the machine, and the reassessment plot to ``bench/results/reassessment.png``.

Exit status: 0 every target met, 1 a target missed, 2 a suite crashed (its row says ERROR).
"""

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench.rows import ERROR, FAIL, Row

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
QUICK_SIZES = [50_000]
FULL_SIZES = [100_000, 1_000_000]
SUITES = ("award", "batches", "events", "reassessment", "reads", "analytics")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, 50,000 members")
    parser.add_argument("--sizes", help="reassessment population sizes, e.g. 100000,1000000")
    parser.add_argument(
        "--only", help=f"comma-separated suites to run, of {', '.join(SUITES)} (default: all)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.md")
    parser.add_argument(
        "--plot",
        type=Path,
        help="the reassessment plot (default: results/reassessment.png, quick: "
        "results/reassessment-quick.png)",
    )
    args = parser.parse_args(argv)
    if args.sizes:
        args.sizes = [int(size) for size in args.sizes.split(",")]
    else:
        args.sizes = QUICK_SIZES if args.quick else FULL_SIZES
    args.suites = args.only.split(",") if args.only else list(SUITES)
    unknown = set(args.suites) - set(SUITES)
    if unknown:
        parser.error(f"unknown suites: {', '.join(sorted(unknown))}")
    args.mode = "quick" if args.quick else "full"
    if args.plot is None:
        args.plot = RESULTS / ("reassessment-quick.png" if args.quick else "reassessment.png")
    return args


def git_commit() -> str:
    def git(*words: str) -> str:
        completed = subprocess.run(
            ["git", *words], capture_output=True, text=True, cwd=BENCH_DIR.parent, check=False
        )
        return completed.stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    # Read before the suites run, and blind to bench/results/: the runs write their own results
    # there, which are no change to the code measured.
    changed = git("status", "--porcelain", "--", ".", ":(exclude)bench/results")
    return commit + (" (with uncommitted changes)" if changed else "")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def plot(measured: list[dict[str, object]], path: Path, mode: str) -> None:
    """Reassessment seconds (job vs reference SQL) against member count, headless."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    members = [int(row["members"]) for row in measured]  # type: ignore[call-overload]
    figure, axes = pyplot.subplots(figsize=(7, 4.5), dpi=100)
    axes.plot(members, [row["job_s"] for row in measured], "o-", label="population job (2 workers)")
    axes.plot(members, [row["reference_s"] for row in measured], "s--", label="hand-written SQL")
    axes.plot(
        members,
        [1.5 * float(row["reference_s"]) for row in measured],  # type: ignore[arg-type]
        ":",
        color="grey",
        label="target: 1.5 x hand-written SQL",
    )
    for row in measured:
        axes.annotate(
            f"ratio {float(row['ratio']):.2f}",  # type: ignore[arg-type]
            (int(row["members"]), float(row["job_s"])),  # type: ignore[call-overload, arg-type]
            textcoords="offset points",
            xytext=(5, 5),
        )
    if len(members) > 1:
        axes.set_xscale("log")
        axes.set_yscale("log")
    axes.set_xlabel("members")
    axes.set_ylabel("seconds")
    axes.set_title(f"Population tier reassessment ({mode} run, {datetime.now(UTC):%Y-%m-%d})")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    pyplot.close(figure)


def render(
    *,
    args: argparse.Namespace,
    rows: list[Row],
    machine: dict[str, str],
    started: datetime,
    seconds: float,
    load_at_start: str,
    commit: str,
) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        f"# Benchmarks ({args.mode} run)",
        "",
        f"{started:%Y-%m-%d %H:%M} UTC, {seconds / 60:.1f} minutes, git commit "
        f"{commit}. Every figure is against a reference measured in the same run on the "
        "same machine (bench/README.md says what each reference is). The machine may be shared: "
        f"load average {load_at_start} at the start and {load_average()} at the end.",
        "",
        "| benchmark | figure | reference | ratio | target | status | notes |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    lines += [
        f"| {cell(row.benchmark)} | {cell(row.figure)} | {cell(row.reference)} | "
        f"{cell(row.ratio)} | {cell(row.target)} | **{row.status}** | {cell(row.note)} |"
        for row in rows
    ]
    failed = sum(row.status.startswith(FAIL) for row in rows)
    crashed = sum(row.status == ERROR for row in rows)
    lines += [
        "",
        f"Targets missed: {failed}; errors: {crashed}; exit status {exit_code(rows)}. A verdict "
        "marked (noisy) was measured while other processes kept the CPU busy.",
        "",
        "## Machine",
        "",
        *(f"- {key}: {value}" for key, value in machine.items()),
        "",
    ]
    return "\n".join(lines)


def exit_code(rows: list[Row]) -> int:
    if any(row.status == ERROR for row in rows):
        return 2
    return 1 if any(row.status.startswith(FAIL) for row in rows) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/loyalty_bench")
    import django

    django.setup()
    from bench import analytics, award_batches, award_throughput, event_ingestion, reads
    from bench import reassessment as reassessment_bench

    started, clock, load_at_start = datetime.now(UTC), time.monotonic(), load_average()
    commit = git_commit()
    machine = award_throughput.machine_info()
    rows: list[Row] = []
    population: dict[str, int] = {}

    def population_size() -> int:
        from members.models import Member

        return population.get("members") or Member.objects.count()

    def run_reassessment() -> list[Row]:
        suite_rows, measured = reassessment_bench.suite(sizes=args.sizes)
        population["members"] = int(measured[-1]["members"])  # type: ignore[call-overload]
        (RESULTS / f"reassessment-{args.mode}.json").write_text(
            json.dumps(measured, indent=2, default=str) + "\n"
        )
        plot(measured, args.plot, args.mode)
        return suite_rows

    suites: dict[str, Callable[[], list[Row]]] = {
        "award": lambda: award_throughput.suite(quick=args.quick),
        "batches": lambda: award_batches.suite(quick=args.quick),
        "events": lambda: event_ingestion.suite(quick=args.quick),
        "reassessment": run_reassessment,
        "reads": lambda: reads.suite(quick=args.quick, population=population_size()),
        "analytics": lambda: analytics.suite(quick=args.quick, population=population_size()),
    }
    for name in args.suites:
        print(f"\n=== {name} ({datetime.now(UTC):%H:%M:%S} UTC) ===", flush=True)
        try:
            suite_rows = suites[name]()
        except (Exception, SystemExit) as error:  # one crash must not hide the rest
            traceback.print_exc()
            suite_rows = [Row(name, "crashed", status=ERROR, note=str(error)[-300:])]
        for row in suite_rows:
            print(f"  {row.status:>13}  {row.benchmark}: {row.figure}  {row.note}", flush=True)
        rows += suite_rows
        # Written after every suite, so an interrupted run still leaves what it measured.
        done = name == args.suites[-1]
        text = render(
            args=args,
            rows=rows,
            machine=machine,
            started=started,
            seconds=time.monotonic() - clock,
            load_at_start=load_at_start,
            commit=commit,
        ) + ("" if done else f"\n**Partial: the run was still going after the {name} suite.**\n")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    print()
    print(text)
    print(
        f"Written to {args.output}" + (f" and {args.plot}" if "reassessment" in args.suites else "")
    )
    return exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
