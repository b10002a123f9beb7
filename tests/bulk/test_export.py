"""GET members/export/: any filtered member list as streamed CSV with tier, points, lifecycle, tags."""

import csv
import io
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from core.actors import system_actor
from core.db import durable_atomic
from core.models import Partner
from members.models import Member
from rewards.services.ledger import points_award
from tests.helpers import assert_problem

pytestmark = pytest.mark.django_db
URL = "/api/v1/members/export/"


def _rows(response: Any) -> list[dict[str, str]]:
    assert response.streaming
    text = b"".join(response.streaming_content).decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text[1:])))


def test_export_streams_the_filtered_members_with_points_and_tags(
    operator_client: APIClient, bulk_members: Callable[..., list[Member]]
) -> None:
    first, second = bulk_members(2, prefix="vip", tag="shop:vip")
    bulk_members(2, prefix="plain")
    with durable_atomic():
        points_award(
            member=first, points=30, reason="manual", actor=system_actor("tests"), at=timezone.now()
        )

    response = operator_client.get(URL, {"tag": "shop:vip"}, HTTP_ACCEPT="text/csv")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="members-')
    rows = _rows(response)
    assert [
        (
            row["external_id"],
            row["tier"],
            row["lifecycle_stage"],
            row["tags"],
            row["points_available"],
            row["points_pending"],
            row["points_lifetime_earned"],
        )
        for row in rows
    ] == [
        (first.external_id, "basic", "new", "shop:vip=", "30", "0", "30"),
        (second.external_id, "basic", "new", "shop:vip=", "0", "0", "0"),
    ]
    assert rows[0]["id"] == str(first.pk)


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("anonymous", 401),
        ("member", 403),
        ("operator without members.view_member", 403),
        ("partner without members:read", 403),
        ("operator with members.view_member", 200),
        ("partner with members:read", 200),
    ],
)
def test_who_may_export(
    role: str,
    expected: int,
    anonymous_client: APIClient,
    member_client: APIClient,
    make_operator_client: Callable[..., APIClient],
    make_partner: Callable[..., tuple[Partner, APIClient]],
) -> None:
    client = {
        "anonymous": lambda: anonymous_client,
        "member": lambda: member_client,
        "operator without members.view_member": make_operator_client,
        "partner without members:read": lambda: make_partner("Shop", ["members:write"])[1],
        "operator with members.view_member": lambda: make_operator_client("members.view_member"),
        "partner with members:read": lambda: make_partner("Shop", ["members:read"])[1],
    }[role]()

    response = client.get(URL)

    if expected == 200:
        assert response.status_code == 200
        assert [row["external_id"] for row in _rows(response)] == ["member-self"]
    else:
        assert_problem(response, expected)


def test_a_bad_filter_is_a_400_problem(operator_client: APIClient) -> None:
    response = operator_client.get(URL, {"tier": "emperor"})

    assert_problem(response, 400)


def _export_queries(client: APIClient) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as captured:
        rows = _rows(client.get(URL))
    return len(captured.captured_queries), len(rows)


def test_export_queries_are_constant_per_chunk(
    operator_client: APIClient, bulk_members: Callable[..., list[Member]]
) -> None:
    bulk_members(3, prefix="few", tag="shop:vip")
    _export_queries(operator_client)  # warm-up: the operator's lookup gets cached
    few = _export_queries(operator_client)
    bulk_members(300, prefix="many", tag="shop:vip")

    many = _export_queries(operator_client)

    assert (few[1], many[1]) == (3, 303)
    assert few[0] == many[0]
