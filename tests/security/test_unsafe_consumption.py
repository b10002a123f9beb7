"""OWASP API10 (unsafe consumption of APIs): what partners send is bounded in size, count,
nesting and type before it is stored: tag keys, values and counts; event properties' keys,
bytes, nesting and shape; identity values. Each refusal is a 400 problem (per item for batch
endpoints) and stores nothing."""

import pytest
from django.utils import timezone

from members.models import ActivityEvent, Identity, MemberTag
from tests.helpers import assert_problem


def _tags_url(member, namespace: str) -> str:
    return f"/api/v1/members/{member.pk}/tags/{namespace}/"


@pytest.mark.parametrize(
    "tags",
    [
        [{"key": "k" * 129}],
        [{"key": "vip", "value": "v" * 257}],
        [{"key": "bad key"}],
        [{"key": "<script>"}],
        [{"key": "vip", "value": {"nested": "object"}}],
        [{"key": f"k{n}"} for n in range(101)],
        "not-a-list",
    ],
    ids=[
        "key-too-long",
        "value-too-long",
        "space",
        "markup",
        "object-value",
        "101-tags",
        "not-a-list",
    ],
)
def test_partner_tags_are_bounded_in_size_count_and_type(make_partner, member, tags):
    shop, client = make_partner("Shop")

    response = client.put(_tags_url(member, shop.namespace), {"tags": tags}, format="json")

    assert_problem(response, 400, "validation_error")
    assert not MemberTag.objects.exists()


def test_tag_sync_items_are_validated_one_by_one(make_partner, member):
    shop, client = make_partner("Shop")
    body = {
        "namespace": shop.namespace,
        "mode": "merge",
        "members": [
            {"external_id": member.external_id, "tags": [{"key": "k" * 129}]},
            {"external_id": member.external_id, "tags": [{"key": f"k{n}"} for n in range(101)]},
        ],
    }

    response = client.post("/api/v1/tag-sync/", body, format="json")

    assert response.status_code == 200
    assert [item["status"] for item in response.json()["results"]] == ["rejected"] * 2
    assert not MemberTag.objects.exists()


def _deep(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "properties",
    [
        {f"k{n}": n for n in range(51)},
        {"blob": "x" * 5000},
        _deep(5),
        {"list": [[[[1]]]]},
        ["not", "an", "object"],
        "a string",
    ],
    ids=["51-keys", "over-4096-bytes", "5-levels", "nested-lists", "list", "string"],
)
def test_event_properties_are_bounded_in_keys_bytes_depth_and_shape(
    partner_client, member, properties
):
    event = {
        "id": "e-1",
        "external_id": member.external_id,
        "type": "post",
        "occurred_at": timezone.now().isoformat(),
        "properties": properties,
    }

    response = partner_client.post("/api/v1/events/", {"events": [event]}, format="json")

    assert response.status_code == 200
    [result] = response.json()["results"]
    assert result["status"] == "rejected", result
    assert result["errors"][0]["attr"].startswith("properties"), result
    assert not ActivityEvent.objects.exists()


def test_properties_at_the_limits_are_accepted(partner_client, member):
    event = {
        "id": "e-1",
        "external_id": member.external_id,
        "type": "post",
        "occurred_at": timezone.now().isoformat(),
        "properties": {**_deep(4), **{f"k{n}": n for n in range(49)}},
    }

    response = partner_client.post("/api/v1/events/", {"events": [event]}, format="json")

    assert response.json()["results"][0]["status"] == "accepted"
    assert ActivityEvent.objects.get().properties["a"]["a"]["a"] == {"leaf": 1}


@pytest.mark.parametrize(
    "identities",
    [
        [{"provider": "openid", "value": "v" * 256}],
        [{"provider": "bad provider", "value": "x"}],
        [{"provider": "openid", "value": f"o-{n}"} for n in range(51)],
    ],
    ids=["value-too-long", "provider-not-a-slug", "51-identities"],
)
def test_identities_are_bounded(partner_client, member, identities):
    response = partner_client.put(
        f"/api/v1/members/{member.pk}/identities/", {"identities": identities}, format="json"
    )

    assert_problem(response, 400, "validation_error")
    assert not Identity.objects.exists()
