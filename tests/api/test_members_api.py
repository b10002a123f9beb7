"""Members: create, read, filter, edit, erase; bad input answered with problem+json."""

from datetime import timedelta

import pytest
from django.utils import timezone

from members.models import Identity, Member, MemberTag, TagChange
from tests.helpers import assert_problem

MEMBERS = "/api/v1/members/"


def test_operator_creates_member_at_basic_tier_and_new_stage(operator_client):
    response = operator_client.post(
        MEMBERS, {"external_id": "ext-1", "display_name": "Ann", "email": "ann@example.com"}
    )

    assert response.status_code == 201
    body = response.json()
    assert body["external_id"] == "ext-1"
    assert body["tier"] == "basic"
    assert body["lifecycle_stage"] == "new"
    assert Member.objects.get(pk=body["id"]).display_name == "Ann"


def test_duplicate_external_id_is_409_and_creates_nothing(operator_client, make_member):
    make_member("ext-1")

    response = operator_client.post(MEMBERS, {"external_id": "ext-1", "display_name": "Ann"})

    assert_problem(response, 409, "member_exists")
    assert Member.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "attr"),
    [
        ({"external_id": "x", "display_name": "A", "tier": "kol"}, "tier"),
        ({"external_id": "x", "display_name": "A", "lifecycle_stage": "active"}, "lifecycle_stage"),
        ({"external_id": "x", "display_name": "A", "balance": 10}, "balance"),
        ({"external_id": "x", "display_name": ["A"]}, "display_name"),
        ({"external_id": "x", "display_name": "A", "email": "not-an-email"}, "email"),
        ({"display_name": "A"}, "external_id"),
        ({"external_id": "has space", "display_name": "A"}, "external_id"),
    ],
)
def test_bad_member_bodies_are_400_with_field_errors(operator_client, body, attr):
    response = operator_client.post(MEMBERS, body)

    problem = assert_problem(response, 400, "validation_error")
    assert attr in [error["attr"] for error in problem["errors"]]
    assert Member.objects.count() == 0


def test_malformed_json_is_400_problem(operator_client):
    response = operator_client.generic(
        "POST", MEMBERS, "{not json", content_type="application/json"
    )

    assert_problem(response, 400, "parse_error")


def test_list_filters_by_tier_stage_tag_search_and_joined_range(
    operator_client, make_member, make_partner
):
    now = timezone.now()
    old = make_member("old-1", display_name="Olga", joined_at=now - timedelta(days=40))
    tagged = make_member("new-1", display_name="Nina")
    make_member("new-2", display_name="Ned")
    partner, _ = make_partner("Shop")
    MemberTag.objects.create(
        member=tagged,
        namespace=partner.namespace,
        key="vip",
        value="gold",
        source="api",
        written_by="t",
        synced_at=now,
        created_at=now,
    )

    def ids(query):
        response = operator_client.get(MEMBERS + query)
        assert response.status_code == 200, response.content
        return {item["external_id"] for item in response.json()["results"]}

    assert ids("?tier=basic") == {"old-1", "new-1", "new-2"}
    assert ids("?tier=koc") == set()
    assert ids("?lifecycle_stage=new") == {"old-1", "new-1", "new-2"}
    assert ids(f"?tag={partner.namespace}:vip") == {"new-1"}
    assert ids(f"?tag={partner.namespace}:vip=gold") == {"new-1"}
    assert ids(f"?tag={partner.namespace}:vip=silver") == set()
    assert ids("?search=Ni") == {"new-1"}
    assert ids("?external_id=old-1") == {"old-1"}
    joined_before = (now - timedelta(days=30)).isoformat().replace("+00:00", "Z")
    assert ids(f"?joined_before={joined_before}") == {old.external_id}


@pytest.mark.parametrize(
    "query",
    [
        "?tier=platinum",
        "?lifecycle_stage=asleep",
        "?tag=novalue",
        "?joined_after=yesterday",
        "?page_size=201",
        "?page_size=0",
        "?cursor=garbage",
    ],
)
def test_invalid_list_parameters_are_400(operator_client, query):
    response = operator_client.get(MEMBERS + query)

    assert_problem(response, 400, "validation_error")


def test_list_is_cursor_paginated_newest_first(operator_client, make_member):
    now = timezone.now()
    for number in range(5):
        make_member(f"p-{number}", at=now + timedelta(seconds=number))

    first = operator_client.get(MEMBERS + "?page_size=2").json()
    second = operator_client.get(first["next"]).json()

    assert [item["external_id"] for item in first["results"]] == ["p-4", "p-3"]
    assert [item["external_id"] for item in second["results"]] == ["p-2", "p-1"]


@pytest.mark.parametrize("rows", [1, 50])
def test_list_and_detail_query_counts_do_not_grow_with_rows(
    operator_client, make_member, django_assert_num_queries, rows
):
    members = [make_member(f"q-{number}") for number in range(rows)]
    for member in members:
        Identity.objects.create(
            member=member, provider="p", value=member.external_id, created_at=timezone.now()
        )

    # auth user + the page's ids + its members + their identities
    with django_assert_num_queries(4):
        response = operator_client.get(MEMBERS + "?page_size=50")
    assert len(response.json()["results"]) == rows
    # the same page again is cached whole, and so is the operator: no query
    with django_assert_num_queries(0):
        assert operator_client.get(MEMBERS + "?page_size=50").json() == response.json()
    # a filtered page picks its members in the database and reuses their cached entries
    with django_assert_num_queries(1):
        filtered = operator_client.get(MEMBERS + "?page_size=50&lifecycle_stage=new")
    assert filtered.json()["results"] == response.json()["results"]
    # member + identities
    with django_assert_num_queries(2):
        operator_client.get(f"{MEMBERS}{members[0].pk}/")


def test_patch_edits_profile_but_never_tier(operator_client, member):
    response = operator_client.patch(
        f"{MEMBERS}{member.pk}/", {"display_name": "Renamed", "phone": "+86 138 0000 0000"}
    )
    rejected = operator_client.patch(f"{MEMBERS}{member.pk}/", {"tier": "kol"})

    assert response.status_code == 200
    assert response.json()["display_name"] == "Renamed"
    assert_problem(rejected, 400, "validation_error")
    member.refresh_from_db()
    assert member.tier_id == "basic"
    assert member.display_name == "Renamed"


def test_delete_erases_personal_data_and_keeps_the_member_row(
    operator_client, member, make_partner
):
    partner, partner_client = make_partner("Shop")
    partner_client.put(
        f"{MEMBERS}{member.pk}/tags/{partner.namespace}/", {"tags": [{"key": "vip"}]}
    )
    operator_client.put(
        f"{MEMBERS}{member.pk}/identities/",
        {"identities": [{"provider": "wechat-openid", "value": "o-123"}]},
    )

    response = operator_client.delete(f"{MEMBERS}{member.pk}/")
    again = operator_client.delete(f"{MEMBERS}{member.pk}/")

    assert response.status_code == 204
    assert again.status_code == 204
    member.refresh_from_db()
    assert member.erased_at is not None
    assert member.display_name == "Erased member"
    assert member.email == ""
    assert member.external_id == f"erased:{member.pk}"
    assert member.tier_id == "basic"
    assert not Identity.objects.filter(member=member).exists()
    assert not MemberTag.objects.filter(member=member).exists()
    audit = TagChange.objects.get(member=member)
    assert (audit.action, audit.old_value, audit.new_value) == ("added", None, None)
    detail = operator_client.get(f"{MEMBERS}{member.pk}/").json()
    assert detail["erased_at"] is not None


def test_identities_put_replaces_set_and_rejects_identity_of_another_member(
    operator_client, member, other_member
):
    url = f"{MEMBERS}{member.pk}/identities/"
    operator_client.put(
        f"{MEMBERS}{other_member.pk}/identities/",
        {"identities": [{"provider": "unionid", "value": "u-1"}]},
    )

    first = operator_client.put(
        url,
        {
            "identities": [
                {"provider": "openid", "value": "o-1"},
                {"provider": "shop", "value": "c-9"},
            ]
        },
    )
    second = operator_client.put(url, {"identities": [{"provider": "openid", "value": "o-1"}]})
    taken = operator_client.put(
        url,
        {
            "identities": [
                {"provider": "openid", "value": "o-2"},
                {"provider": "unionid", "value": "u-1"},
            ]
        },
    )

    assert [i["value"] for i in first.json()] == ["o-1", "c-9"]
    assert [i["value"] for i in second.json()] == ["o-1"]
    problem = assert_problem(taken, 409, "identity_taken")
    assert problem["errors"][0]["attr"] == "identities.1"
    assert list(Identity.objects.filter(member=member).values_list("value", flat=True)) == ["o-1"]


def test_unknown_route_is_problem_404(operator_client):
    response = operator_client.get("/api/v1/nothing-here/")

    assert_problem(response, 404, "not_found")


def test_member_id_that_is_not_a_member_is_404(operator_client):
    response = operator_client.get(f"{MEMBERS}00000000-0000-0000-0000-000000000000/")

    assert_problem(response, 404, "not_found")
