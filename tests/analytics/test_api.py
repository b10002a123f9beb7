"""The analytics endpoints: access per role, query validation, payloads, constant query counts."""

from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from core.models import OutboxEvent, Scope
from members.models import Member
from tests.analytics.conftest import NOW, local
from tests.helpers import assert_problem

Person = Callable[..., Member]
ActiveOn = Callable[..., None]

ENDPOINTS = [
    "/api/v1/analytics/tier-distribution/",
    "/api/v1/analytics/funnel/",
    "/api/v1/analytics/retention/",
    "/api/v1/analytics/health/",
    "/api/v1/analytics/tier-movement/",
    "/api/v1/analytics/points-flow/",
]


@pytest.fixture(autouse=True)
def _frozen() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def analyst(make_operator_client: Callable[..., APIClient]) -> APIClient:
    return make_operator_client("analytics.view_analytics")


# --- Access -------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ENDPOINTS)
@pytest.mark.parametrize(
    ("role", "status"),
    [
        pytest.param("anonymous", 401, id="anonymous"),
        pytest.param("member", 403, id="member"),
        pytest.param("operator without the permission", 403, id="operator-without-perm"),
        pytest.param("operator with the permission", 200, id="operator-with-perm"),
        pytest.param("superuser", 200, id="superuser"),
        pytest.param("partner without the scope", 403, id="partner-without-scope"),
        pytest.param("partner with the scope", 200, id="partner-with-scope"),
    ],
)
def test_access_matrix(
    request: pytest.FixtureRequest,
    make_operator_client: Callable[..., APIClient],
    make_partner: Callable[..., Any],
    url: str,
    role: str,
    status: int,
) -> None:
    clients: dict[str, Callable[[], APIClient]] = {
        "anonymous": lambda: request.getfixturevalue("anonymous_client"),
        "member": lambda: request.getfixturevalue("member_client"),
        "operator without the permission": lambda: make_operator_client("members.view_member"),
        "operator with the permission": lambda: make_operator_client("analytics.view_analytics"),
        "superuser": lambda: request.getfixturevalue("operator_client"),
        "partner without the scope": lambda: make_partner(
            "NoScope", [s for s in Scope.values if s != Scope.ANALYTICS_READ]
        )[1],
        "partner with the scope": lambda: make_partner("Analyst", [Scope.ANALYTICS_READ])[1],
    }
    client = clients[role]()

    response = client.get(url)

    if status == 200:
        assert response.status_code == 200, response.content[:300]
    else:
        assert_problem(response, status)


# --- Payloads -----------------------------------------------------------------------------------


def test_tier_distribution_payload(analyst: APIClient, person: Person) -> None:
    person()
    person(tier_id="koc")

    body = analyst.get("/api/v1/analytics/tier-distribution/").json()

    assert body["total"] == 2
    assert body["tiers"][0] == {
        "code": "basic",
        "name": "Basic",
        "rank": 0,
        "count": 1,
        "share": 0.5,
        "expected_share": 0.45,
        "gap": pytest.approx(0.05),
    }
    assert [row["count"] for row in body["tiers"]] == [1, 0, 1, 0]
    assert body["as_of"].startswith("2026-03-18T")


def test_funnel_payload_with_a_range(
    analyst: APIClient, person: Person, active_on: ActiveOn
) -> None:
    person(joined_at=local(2026, 2, 3))
    person(
        joined_at=local(2026, 2, 3),
        first_interaction_at=local(2026, 2, 3, 9),
        last_activity_at=local(2026, 2, 3, 9),
    )

    response = analyst.get(
        "/api/v1/analytics/funnel/", {"joined_from": "2026-02-01", "joined_to": "2026-02-28"}
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["joined_from"], body["joined_to"]) == ("2026-02-01", "2026-02-28")
    assert [step["count"] for step in body["steps"]] == [2, 1, 0, 0, 0]
    assert body["steps"][0]["step_conversion"] is None
    assert body["steps"][1] == {
        "key": "first_interaction",
        "label": "First interaction",
        "count": 1,
        "share_of_registered": 0.5,
        "step_conversion": 0.5,
    }
    assert (body["lost_within_72h"], body["lost_within_72h_share"]) == (1, 1.0)
    assert body["lost_within_72h_eligible"] == 1


def test_funnel_defaults_to_the_last_90_days(analyst: APIClient, person: Person) -> None:
    person(joined_at=local(2025, 12, 19))  # 2026-03-18 minus 89 days: the first day
    person(joined_at=local(2025, 12, 18, 23, 59))  # the day before

    body = analyst.get("/api/v1/analytics/funnel/").json()

    assert (body["joined_from"], body["joined_to"]) == ("2025-12-19", "2026-03-18")
    assert body["steps"][0]["count"] == 1


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param(
            {"joined_from": "2026-02-10", "joined_to": "2026-02-09"}, "joined_to", id="reversed"
        ),
        pytest.param({"joined_from": "yesterday"}, "joined_from", id="not a date"),
        pytest.param({"joined_to": "2026-02-30"}, "joined_to", id="no such day"),
        pytest.param(
            {"joined_from": "2024-01-01", "joined_to": "2026-01-01"}, "joined_from", id="too long"
        ),
        pytest.param({"joined_from": "2026-04-01"}, "joined_to", id="from after the default to"),
        pytest.param({"since": "2026-01-01"}, "since", id="unknown parameter"),
    ],
)
def test_funnel_bad_query_is_400(analyst: APIClient, params: dict[str, str], field: str) -> None:
    response = analyst.get("/api/v1/analytics/funnel/", params)

    body = assert_problem(response, 400)
    assert field in str(body), body
    assert OutboxEvent.objects.count() == 0


def test_retention_payload(analyst: APIClient, person: Person, active_on: ActiveOn) -> None:
    member = person(joined_at=local(2026, 3, 10))
    active_on(member, date(2026, 3, 10), date(2026, 3, 17))

    body = analyst.get("/api/v1/analytics/retention/", {"weeks": 2}).json()

    assert body == {
        "weeks": 2,
        "cohorts": [
            {"week_start": "2026-03-09", "size": 1, "retention": [1.0, 1.0]},
            {"week_start": "2026-03-16", "size": 0, "retention": [0.0]},
        ],
    }


def test_retention_defaults_to_12_weeks(analyst: APIClient) -> None:
    body = analyst.get("/api/v1/analytics/retention/").json()

    assert body["weeks"] == 12
    assert len(body["cohorts"]) == 12
    assert [len(row["retention"]) for row in body["cohorts"]] == list(range(12, 0, -1))


@pytest.mark.parametrize("url", ["retention", "tier-movement", "points-flow"])
@pytest.mark.parametrize("weeks", ["0", "53", "-1", "two", "1.5"])
def test_weeks_out_of_bounds_is_400(analyst: APIClient, url: str, weeks: str) -> None:
    response = analyst.get(f"/api/v1/analytics/{url}/", {"weeks": weeks})

    body = assert_problem(response, 400)
    assert "weeks" in str(body)


@pytest.mark.parametrize("url", ["tier-distribution", "health"])
def test_unknown_query_parameters_are_400(analyst: APIClient, url: str) -> None:
    assert_problem(analyst.get(f"/api/v1/analytics/{url}/", {"x": "1"}), 400)


def test_health_payload(analyst: APIClient, person: Person, active_on: ActiveOn) -> None:
    member = person(last_interaction_at=NOW - timedelta(days=31))
    active_on(member, date(2026, 3, 2), posts=2)
    active_on(member, date(2026, 3, 9), posts=1)

    body = analyst.get("/api/v1/analytics/health/").json()

    assert body["week_start"] == "2026-03-09"
    assert (body["previous_post_density"], body["post_density"]) == (200.0, 100.0)
    assert body["post_density_change"] == -0.5
    assert body["shares_per_day"] == 0.0
    assert (body["silent_30d_count"], body["population"]) == (1, 1)
    assert [alert["code"] for alert in body["alerts"]] == [
        "post_density_drop",
        "shares_per_day_low",
        "members_silent_30d",
    ]
    assert set(body["alerts"][0]) == {"code", "message", "value", "threshold"}


def test_weekly_series_payloads(analyst: APIClient) -> None:
    movement = analyst.get("/api/v1/analytics/tier-movement/", {"weeks": 2}).json()
    points = analyst.get("/api/v1/analytics/points-flow/", {"weeks": 1}).json()

    assert movement == [
        {"week_start": "2026-03-09", "promotions": 0, "demotions": 0},
        {"week_start": "2026-03-16", "promotions": 0, "demotions": 0},
    ]
    assert points == [{"week_start": "2026-03-16", "issued": 0, "redeemed": 0, "expired": 0}]


# --- Query counts and caching -------------------------------------------------------------------


def _population(person: Person, active_on: ActiveOn, size: int) -> None:
    for index in range(size):
        member = person(
            joined_at=local(2026, 3, 2) + timedelta(hours=index),
            first_interaction_at=local(2026, 3, 3),
            last_interaction_at=local(2026, 3, 10),
            last_activity_at=local(2026, 3, 10),
        )
        active_on(member, date(2026, 3, 3), date(2026, 3, 10), posts=1, shares=1)


@pytest.mark.parametrize("url", ENDPOINTS)
def test_query_count_does_not_grow_with_members(
    analyst: APIClient,
    person: Person,
    active_on: ActiveOn,
    django_assert_num_queries: Any,
    url: str,
) -> None:
    _population(person, active_on, 1)
    analyst.get(url)  # warm the authentication caches, if any
    with CaptureQueriesContext(connection) as one:
        assert analyst.get(url).status_code == 200
    _population(person, active_on, 49)

    assert len(one.captured_queries) >= 1  # the report (the operator's lookup is cached)
    with django_assert_num_queries(len(one.captured_queries)):
        response = analyst.get(url)

    assert response.status_code == 200


def test_results_are_cached_within_the_hour(
    make_partner: Callable[..., Any], person: Person, settings: Any
) -> None:
    settings.LOYALTY_ANALYTICS_CACHE_SECONDS = 300
    _, client = make_partner("Analyst", [Scope.ANALYTICS_READ])  # API keys outlive the hour
    person()
    first = client.get("/api/v1/analytics/tier-distribution/").json()
    person()

    cached = client.get("/api/v1/analytics/tier-distribution/").json()
    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        fresh = client.get("/api/v1/analytics/tier-distribution/").json()

    assert (first["total"], cached["total"], fresh["total"]) == (1, 1, 2)
