"""Tags: namespace isolation, replace per namespace, bulk sync with per-item results."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.actors import system_actor
from members.models import Member, MemberTag, TagChange
from members.services import TagInput, tags_replace_namespace
from tests.helpers import assert_problem

SYNC = "/api/v1/tag-sync/"


def _tags_url(member, namespace):
    return f"/api/v1/members/{member.pk}/tags/{namespace}/"


def test_partner_replaces_its_namespace_and_the_change_is_audited(make_partner, member):
    shop, client = make_partner("Shop")
    client.put(
        _tags_url(member, shop.namespace),
        {"tags": [{"key": "vip"}, {"key": "city", "value": "SH"}]},
    )

    response = client.put(
        _tags_url(member, shop.namespace),
        {"tags": [{"key": "city", "value": "BJ", "category": "shopping"}]},
    )

    assert response.status_code == 200
    assert [(t["key"], t["value"], t["category"]) for t in response.json()] == [
        ("city", "BJ", "shopping")
    ]
    changes = list(
        TagChange.objects.filter(member=member).order_by("id").values_list("key", "action")
    )
    assert changes == [("vip", "added"), ("city", "added"), ("city", "updated"), ("vip", "removed")]
    assert TagChange.objects.filter(actor=f"partner:{shop.pk}").count() == 4


def test_partner_cannot_write_another_partners_or_the_system_namespace(make_partner, member):
    _, shop = make_partner("Shop")
    crm, _ = make_partner("CRM")

    other = shop.put(_tags_url(member, crm.namespace), {"tags": [{"key": "vip"}]})
    system = shop.put(_tags_url(member, "system"), {"tags": [{"key": "lifecycle:active"}]})
    sync = shop.post(
        SYNC,
        {
            "namespace": crm.namespace,
            "mode": "merge",
            "members": [{"external_id": member.external_id, "tags": [{"key": "x"}]}],
        },
    )

    assert_problem(other, 403, "namespace_forbidden")
    assert_problem(system, 403, "namespace_forbidden")
    assert_problem(sync, 403, "namespace_forbidden")
    assert not MemberTag.objects.exists()


def test_operator_cannot_write_system_or_unknown_namespace(operator_client, member):
    assert_problem(
        operator_client.put(_tags_url(member, "system"), {"tags": []}), 403, "namespace_forbidden"
    )
    assert_problem(
        operator_client.put(_tags_url(member, "nobody"), {"tags": []}), 404, "unknown_namespace"
    )


def test_one_partner_replacing_its_tags_leaves_other_namespaces_alone(make_partner, member):
    shop, shop_client = make_partner("Shop")
    crm, crm_client = make_partner("CRM")
    crm_client.put(_tags_url(member, crm.namespace), {"tags": [{"key": "segment", "value": "b2c"}]})

    shop_client.put(_tags_url(member, shop.namespace), {"tags": []})

    assert list(MemberTag.objects.values_list("namespace", "key")) == [(crm.namespace, "segment")]


def test_expired_tags_are_not_shown_or_matched(operator_client, make_partner, member):
    shop, _ = make_partner("Shop")
    now = timezone.now()
    MemberTag.objects.create(
        member=member,
        namespace=shop.namespace,
        key="old",
        source="api",
        written_by="t",
        synced_at=now,
        created_at=now,
        expires_at=now - timedelta(seconds=1),
    )

    tags = operator_client.get(f"/api/v1/members/{member.pk}/tags/").json()
    found = operator_client.get(f"/api/v1/members/?tag={shop.namespace}:old").json()["results"]

    assert tags == []
    assert found == []


@pytest.mark.parametrize(
    "tags",
    [
        [{"key": "vip"}, {"key": "vip"}],
        [{"key": "bad key"}],
        [{"key": "vip", "category": "mood"}],
        [{"key": "vip", "expires_at": "2000-01-01T00:00:00Z"}],
        [{"key": "vip", "color": "red"}],
        [{"key": "x" * 129}],
    ],
)
def test_bad_tag_bodies_are_400_and_change_nothing(make_partner, member, tags):
    shop, client = make_partner("Shop")

    response = client.put(_tags_url(member, shop.namespace), {"tags": tags})

    assert_problem(response, 400, "validation_error")
    assert not MemberTag.objects.exists()


def test_too_many_tags_is_400(make_partner, member):
    shop, client = make_partner("Shop")

    response = client.put(
        _tags_url(member, shop.namespace), {"tags": [{"key": f"k{n}"} for n in range(101)]}
    )

    assert_problem(response, 400)


def test_sync_reports_each_member_and_unknown_members_are_not_fatal(make_partner, make_member):
    shop, client = make_partner("Shop")
    make_member("a")
    b = make_member("b")
    tags_replace_namespace(
        member=b,
        namespace=shop.namespace,
        tags=[TagInput(key="keep"), TagInput(key="drop")],
        actor=system_actor("t"),
        at=timezone.now(),
    )

    response = client.post(
        SYNC,
        {
            "namespace": shop.namespace,
            "mode": "replace",
            "members": [
                {"external_id": "a", "tags": [{"key": "vip"}]},
                {"external_id": "ghost", "tags": [{"key": "vip"}]},
                {"external_id": "b", "tags": [{"key": "keep"}]},
                {"external_id": "c", "tags": [{"key": "bad key"}]},
                {"external_id": "a", "tags": []},
            ],
        },
    )

    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["external_id"], r["status"]) for r in results] == [
        ("a", "updated"),
        ("ghost", "not_found"),
        ("b", "updated"),
        ("c", "rejected"),
        ("a", "rejected"),
    ]
    assert results[3]["errors"][0]["attr"] == "tags.0.key"
    assert sorted(MemberTag.objects.values_list("member__external_id", "key")) == [
        ("a", "vip"),
        ("b", "keep"),
    ]


def test_merge_adds_and_updates_but_removes_nothing(make_partner, make_member):
    shop, client = make_partner("Shop")
    make_member("a")
    body = {
        "namespace": shop.namespace,
        "mode": "merge",
        "members": [{"external_id": "a", "tags": [{"key": "x"}]}],
    }
    client.post(SYNC, body)

    body["members"][0]["tags"] = [{"key": "y", "value": "1"}]
    response = client.post(SYNC, body)

    assert response.json()["results"][0]["status"] == "updated"
    assert sorted(MemberTag.objects.values_list("key", flat=True)) == ["x", "y"]


def test_sync_replay_is_unchanged(make_partner, make_member):
    shop, client = make_partner("Shop")
    make_member("a")
    body = {
        "namespace": shop.namespace,
        "mode": "replace",
        "members": [{"external_id": "a", "tags": [{"key": "x"}]}],
    }
    client.post(SYNC, body)
    audit_rows = TagChange.objects.count()

    again = client.post(SYNC, body)

    assert again.json()["results"][0]["status"] == "unchanged"
    assert TagChange.objects.count() == audit_rows


def test_sync_batch_limit_is_1000(make_partner, db):
    shop, client = make_partner("Shop")
    members = [{"external_id": f"m{n}", "tags": []} for n in range(1001)]

    response = client.post(SYNC, {"namespace": shop.namespace, "mode": "merge", "members": members})

    problem = assert_problem(response, 400)
    assert problem["errors"][0]["attr"] == "members"


def _sync_members(client, namespace, count, value):
    body = {
        "namespace": namespace,
        "mode": "replace",
        "members": [
            {
                "external_id": f"bulk-{n}",
                "tags": [{"key": "tier", "value": value}, {"key": f"n{n % 3}"}],
            }
            for n in range(count)
        ],
    }
    with CaptureQueriesContext(connection) as queries:
        response = client.post(SYNC, body)
    assert response.status_code == 200, response.content[:300]
    return len(queries.captured_queries), response.json()["results"]


@pytest.mark.postgres
def test_sync_of_1000_members_uses_as_many_queries_as_sync_of_10(make_partner):
    shop, client = make_partner("Shop")
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

    client.get("/api/v1/members/?page_size=1")  # warm-up: the partner's key lookup gets cached
    small_create, _ = _sync_members(client, shop.namespace, 10, "a")
    large_create, results = _sync_members(client, shop.namespace, 1000, "a")
    large_update, _ = _sync_members(client, shop.namespace, 1000, "b")

    assert large_create == small_create
    assert large_update <= large_create
    statuses = [result["status"] for result in results]
    assert statuses == ["unchanged"] * 10 + ["updated"] * 990
    assert MemberTag.objects.count() == 2000
