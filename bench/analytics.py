"""Analytics endpoints at the run's largest population: latency of sequential calls, cold and warm.

Part of the combined benchmark (``python -m bench.run``), on the population the reassessment
suite generated. For each of ``analytics/tier-distribution/``, ``funnel/``, ``retention/`` and
``health/`` under ``/api/v1/``: when the URL does not resolve (the app is not there yet) the row
says "not available" and counts as neither pass nor fail. Otherwise gunicorn (2 sync workers)
serves it with a Redis cache (``BENCH_REDIS_URL``, default ``redis://127.0.0.1:6379/7``, a
database the benchmark owns: it is flushed) and one client calls it sequentially with a staff
JWT (superuser, so ``analytics.view_analytics`` holds):

- cold: the cache flushed before each call;
- warm: calls after a first one, the cache left alone.

p50 and p99 are over those calls (few calls: p99 is close to the slowest); each series stops
early after 90 s. The SPEC sets no
latency target for analytics, so these rows are for information.
"""

import os
import statistics
import tempfile
import time
import types
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

from bench.rows import ERROR, INFO, NOT_AVAILABLE, Row

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/7"
# Seconds of cold calls, and of warm calls, per endpoint before stopping early (at least one cold
# call and three warm ones run), so an endpoint without a cache cannot stretch the run for long.
BUDGET_S = 90


def _paths(today: str, from_day: str) -> list[tuple[str, str]]:
    return [
        ("tier-distribution", "/api/v1/analytics/tier-distribution/"),
        ("funnel", f"/api/v1/analytics/funnel/?joined_from={from_day}&joined_to={today}"),
        ("retention", "/api/v1/analytics/retention/?weeks=8"),
        ("health", "/api/v1/analytics/health/"),
    ]


def _resolves(path: str) -> bool:
    from django.urls import Resolver404, resolve

    try:
        resolve(path.split("?", 1)[0])
    except Resolver404:
        return False
    except (ImportError, AttributeError):  # the URL configuration itself is broken
        return False
    return True


def _call(url: str, token: str) -> tuple[float, int]:
    request = urllib.request.Request(  # noqa: S310 - loopback only
        url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=300) as response:  # noqa: S310
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        error.read()
        status = error.code
    return (time.perf_counter() - started) * 1000, status


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def suite(*, quick: bool, population: int) -> list[Row]:
    from django.utils import timezone

    from bench.award_throughput import Server
    from bench.reads import operator_token

    today = timezone.localdate()
    paths = _paths(today.isoformat(), (today - timedelta(days=90)).isoformat())
    if not any(_resolves(path) for _, path in paths):
        return [
            Row(
                f"analytics `{key}/`",
                "-",
                status=NOT_AVAILABLE,
                note="the URL does not resolve in this checkout (analytics app not installed)",
            )
            for key, _ in paths
        ]
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    try:
        import redis

        flush = redis.Redis.from_url(redis_url).flushdb
        flush()
    except Exception as error:
        return [Row("analytics endpoints", "-", status=ERROR, note=f"Redis {redis_url}: {error}")]
    cold_calls, warm_calls = (3, 10) if quick else (5, 30)
    token = operator_token()
    rows = []
    server_args = types.SimpleNamespace(workers=2, worker_class="sync", gunicorn_threads=1)
    with (
        tempfile.TemporaryDirectory(prefix="loyalty-bench-analytics-") as directory,
        Server(server_args, Path(directory) / "gunicorn.log", {"REDIS_URL": redis_url}) as server,
    ):
        for key, path in paths:
            label = f"analytics `{key}/`"
            if not _resolves(path):
                rows.append(Row(label, "-", status=NOT_AVAILABLE, note="URL does not resolve"))
                continue
            url = server.base_url + path
            cold, statuses = [], set()
            deadline = time.monotonic() + BUDGET_S
            for _ in range(cold_calls):
                if cold and time.monotonic() > deadline:
                    break
                flush()
                elapsed, status = _call(url, token)
                cold.append(elapsed)
                statuses.add(status)
            _call(url, token)  # fills the cache if the first calls did not
            warm = []
            deadline = time.monotonic() + BUDGET_S
            for _ in range(warm_calls):
                if len(warm) >= 3 and time.monotonic() > deadline:
                    break
                elapsed, status = _call(url, token)
                warm.append(elapsed)
                statuses.add(status)
            if statuses != {200}:
                rows.append(
                    Row(label, "-", status=ERROR, note=f"answered {sorted(statuses)}: {path}")
                )
                continue
            rows.append(
                Row(
                    f"{label} latency, cold cache",
                    f"p50 {statistics.median(cold):.1f} ms, p99 {_percentile(cold, 0.99):.1f} ms",
                    status=INFO,
                    note=f"{len(cold)} sequential calls, cache flushed before each, "
                    f"{population:,} members",
                )
            )
            rows.append(
                Row(
                    f"{label} latency, warm cache",
                    f"p50 {statistics.median(warm):.1f} ms, p99 {_percentile(warm, 0.99):.1f} ms",
                    status=INFO,
                    note=f"{len(warm)} sequential calls",
                )
            )
    flush()
    return rows
