"""Assertion helpers for API tests."""

from typing import Any

PROBLEM = "application/problem+json"


def assert_problem(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status (and code, when given)."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith(PROBLEM), response["Content-Type"]
    body = response.json()
    assert body["status"] == status
    assert body["type"].endswith(body["code"])
    assert body["title"]
    if code is not None:
        assert body["code"] == code, body
    return body


def vacuum_test_database() -> None:
    """VACUUM ANALYZE the test database from a connection of its own (PostgreSQL; else nothing).

    For tests that scan whole tables on every step (the ledger audit in a state machine): the
    machine's PostgreSQL runs without autovacuum, so the rows earlier tests rolled back (10,000
    members at a time) stay in the tables and every scan would read them again. VACUUM cannot run
    in the test's transaction; rows of aborted transactions are removable whatever is open.
    """
    import psycopg
    from django.db import connection

    from tests.workers import database_url

    if connection.vendor != "postgresql":
        return
    with psycopg.connect(database_url(), autocommit=True) as vacuum:
        vacuum.execute("VACUUM ANALYZE")
