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
