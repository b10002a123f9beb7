"""The points endpoints: access, bodies, results, idempotency, batches."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.actors import system_actor
from members.models import Member
from rewards.models import PointsAccount, PointsEntry
from rewards.services.ledger import points_award
from tests.helpers import assert_problem

ACTOR = system_actor("tests")


def _url(member, tail=""):
    return f"/api/v1/members/{member.pk}/points/{tail}"


def test_operator_awards_and_the_member_sees_it(operator_client, member_client, member, audited):
    response = operator_client.post(_url(member, "awards/"), {"points": 50, "note": "welcome"})

    assert response.status_code == 201
    body = response.json()
    assert (body["kind"], body["points"], body["balance_after"], body["reason"]) == (
        "earn",
        50,
        50,
        "manual",
    )
    assert body["expires_at"] is not None
    mine = member_client.get("/api/v1/me/points/").json()
    assert (mine["available"], mine["pending"], mine["lifetime_earned"]) == (50, 0, 50)
    entries = member_client.get("/api/v1/me/points/entries/").json()["results"]
    assert [entry["id"] for entry in entries] == [body["id"]]


def test_deduction_409_when_short_and_nothing_changes(operator_client, member, audited):
    operator_client.post(_url(member, "awards/"), {"points": 5})

    response = operator_client.post(_url(member, "deductions/"), {"points": 6})

    assert_problem(response, 409, "insufficient_points")
    assert PointsAccount.objects.get(pk=member.pk).available == 5
    assert PointsEntry.objects.count() == 1


@pytest.mark.parametrize(
    "body",
    [
        {"points": 0},
        {"points": -5},
        {"points": "ten"},
        {"points": 1, "balance": 100},
        {"points": 1, "reason": "gift"},
        {"points": 1, "expires_at": "2000-01-01T00:00:00Z"},
        {"points": 10_000_001},
    ],
)
def test_bad_award_bodies_are_400(operator_client, member, body):
    response = operator_client.post(_url(member, "awards/"), body)

    assert_problem(response, 400)
    assert not PointsEntry.objects.exists()


def test_award_replay_with_idempotency_key_posts_once(operator_client, member, audited):
    first = operator_client.post(_url(member, "awards/"), {"points": 7}, HTTP_IDEMPOTENCY_KEY="a-1")

    replay = operator_client.post(
        _url(member, "awards/"), {"points": 7}, HTTP_IDEMPOTENCY_KEY="a-1"
    )
    changed = operator_client.post(
        _url(member, "awards/"), {"points": 8}, HTTP_IDEMPOTENCY_KEY="a-1"
    )

    assert replay.json() == first.json()
    assert_problem(changed, 422, "idempotency_key_reused")
    assert PointsEntry.objects.count() == 1


def test_award_for_the_same_reference_is_409(partner_client, member, audited):
    partner_client.post(
        _url(member, "awards/"), {"points": 7, "reference": "order-1", "reason": "purchase"}
    )

    again = partner_client.post(
        _url(member, "awards/"), {"points": 7, "reference": "order-1", "reason": "purchase"}
    )

    assert_problem(again, 409, "duplicate_award")


def test_reversal_once_and_partners_only_their_own(make_partner, operator_client, member, audited):
    _, shop = make_partner("Shop")
    _, crm = make_partner("CRM")
    earn = shop.post(_url(member, "awards/"), {"points": 30, "reason": "purchase"}).json()
    url = f"/api/v1/points/entries/{earn['id']}/reversal/"

    foreign = crm.post(url, {})
    first = shop.post(url, {})
    second = operator_client.post(url, {})

    assert_problem(foreign, 404)
    assert first.status_code == 201
    assert (first.json()["kind"], first.json()["points"], first.json()["reverses"]) == (
        "reverse",
        -30,
        earn["id"],
    )
    assert_problem(second, 409, "already_reversed")


@pytest.mark.parametrize(
    ("role", "expected"),
    [("member", 403), ("partner_no_scope", 403), ("operator_no_perm", 403)],
)
def test_who_may_not_award(
    role, expected, member, member_client, make_partner, make_operator_client
):
    client = {
        "member": member_client,
        "partner_no_scope": make_partner("P", scopes=["members:read"])[1],
        "operator_no_perm": make_operator_client("rewards.view_pointsentry"),
    }[role]

    response = client.post(_url(member, "awards/"), {"points": 5})

    assert_problem(response, expected)
    assert not PointsEntry.objects.exists()


def test_member_reads_only_their_own_points(member_client, other_member, member):
    assert member_client.get(_url(member)).status_code == 200
    assert_problem(member_client.get(_url(other_member)), 404)
    assert_problem(member_client.get(_url(other_member, "entries/")), 404)


def test_partners_cannot_deduct(partner_client, member):
    assert_problem(partner_client.post(_url(member, "deductions/"), {"points": 1}), 403)


def test_entries_filter_by_kind_and_reject_bad_filters(operator_client, member, audited):
    now = timezone.now()
    points_award(member=member, points=10, reason="manual", actor=ACTOR, at=now)
    operator_client.post(_url(member, "deductions/"), {"points": 3})

    adjust = operator_client.get(_url(member, "entries/?kind=adjust")).json()["results"]
    bad = operator_client.get(_url(member, "entries/?kind=steal"))

    assert [entry["points"] for entry in adjust] == [-3]
    assert_problem(bad, 400)


@pytest.mark.parametrize("rows", [1, 50])
def test_entries_list_query_count_is_constant(
    operator_client, member, django_assert_num_queries, rows
):
    now = timezone.now()
    for _ in range(rows):
        points_award(member=member, points=1, reason="manual", actor=ACTOR, at=now)

    # user, member, entries page (with lots)
    with django_assert_num_queries(3):
        response = operator_client.get(_url(member, "entries/?page_size=50"))
    assert len(response.json()["results"]) == rows


def test_award_batch_per_item_results(operator_client, make_member, audited):
    make_member("a")
    make_member("b")
    body = {
        "items": [
            {"external_id": "a", "points": 10, "idempotency_key": "i-1"},
            {"external_id": "ghost", "points": 10},
            {
                "external_id": "b",
                "points": 5,
                "pending_until": (timezone.now() + timedelta(days=3)).isoformat(),
            },
            {"external_id": "a", "points": 10, "idempotency_key": "i-1"},
        ]
    }

    response = operator_client.post("/api/v1/points/award-batches/", body)
    again = operator_client.post("/api/v1/points/award-batches/", {"items": [body["items"][0]]})

    assert response.status_code == 200
    assert [r["status"] for r in response.json()["results"]] == [
        "accepted",
        "rejected",
        "accepted",
        "duplicate",
    ]
    assert again.json()["results"][0]["status"] == "duplicate"
    balances = dict(PointsAccount.objects.values_list("member__external_id", "available"))
    assert balances == {"a": 10, "b": 0}


def test_award_batch_over_1000_items_is_400(operator_client, db):
    items = [{"external_id": f"m{n}", "points": 1} for n in range(1001)]

    assert_problem(operator_client.post("/api/v1/points/award-batches/", {"items": items}), 400)


def _batch(client, count):
    items = [{"external_id": f"bulk-{n}", "points": 3} for n in range(count)]
    with CaptureQueriesContext(connection) as queries:
        response = client.post("/api/v1/points/award-batches/", {"items": items})
    assert response.status_code == 200
    return len(queries.captured_queries)


@pytest.mark.postgres
def test_award_batch_query_count_does_not_grow(operator_client, audited):
    now = timezone.now()
    Member.objects.bulk_create(
        Member(
            external_id=f"bulk-{n}",
            display_name="B",
            joined_at=now,
            tier_since=now,
            lifecycle_changed_at=now,
            created_at=now,
            updated_at=now,
        )
        for n in range(1000)
    )

    operator_client.get("/api/v1/members/?page_size=1")  # warm-up: the operator gets cached
    small = _batch(operator_client, 10)
    large = _batch(operator_client, 1000)

    assert large == small
    assert PointsAccount.objects.filter(available=3).count() == 990


def test_an_award_to_an_erased_member_is_409_and_writes_nothing(operator_client, member):
    from members.services import member_erase

    member_erase(member=member, actor=system_actor("tests"), at=timezone.now())

    response = operator_client.post(
        f"/api/v1/members/{member.pk}/points/awards/", {"points": 5}, format="json"
    )

    assert_problem(response, 409, "member_erased")
    assert not PointsEntry.objects.filter(member=member).exists()


def test_an_award_to_an_unknown_member_is_404_and_writes_nothing(operator_client, member):
    operator_client.post(_url(member, "awards/"), {"points": 1})  # the member has an account
    unknown = "00000000-0000-4000-8000-000000000000"

    first = operator_client.post(
        f"/api/v1/members/{unknown}/points/awards/", {"points": 5}, HTTP_IDEMPOTENCY_KEY="u-1"
    )
    retried = operator_client.post(
        f"/api/v1/members/{unknown}/points/awards/", {"points": 5}, HTTP_IDEMPOTENCY_KEY="u-1"
    )

    assert_problem(first, 404, "not_found")
    assert_problem(retried, 404, "not_found")
    assert PointsEntry.objects.count() == 1
    assert not PointsAccount.objects.filter(pk=unknown).exists()


def test_consecutive_awards_chain_versions_and_balances(operator_client, member, audited):
    bodies = [
        operator_client.post(_url(member, "awards/"), {"points": points}).json()
        for points in (3, 4, 5)
    ]

    assert [(body["version"], body["balance_after"]) for body in bodies] == [
        (1, 3),
        (2, 7),
        (3, 12),
    ]


def _entries_of_every_shape(member):
    from rewards.services.ledger import points_deduct, points_reverse

    at = timezone.now()
    earned = points_award(member=member, points=10, reason="manual", actor=ACTOR, at=at)
    held = points_award(
        member=member.pk,
        points=4,
        reason="purchase",
        actor=ACTOR,
        at=at,
        reference="order-1",
        note="held",
        pending_until=at + timedelta(days=7),
    )
    spent = points_deduct(member=member, points=3, reason="manual", actor=ACTOR, at=at)
    reversal = points_reverse(entry=held, actor=ACTOR, at=at)
    return [earned, held, spent, reversal]


@pytest.mark.parametrize("reread", [False, True], ids=["as written", "read back"])
def test_entry_documents_match_what_the_declared_fields_render(member, reread, audited):
    from rest_framework import serializers

    from rewards.api.serializers import PointsEntrySerializer

    entries = _entries_of_every_shape(member)
    if reread:
        entries = list(PointsEntry.objects.select_related("lot").order_by("pk"))

    for entry in entries:
        serializer = PointsEntrySerializer(entry)
        assert serializer.data == serializers.Serializer.to_representation(serializer, entry)
        assert list(serializer.data) == list(serializer.fields)
    shapes = [
        (body["expires_at"] is None, body["pending_until"] is None)
        for body in (PointsEntrySerializer(entry).data for entry in entries)
    ]
    assert shapes == [(False, True), (False, False), (True, True), (True, True)]


def test_a_retry_of_an_award_with_a_reference_replays_its_201_not_a_409(
    partner_client, member, audited
):
    body = {"points": 5, "reference": "order-7"}
    first = partner_client.post(_url(member, "awards/"), body, HTTP_IDEMPOTENCY_KEY="o-7")

    retried = partner_client.post(_url(member, "awards/"), body, HTTP_IDEMPOTENCY_KEY="o-7")
    other_key = partner_client.post(_url(member, "awards/"), body, HTTP_IDEMPOTENCY_KEY="o-8")

    assert first.status_code == retried.status_code == 201
    assert retried.json() == first.json()
    assert retried["Idempotent-Replayed"] == "true"
    assert_problem(other_key, 409, "duplicate_award")
    assert PointsEntry.objects.count() == 1
