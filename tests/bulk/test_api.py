"""The bulk operation endpoints: start, follow, page through outcomes; access and bad input."""

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from bulk.models import BulkItem, BulkOperation
from core.models import Job
from members.models import Member
from rewards.models import CertificationGrant, PointsAccount, PointsEntry
from tests.helpers import assert_problem

pytestmark = pytest.mark.django_db
URL = "/api/v1/bulk-operations/"


def _nothing_created() -> tuple[int, int, int, int]:
    return (
        Job.objects.count(),
        BulkOperation.objects.count(),
        BulkItem.objects.count(),
        PointsEntry.objects.count(),
    )


def test_points_award_by_tag_filter_runs_and_reports_progress(
    make_operator_client: Callable[..., APIClient],
    bulk_members: Callable[..., list[Member]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    vips = bulk_members(3, prefix="vip", tag="shop:vip")
    bulk_members(2, prefix="plain")
    client = make_operator_client("rewards.award_points")

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            URL,
            {
                "operation": "points_award",
                "points": 40,
                "reason": "manual",
                "note": "launch party",
                "filter": {"tag": ["shop:vip"]},
            },
            format="json",
        )

    assert response.status_code == 202, response.content
    body = response.json()
    assert response["Location"].endswith(f"{URL}{body['id']}/")
    assert (body["operation"], body["selection"], body["items_total"]) == (
        "points_award",
        "filter",
        3,
    )
    assert body["parameters"]["points"] == 40
    assert body["parameters"]["selection"] == {"kind": "filter", "filter": {"tag": ["shop:vip"]}}
    detail = client.get(f"{URL}{body['id']}/").json()
    assert (detail["status"], detail["progress"], detail["items_done"]) == ("done", 1.0, 3)
    assert (detail["succeeded_count"], detail["skipped_count"], detail["failed_count"]) == (3, 0, 0)
    balances = dict(PointsAccount.objects.values_list("member_id", "available"))
    assert balances == {member.pk: 40 for member in vips}
    assert set(PointsEntry.objects.values_list("note", "reason")) == {("launch party", "manual")}


def test_certification_grant_by_external_ids_reports_unknown_ids_per_item(
    make_operator_client: Callable[..., APIClient],
    bulk_members: Callable[..., list[Member]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    first, second = bulk_members(2)
    client = make_operator_client("rewards.grant_certification")

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            URL,
            {
                "operation": "certification_grant",
                "certification": "onboarding",
                "evidence": "workshop",
                "external_ids_csv": f"external_id\n{first.external_id}\nghost\n{second.external_id}\n",
            },
            format="json",
        )

    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    failed = client.get(f"{URL}{job_id}/items/", {"status": "failed"}).json()
    assert [
        (item["external_id"], item["outcome"], item["member"]) for item in failed["results"]
    ] == [("ghost", "unknown_member", None)]
    everything = client.get(f"{URL}{job_id}/items/", {"page_size": 2}).json()
    assert [item["position"] for item in everything["results"]] == [1, 2]
    rest = client.get(everything["next"]).json()
    assert [(item["position"], item["status"]) for item in rest["results"]] == [(3, "succeeded")]
    assert set(CertificationGrant.objects.values_list("member_id", "evidence")) == {
        (first.pk, "workshop"),
        (second.pk, "workshop"),
    }


def test_tier_reassessment_of_listed_members(
    make_operator_client: Callable[..., APIClient],
    bulk_members: Callable[..., list[Member]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    members = bulk_members(2)
    client = make_operator_client("tiers.run_reassessment")

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            URL,
            {"operation": "tier_reassessment", "external_ids": [m.external_id for m in members]},
            format="json",
        )

    detail = client.get(response["Location"]).json()
    assert (detail["status"], detail["succeeded_count"]) == ("done", 2)


def test_idempotency_key_replays_the_first_response_and_starts_one_job(
    make_operator_client: Callable[..., APIClient],
    bulk_members: Callable[..., list[Member]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    bulk_members(2)
    client = make_operator_client("rewards.award_points")
    body = {"operation": "points_award", "points": 5, "filter": {}}

    with django_capture_on_commit_callbacks(execute=True):
        first = client.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="award-1")
    with django_capture_on_commit_callbacks(execute=True):
        replay = client.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="award-1")
    reused = client.post(URL, {**body, "points": 6}, format="json", HTTP_IDEMPOTENCY_KEY="award-1")

    assert first.status_code == replay.status_code == 202
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert_problem(reused, 422, "idempotency_key_reused")
    assert (Job.objects.count(), PointsEntry.objects.count()) == (1, 2)
    assert sorted(PointsAccount.objects.values_list("available", flat=True)) == [5, 5]


@pytest.mark.parametrize(
    ("body", "attr"),
    [
        ({"operation": "points_award", "points": 0, "filter": {}}, "points"),
        ({"operation": "points_award", "filter": {}}, "points"),
        ({"operation": "points_award", "points": 5, "reason": "purchase", "filter": {}}, "reason"),
        (
            {"operation": "points_award", "points": 5, "certification": "x", "filter": {}},
            "certification",
        ),
        ({"operation": "points_award", "points": 5, "filter": {}, "surprise": 1}, "surprise"),
        ({"operation": "points_award", "points": 5}, "filter"),
        ({"operation": "points_award", "points": 5, "filter": {}, "external_ids": ["a"]}, "filter"),
        ({"operation": "points_award", "points": 5, "filter": {"tier": "emperor"}}, "filter.tier"),
        ({"operation": "points_award", "points": 5, "filter": {"colour": "red"}}, "filter.colour"),
        ({"operation": "points_award", "points": 5, "filter": {"tag": ["nocolon"]}}, "filter.tag"),
        (
            {"operation": "certification_grant", "certification": "nope", "filter": {}},
            "certification",
        ),
        ({"operation": "tier_reassessment", "filter": {"external_id": "nobody"}}, "selection"),
        ({"operation": "tier_reassessment", "external_ids": []}, "selection"),
        ({"operation": "dance", "filter": {}}, "operation"),
        ({"operation": "tier_reassessment", "external_ids_csv": "x" * 129}, "external_ids_csv"),
        ({"operation": "tier_reassessment", "external_ids": [""]}, "external_ids.0"),
    ],
)
def test_bad_input_is_a_400_problem_and_creates_nothing(
    operator_client: APIClient,
    bulk_members: Callable[..., list[Member]],
    body: dict[str, Any],
    attr: str,
) -> None:
    bulk_members(2)

    response = operator_client.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="bad-1")

    problem = assert_problem(response, 400)
    assert attr in {error["attr"] for error in problem["errors"]}, problem
    assert _nothing_created() == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("anonymous", 401),
        ("member", 403),
        ("partner with every scope", 403),
        ("operator without permission", 403),
        ("operator with another operation's permission", 403),
    ],
)
def test_who_may_start_an_operation(
    role: str,
    expected: int,
    anonymous_client: APIClient,
    member_client: APIClient,
    partner_client: APIClient,
    make_operator_client: Callable[..., APIClient],
    bulk_members: Callable[..., list[Member]],
) -> None:
    bulk_members(2)
    client = {
        "anonymous": anonymous_client,
        "member": member_client,
        "partner with every scope": partner_client,
        "operator without permission": make_operator_client(),
        "operator with another operation's permission": make_operator_client(
            "tiers.run_reassessment", "rewards.grant_certification"
        ),
    }[role]

    response = client.post(
        URL, {"operation": "points_award", "points": 5, "filter": {}}, format="json"
    )

    assert_problem(response, expected)
    assert _nothing_created() == (0, 0, 0, 0)


def test_operators_see_their_own_operations_unless_they_may_view_all(
    make_operator_client: Callable[..., APIClient],
    bulk_members: Callable[..., list[Member]],
    member_client: APIClient,
) -> None:
    bulk_members(1)
    owner = make_operator_client("tiers.run_reassessment")
    other = make_operator_client()
    auditor = make_operator_client("bulk.view_bulkoperation")
    job_id = owner.post(
        URL, {"operation": "tier_reassessment", "filter": {}}, format="json"
    ).json()["id"]

    assert [op["id"] for op in owner.get(URL).json()["results"]] == [job_id]
    assert other.get(URL).json()["results"] == []
    assert_problem(other.get(f"{URL}{job_id}/"), 404)
    assert_problem(other.get(f"{URL}{job_id}/items/"), 404)
    assert [op["id"] for op in auditor.get(URL).json()["results"]] == [job_id]
    assert auditor.get(f"{URL}{job_id}/").status_code == 200
    assert_problem(member_client.get(URL), 403)
    assert_problem(owner.get(f"{URL}{job_id}/items/", {"status": "sideways"}), 400)


def _queries(client: APIClient, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured.captured_queries)


def test_list_detail_and_items_queries_do_not_grow_with_rows(
    make_operator_client: Callable[..., APIClient],
    bulk_members: Callable[..., list[Member]],
) -> None:
    bulk_members(1)
    client = make_operator_client("tiers.run_reassessment")
    body = {"operation": "tier_reassessment", "filter": {}}
    job_id = client.post(URL, body, format="json").json()["id"]
    one = [_queries(client, url) for url in (URL, f"{URL}{job_id}/", f"{URL}{job_id}/items/")]

    for _ in range(4):
        client.post(URL, body, format="json")
    bulk_members(30, prefix="more")
    many_id = client.post(URL, body, format="json").json()["id"]
    many = [_queries(client, url) for url in (URL, f"{URL}{many_id}/", f"{URL}{many_id}/items/")]

    assert one == many
    assert max(many) <= 5
