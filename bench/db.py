"""Database steps the benchmarks share."""

from django.db import connection


def analyze_after_warm_up() -> None:
    """ANALYZE what the warm-up wrote, as autovacuum's auto-analyze would in production.

    The benchmark machine's PostgreSQL runs with autovacuum off, and each suite truncates the
    ledger and analyzes it empty. Without this step the statistics keep saying the entries table
    is empty, and every server connection keeps the plan it made for an empty table: the
    foreign-key check of each new points lot against its entry stayed a sequential scan, growing
    with the table for the whole run (about a third of PostgreSQL's CPU in the award endpoint's
    last round, measured with perf on 2026-11-23). ANALYZE invalidates those cached plans. It
    runs before any measured request, for the endpoint and its reference alike.
    """
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
