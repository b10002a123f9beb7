"""OWASP API4 (unrestricted resource consumption): body size and nesting, page sizes (every
paginated list, generated from the URL resolver), batch sizes and per-client rate limits. Each
refusal is a 4xx problem+json (never a 500) and writes nothing."""

from collections.abc import Callable
from unittest import mock

import pytest
from django.utils import timezone
from rest_framework.mixins import ListModelMixin
from rest_framework.settings import api_settings
from rest_framework.test import APIClient

from core.api.pagination import CreatedCursorPagination
from core.api.tokens import member_token_pair
from members.models import ActivityEvent, Member
from rewards.models import PointsEntry
from tests.helpers import assert_problem
from tests.security.routes import Operation, api_operations
from tests.security.test_function_level_access import _row_counts

LISTS = [
    operation
    for operation in api_operations()
    if operation.method == "GET" and issubclass(operation.view, ListModelMixin)
]


def _member_client(member) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {member_token_pair(member.pk)['access']}")
    return client


# --- Bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/events/", {"events": [{"id": f"e{n}", "type": "like"} for n in range(400)]}),
        ("/api/v1/members/", {"external_id": "big", "display_name": "x" * 20_000}),
        ("/api/v1/points/award-batches/", {"items": [{"external_id": "m", "points": 1}] * 500}),
    ],
)
def test_a_body_over_the_upload_limit_is_413_and_writes_nothing(settings, superuser, path, body):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    client = APIClient()
    client.force_authenticate(superuser)
    before = _row_counts()

    response = client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="big-1")

    assert_problem(response, 413, "request_too_large")
    assert _row_counts() == before


def test_the_default_upload_limit_fits_a_full_event_batch(settings):
    # 1,000 events each with the largest properties allowed must fit in one body.
    per_event = settings.LOYALTY_EVENT_MAX_PROPERTIES_BYTES + 300

    assert settings.LOYALTY_MAX_BATCH_ITEMS * per_event <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE <= 16 * 1024 * 1024


@pytest.mark.parametrize(
    "path", ["/api/v1/events/", "/api/v1/members/", "/api/v1/tag-sync/", "/api/v1/webhooks/"]
)
def test_json_nested_too_deeply_is_a_400_parse_error(superuser, path):
    client = APIClient()
    client.force_authenticate(superuser)
    before = _row_counts()

    response = client.generic(
        "POST", path, b"[" * 100_000 + b"]" * 100_000, content_type="application/json"
    )

    assert_problem(response, 400, "parse_error")
    assert _row_counts() == before


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"\xff\xfe\x00", "application/json", 400),
        (b'{"external_id": "x", "display_name": ', "application/json", 400),
        (b"<member/>", "application/xml", 415),
        (b"external_id=x&display_name=y", "application/x-www-form-urlencoded", 415),
    ],
)
def test_undecodable_or_foreign_bodies_are_4xx(superuser, body, content_type, status):
    client = APIClient()
    client.force_authenticate(superuser)

    response = client.generic("POST", "/api/v1/members/", body, content_type=content_type)

    assert_problem(response, status)
    assert not Member.objects.exists()


# --- Pages -------------------------------------------------------------------------------------


def test_every_list_is_paginated_with_the_capped_cursor_pagination():
    unpaginated = [
        operation.label
        for operation in LISTS
        if not issubclass(operation.view.pagination_class or type(None), CreatedCursorPagination)
    ]

    assert unpaginated == []
    assert len(LISTS) >= 10


def _list_client(operation: Operation, superuser, member) -> APIClient:
    if operation.operator_permissions is None:
        return _member_client(member)
    client = APIClient()
    client.force_authenticate(superuser)
    return client


def _list_path(operation: Operation, member) -> str:
    return operation.path({"member_id": member.pk})


# Lists under another object (a webhook's deliveries, ...) share the same capped pagination
# class (asserted above); these are called for real.
CALLABLE_LISTS = [operation for operation in LISTS if set(operation.params) <= {"member_id"}]


@pytest.mark.parametrize(
    "operation", CALLABLE_LISTS, ids=[operation.label for operation in CALLABLE_LISTS]
)
def test_every_list_refuses_a_page_over_the_cap(settings, superuser, member, operation):
    client = _list_client(operation, superuser, member)
    path = _list_path(operation, member)
    cap = settings.LOYALTY_MAX_PAGE_SIZE

    too_big = client.get(path, {"page_size": cap + 1})
    negative = client.get(path, {"page_size": -1})
    at_cap = client.get(path, {"page_size": cap})

    assert_problem(too_big, 400, "validation_error")
    assert_problem(negative, 400, "validation_error")
    assert at_cap.status_code == 200, at_cap.content[:300]


def test_a_forged_cursor_is_400_not_500(operator_client):
    response = operator_client.get("/api/v1/members/", {"cursor": "%%not-base64%%"})

    assert_problem(response, 400, "validation_error")


# --- Batches -----------------------------------------------------------------------------------


def _events(count: int, external_id: str) -> dict:
    at = timezone.now().isoformat()
    return {
        "events": [
            {"id": f"e{n}", "external_id": external_id, "type": "like", "occurred_at": at}
            for n in range(count)
        ]
    }


@pytest.mark.parametrize(
    ("path", "body", "attr"),
    [
        ("/api/v1/events/", _events(1001, "member-self"), "events"),
        (
            "/api/v1/points/award-batches/",
            {"items": [{"external_id": "member-self", "points": 1}] * 1001},
            "items",
        ),
        (
            "/api/v1/tag-sync/",
            {
                "namespace": "shop",
                "mode": "merge",
                "members": [{"external_id": "member-self", "tags": []}] * 1001,
            },
            "members",
        ),
    ],
)
def test_batches_over_1000_items_are_400_and_write_nothing(make_partner, member, path, body, attr):
    _, client = make_partner("Shop")

    response = client.post(path, body, format="json")

    problem = assert_problem(response, 400, "validation_error")
    assert problem["errors"][0]["attr"] == attr
    assert not ActivityEvent.objects.exists()
    assert not PointsEntry.objects.exists()


def test_a_batch_of_exactly_1000_is_accepted(make_partner, member):
    _, client = make_partner("Shop")

    response = client.post("/api/v1/events/", _events(1000, member.external_id), format="json")

    assert response.status_code == 200
    assert len(response.json()["results"]) == 1000


# --- Rate limits -------------------------------------------------------------------------------


@pytest.fixture
def low_rates():
    rates = {"operator": "2/min", "partner": "2/min", "member": "2/min", "anonymous": "2/min"}
    with mock.patch.dict(api_settings.DEFAULT_THROTTLE_RATES, rates):
        yield


@pytest.fixture
def role_clients(member, make_partner, make_operator_client) -> dict[str, Callable[[], APIClient]]:
    return {
        "operator": lambda: make_operator_client("members.view_member", "members.add_member"),
        "partner": lambda: make_partner("Rated", scopes=["members:read", "members:write"])[1],
        "member": lambda: _member_client(member),
        "anonymous": APIClient,
    }


# Per role: a read it may make, then a write it may make (refused once over the limit).
WRITES = {
    "operator": ("/api/v1/members/", "post", {"external_id": "late", "display_name": "L"}),
    "partner": ("/api/v1/members/", "post", {"external_id": "late", "display_name": "L"}),
    "member": ("/api/v1/me/", "patch", {"display_name": "Late"}),
    "anonymous": ("/api/v1/auth/token/", "post", {"username": "root-op", "password": "x"}),
}
READS = {
    "operator": "/api/v1/members/",
    "partner": "/api/v1/members/",
    "member": "/api/v1/me/",
    "anonymous": "/api/v1/honors/wall/",
}


@pytest.mark.parametrize("role", ["operator", "partner", "member", "anonymous"])
def test_each_role_is_rate_limited_with_429_retry_after_and_nothing_written(
    low_rates, role_clients, member, role
):
    client = role_clients[role]()
    reads = [client.get(READS[role]).status_code for _ in range(2)]
    path, method, body = WRITES[role]
    before = _row_counts()

    response = getattr(client, method)(path, body, format="json")

    assert reads == [200, 200]
    problem = assert_problem(response, 429, "throttled")
    assert 1 <= int(response["Retry-After"]) <= 60
    assert "throttled" in problem["type"]
    assert _row_counts() == before
    member.refresh_from_db()
    assert member.display_name == "Self"


def test_a_client_cannot_dodge_its_limit_by_rotating_ip_addresses(low_rates, member):
    client = _member_client(member)

    statuses = [
        client.get("/api/v1/me/", REMOTE_ADDR=f"203.0.113.{n}").status_code for n in range(3)
    ]

    assert statuses == [200, 200, 429]
