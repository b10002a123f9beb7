"""Read endpoints at the run's largest population: p99 at 16 connections and queries per request.

Part of the combined benchmark (``python -m bench.run``), which runs it on the population the
reassessment suite generated (members ``load-...``), after the reassessment, so members hold
real tiers. gunicorn serves with the production cache (Redis, ``BENCH_REDIS_URL``, flushed
first). For each endpoint wrk drives 16 connections (2 threads) against it on 127.0.0.1, each
request picking a random line of a request file (``bench/wrk_reads.lua``):

- the reference: a minimal DRF view reading the signed-in member's row with one query, behind
  the same authentication, permission and throttle classes (``bench/reference_views.py``): the
  floor any authenticated read pays on this machine;
- ``GET /api/v1/me/``: a random member of a sample, with that member's own JWT;
- ``GET /api/v1/members/{id}/tier/``: a random member of the sample, with a staff JWT;
- ``GET /api/v1/members/``: the first page (default page size), with a staff JWT;
- ``GET /api/v1/members/?lifecycle_stage=active``: the first page of a filter, for context (no
  target): a filtered page is never cached whole, so this is the read that picks the page's
  members in the database and takes each entry from the member's cached document.

``me/`` and a member's tier are documents cached whole until the member (or the catalog)
changes (``core/read_cache.py``). Before wrk, each sampled member's document is read once, one
request at a time: those first reads build the documents and are reported as their own row
(p50/p99 of a build, no concurrency); wrk then measures repeat reads of current documents,
which is what a member browsing the app or a front end polling a member does. An unfiltered
page of the list is cached whole (only creating or deleting a member reorders it) and checked
against the token of every member on it.

Queries per request are counted in-process with Django's ``CaptureQueriesContext`` (one call
each, after a warm-up call, with the member's document, or every entry of the page, rebuilt so
the count is a build's): for two different members, and for two page sizes of each list. The target is a constant count:
both calls must issue the same number of queries.
"""

import json
import os
import subprocess
import tempfile
import time
import types
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.rows import ERROR, INFO, Row, verdict

LUA_SCRIPT = Path(__file__).resolve().parent / "wrk_reads.lua"
P99_TARGET_MS = 30.0
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/7"
CONNECTIONS = 16
SAMPLE = 500
OPERATOR = "bench-operator"


@dataclass(frozen=True, slots=True)
class Endpoint:
    key: str
    label: str
    lines: list[str]  # "PATH\tAUTHORIZATION"
    cached: bool = False  # a document of core.read_cache: first reads build it
    member_ids: tuple[str, ...] = ()  # the members of the lines, in order (cached documents)
    repeat: str = ""  # what wrk's repeat reads are served from
    informational: bool = False  # figures for context, no target


def sample_member_ids(count: int) -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        # Not the whole table sorted: a random sample of pages, then of rows.
        cursor.execute(
            "SELECT id FROM members_member TABLESAMPLE SYSTEM (5) "
            "WHERE erased_at IS NULL ORDER BY random() LIMIT %s",
            [count],
        )
        ids = [str(row[0]) for row in cursor.fetchall()]
        if len(ids) < count:  # small populations: the sample may miss
            cursor.execute(
                "SELECT id FROM members_member WHERE erased_at IS NULL ORDER BY random() LIMIT %s",
                [count],
            )
            ids = [str(row[0]) for row in cursor.fetchall()]
    return ids


def operator_token() -> str:
    from django.contrib.auth import get_user_model

    from core.api.tokens import operator_token_pair

    user_model = get_user_model()
    user = user_model.objects.filter(username=OPERATOR).first()
    if user is None:
        user = user_model.objects.create_superuser(OPERATOR, password=None)
    return operator_token_pair(user)["access"]


def endpoints(member_ids: list[str], staff: str) -> list[Endpoint]:
    from core.api.tokens import member_token_pair

    member_tokens = [
        f"Bearer {member_token_pair(member_id)['access']}"  # type: ignore[arg-type]
        for member_id in member_ids
    ]
    return [
        Endpoint(
            "reference",
            "reference: a minimal DRF view reading the member's row",
            [f"/bench/reference-me/\t{token}" for token in member_tokens],
        ),
        Endpoint(
            "me",
            "`GET me/`",
            [f"/api/v1/me/\t{token}" for token in member_tokens],
            cached=True,
            member_ids=tuple(member_ids),
        ),
        Endpoint(
            "tier",
            "`GET members/{id}/tier/`",
            [f"/api/v1/members/{member_id}/tier/\tBearer {staff}" for member_id in member_ids],
            cached=True,
            member_ids=tuple(member_ids),
        ),
        Endpoint(
            "list",
            "`GET members/` (first page)",
            [f"/api/v1/members/\tBearer {staff}"],
            repeat="repeat reads of a current page, cached whole",
        ),
        Endpoint(
            "list-filtered",
            "`GET members/?lifecycle_stage=active` (first page)",
            [f"/api/v1/members/?lifecycle_stage=active\tBearer {staff}"],
            repeat="members picked in the database, each entry a current cached document",
            informational=True,
        ),
    ]


def first_reads(base_url: str, lines: list[str]) -> list[float]:
    """Each line requested once, one at a time: milliseconds per request (raises on non-200)."""
    elapsed = []
    for line in lines:
        path, authorization = line.split("\t")
        request = urllib.request.Request(  # noqa: S310 - loopback only
            base_url + path, headers={"Authorization": authorization, "Accept": "application/json"}
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{path} answered {response.status}")
        elapsed.append((time.perf_counter() - started) * 1000)
    return elapsed


def query_counts(endpoint: Endpoint) -> tuple[list[int], str]:
    """Queries of one call each for two requests (two members, or two page sizes), after a
    warm-up call. Returns the counts and a description; raises on a non-200 answer."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, override_settings

    from core.read_cache import all_reads_changed, member_reads_changed

    if endpoint.key.startswith("list"):
        path, authorization = endpoint.lines[0].split("\t")
        joiner = "&" if "?" in path else "?"
        calls = [(f"{path}{joiner}page_size={size}", authorization) for size in (10, 50)]
        what = "page sizes 10 and 50"
    else:
        calls = [tuple(line.split("\t")) for line in endpoint.lines[:2]]
        what = "two members"
    client = Client(HTTP_HOST="127.0.0.1")
    counts = []
    members = [endpoint.member_ids[0], *endpoint.member_ids[:2]] if endpoint.member_ids else []
    # As served: the documents cached (here in this process's memory) and the shared rules in
    # force with them; each counted call rebuilds its member's document.
    with override_settings(LOYALTY_READ_CACHE_SECONDS=30):
        for index, (path, authorization) in enumerate([calls[0], *calls]):
            # A document's build is what is counted, not the cached copy (every entry of a page).
            if members:
                member_reads_changed([members[index]])
            else:
                all_reads_changed()
            with CaptureQueriesContext(connection) as captured:
                response = client.get(path, HTTP_AUTHORIZATION=authorization)
            if response.status_code != 200:
                raise RuntimeError(
                    f"{path} answered {response.status_code}: {response.content[:300]!r}"
                )
            if index:  # the first call warms caches up and is not counted
                counts.append(len(captured.captured_queries))
    return counts, what


def run_wrk(base_url: str, requests_file: Path, duration_s: int) -> dict[str, float]:
    command = [
        "wrk",
        "-t2",
        f"-c{CONNECTIONS}",
        f"-d{duration_s}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        base_url,
        "--",
        str(requests_file),
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("BENCH_JSON ")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr[-500:]}")
    return json.loads(lines[-1].removeprefix("BENCH_JSON "))


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def suite(*, quick: bool, population: int) -> list[Row]:
    from django.conf import settings

    from bench.award_throughput import CpuMeter, Server

    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    try:
        import redis

        redis.Redis.from_url(redis_url).flushdb()
    except Exception as error:
        return [Row("read endpoints", "-", status=ERROR, note=f"Redis {redis_url}: {error}")]
    duration = 6 if quick else 20
    member_ids = sample_member_ids(SAMPLE)
    staff = operator_token()
    rows = []
    reference_p99: float | None = None
    server_args = types.SimpleNamespace(workers=2, worker_class="sync", gunicorn_threads=1)
    with (
        tempfile.TemporaryDirectory(prefix="loyalty-bench-reads-") as directory,
        Server(server_args, Path(directory) / "gunicorn.log", {"REDIS_URL": redis_url}) as server,
    ):
        assert server.process is not None  # noqa: S101
        meter = CpuMeter(server.process.pid, settings.DATABASES["default"]["NAME"])
        for endpoint in endpoints(member_ids, staff):
            built: list[float] = []
            try:
                counts, what = ([], "") if endpoint.key == "reference" else query_counts(endpoint)
                requests_file = Path(directory) / f"{endpoint.key}.txt"
                requests_file.write_text("\n".join(endpoint.lines) + "\n")
                if endpoint.cached:
                    built = first_reads(server.base_url, endpoint.lines)
                run_wrk(server.base_url, requests_file, 2)  # warm-up
                before = meter.snapshot()
                data = run_wrk(server.base_url, requests_file, duration)
                foreign = meter.usage(before, meter.snapshot(), duration).foreign_percent
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
                rows.append(Row(f"read {endpoint.label}", "crashed", status=ERROR, note=str(error)))
                continue
            p99 = data["p99_us"] / 1000
            failed = data["responses"] - data["ok"]
            errors = sum(
                data[key] for key in ("connect_errors", "read_errors", "write_errors", "timeouts")
            )
            rps = data["ok"] / (data["duration_us"] / 1e6)
            note = (
                f"p50 {data['p50_us'] / 1000:.1f} ms, {rps:,.0f} req/s, {failed} non-2xx, "
                f"{errors} socket errors, {population:,} members, {duration} s; other "
                f"processes used {foreign:.0f}% of the CPU"
            )
            if endpoint.key == "reference":
                reference_p99 = p99 if failed == 0 and errors == 0 else None
                rows.append(
                    Row(
                        f"read {endpoint.label}, p99 ({CONNECTIONS} connections)",
                        f"{p99:.1f} ms",
                        note=note + "; the floor of every read row below",
                    )
                )
                continue
            if endpoint.cached:
                note += "; repeat reads of current documents"
            elif endpoint.repeat:
                note += f"; {endpoint.repeat}"
            rows.append(
                Row(
                    f"read {endpoint.label} p99 ({CONNECTIONS} connections)",
                    f"{p99:.1f} ms",
                    reference=f"{reference_p99:.1f} ms" if reference_p99 else "-",
                    ratio=f"{p99 / reference_p99:.2f}" if reference_p99 else "-",
                    target="-" if endpoint.informational else f"<= {P99_TARGET_MS:.0f} ms",
                    status=INFO
                    if endpoint.informational
                    else verdict(p99 <= P99_TARGET_MS and failed == 0 and errors == 0),
                    note=note,
                )
            )
            if built:
                rows.append(
                    Row(
                        f"read {endpoint.label} first read (document built)",
                        f"p50 {_percentile(built, 0.5):.1f} ms, p99 {_percentile(built, 0.99):.1f} ms",
                        note=f"{len(built)} members, one request at a time, before wrk",
                    )
                )
            rows.append(
                Row(
                    f"read {endpoint.label} queries per request",
                    " / ".join(str(count) for count in counts),
                    target="constant",
                    status=verdict(len(set(counts)) == 1),
                    note=what
                    + (" (the document's build)" if endpoint.cached else " (the page's build)"),
                )
            )
    return rows


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    from members.models import Member

    for row in suite(quick=True, population=Member.objects.count()):
        print(row)
