"""OWASP API3 (broken object property level authorization): mass assignment and excessive data
exposure. Every request body the schema documents rejects unknown fields; the fields that carry
state (tier, balance, versions) cannot be set through any body; everything a member token can
read (every member GET, generated from the URL resolver) carries no internal or secret field
and nothing of another member."""

import json

import pytest
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from rest_framework import serializers
from rest_framework.test import APIClient

from core.actors import system_actor
from core.api.serializers import StrictInputSerializer
from core.api.tokens import member_token_pair
from members.models import Member
from rewards.models import PointsAccount, PointsEntry, Redemption, Reward
from rewards.services.catalog import reward_create
from rewards.services.ledger import points_award
from tests.helpers import assert_problem
from tests.security.routes import UNSAFE, api_operations
from tests.security.test_function_level_access import _row_counts
from tests.security.test_object_level_access import _values

# Reviewed: the one body that is a free-form document by design (a credential to verify, parsed
# with its own size and depth limits in the view).
FREE_FORM_BODIES = {"POST /api/v1/credentials/verifications/"}
# Never in anything a member can read.
INTERNAL_FIELDS = {
    "tier_version",
    "password",
    "secret",
    "hashed_key",
    "prefix",
    "scopes",
    "is_staff",
    "is_superuser",
    "user_permissions",
    "request_fingerprint",
    "response_body",
    "dedupe_key",
}


def _member_client(member) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {member_token_pair(member.pk)['access']}")
    return client


def _request_serializers() -> list[tuple[str, object]]:
    generator = SchemaGenerator()
    generator._initialise_endpoints()
    found = []
    for path, _, method, callback in generator.endpoints:
        if method not in UNSAFE:
            continue
        serializer = generator.create_view(callback, method).schema.get_request_serializer()
        if isinstance(serializer, serializers.ListSerializer):
            serializer = serializer.child
        if serializer is not None:
            found.append((f"{method} {path}", serializer))
    return found


def test_every_documented_request_body_rejects_unknown_fields():
    lenient = {
        label
        for label, serializer in _request_serializers()
        if not (isinstance(serializer, type) and issubclass(serializer, StrictInputSerializer))
        and not isinstance(serializer, StrictInputSerializer)
    }

    assert lenient == FREE_FORM_BODIES


# --- Mass assignment -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        {"tier": "kol"},
        {"tier_version": 99},
        {"tier_pinned_until": "2099-01-01T00:00:00Z"},
        {"lifecycle_stage": "active"},
        {"points": 1_000_000},
        {"balance": 1_000_000},
        {"available": 1_000_000},
        {"external_id": "hijack"},
        {"id": "00000000-0000-4000-8000-000000000000"},
        {"erased_at": None},
        {"is_staff": True},
    ],
    ids=lambda field: next(iter(field)),
)
def test_a_member_cannot_set_state_on_themselves(member, field):
    before = Member.objects.filter(pk=member.pk).values().get()

    response = _member_client(member).patch("/api/v1/me/", field, format="json")

    problem = assert_problem(response, 400, "validation_error")
    assert [error["attr"] for error in problem["errors"]] == list(field)
    assert Member.objects.filter(pk=member.pk).values().get() == before
    assert not PointsAccount.objects.filter(pk=member.pk, available__gt=0).exists()


@pytest.mark.parametrize(
    "field",
    [{"tier": "kol"}, {"tier_version": 9}, {"points": 500}, {"lifecycle_stage": "churned"}],
    ids=lambda field: next(iter(field)),
)
def test_an_operator_edit_cannot_set_tier_or_points(operator_client, member, field):
    before = Member.objects.filter(pk=member.pk).values().get()

    response = operator_client.patch(
        f"/api/v1/members/{member.pk}/", {"display_name": "X", **field}, format="json"
    )

    assert_problem(response, 400, "validation_error")
    assert Member.objects.filter(pk=member.pk).values().get() == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/members/{id}/points/awards/", {"points": 5, "balance_after": 10_000}),
        ("/api/v1/members/{id}/points/awards/", {"points": 5, "kind": "adjust"}),
        ("/api/v1/members/{id}/points/awards/", {"points": 5, "member": "{other}"}),
        ("/api/v1/members/{id}/points/deductions/", {"points": 1, "kind": "earn"}),
        ("/api/v1/rewards/", {"name": "Free", "points_cost": 5, "redeemed_count": -100}),
        ("/api/v1/members/{id}/promotions/", {"tier": "koc", "reason": "r", "tier_version": 0}),
    ],
)
def test_operator_bodies_cannot_smuggle_state(operator_client, member, other_member, path, body):
    path = path.format(id=member.pk)
    body = {key: str(value).format(other=other_member.pk) for key, value in body.items()}
    before = _row_counts()

    response = operator_client.post(path, body, format="json")

    assert_problem(response, 400, "validation_error")
    assert _row_counts() == before


@pytest.mark.parametrize(
    "body",
    [
        {"reward": "{reward}", "points_cost": 0},
        {"reward": "{reward}", "member": "{other}"},
        {"reward": "{reward}", "points": 0},
        {"reward": "{reward}", "status": "fulfilled"},
    ],
    ids=["points_cost", "member", "points", "status"],
)
def test_a_member_cannot_redeem_cheaper_or_for_someone_else(member, other_member, body):
    now = timezone.now()
    points_award(member=member, points=10, reason="manual", actor=system_actor("t"), at=now)
    reward = reward_create(name="Mug", points_cost=10, actor=system_actor("t"), at=now)
    body = {
        key: value.format(reward=reward.pk, other=other_member.pk)
        if isinstance(value, str)
        else value
        for key, value in body.items()
    }

    response = _member_client(member).post("/api/v1/me/redemptions/", body, format="json")

    assert_problem(response, 400, "validation_error")
    assert not Redemption.objects.exists()
    assert PointsAccount.objects.get(pk=member.pk).available == 10
    assert Reward.objects.get(pk=reward.pk).redeemed_count == 0


def test_a_partner_cannot_create_a_webhook_for_another_partner_or_choose_its_secret(
    make_partner, fake_dns
):
    other, _ = make_partner("Other", scopes=["webhooks:manage"])
    _, client = make_partner("Shop", scopes=["webhooks:manage"])
    base = {"url": "https://hooks.example.com/x", "event_types": ["*"]}

    for extra in ({"partner": other.pk}, {"secret": "chosen"}, {"failure_count": -5}):
        response = client.post("/api/v1/webhooks/", {**base, **extra}, format="json")

        problem = assert_problem(response, 400, "validation_error")
        assert [error["attr"] for error in problem["errors"]] == list(extra)
    assert _row_counts()["core.WebhookSubscription"] == 0
    assert client.post("/api/v1/webhooks/", base, format="json").status_code == 201


# --- Excessive data exposure ----------------------------------------------------------------

MEMBER_READS = [
    operation
    for operation in api_operations()
    if operation.member_may and operation.method == "GET" and not operation.is_public
]


def _keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in _keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in _keys(item)}
    return set()


@pytest.fixture
def neighbour(other_member):
    """Another member with a visible footprint: points, a redemption, a public profile."""
    now = timezone.now()
    actor = system_actor("t")
    Member.objects.filter(pk=other_member.pk).update(
        public_recognition=False, email="neighbour@example.com", phone="+8613800000000"
    )
    points_award(member=other_member, points=30, reason="manual", actor=actor, at=now)
    reward = reward_create(name="Cap", points_cost=5, actor=actor, at=now)
    from rewards.services.catalog import redemption_create

    redemption_create(member=other_member, reward=reward, actor=actor, at=now)
    return other_member


@pytest.mark.parametrize("operation", MEMBER_READS, ids=[op.label for op in MEMBER_READS])
def test_nothing_a_member_reads_is_internal_or_another_members(victim, neighbour, operation):
    member, values = victim
    path = operation.path({**_values(operation, values), "reward_id": values["reward_id"]})

    response = _member_client(member).get(path)

    assert response.status_code == 200, (operation.label, response.content[:300])
    text = response.content.decode()
    assert _keys(json.loads(text)) & INTERNAL_FIELDS == set(), operation.label
    for private in (
        str(neighbour.pk),
        neighbour.external_id,
        "neighbour@example.com",
        "+8613800000000",
    ):
        assert private not in text, (operation.label, private)


def test_api_keys_and_webhook_secrets_are_never_read_back(make_partner, fake_dns):
    _, client = make_partner("Shop", scopes=["webhooks:manage"])
    created = client.post(
        "/api/v1/webhooks/",
        {"url": "https://hooks.example.com/x", "event_types": ["*"]},
        format="json",
    )
    secret = created.json()["secret"]

    listed = client.get("/api/v1/webhooks/").content.decode()
    detail = client.get(f"/api/v1/webhooks/{created.json()['id']}/").content.decode()

    assert created.status_code == 201
    assert secret not in listed
    assert secret not in detail
    assert "secret" not in _keys(json.loads(detail))


def test_an_erased_member_shows_no_personal_data_but_keeps_the_ledger(operator_client, member):
    Member.objects.filter(pk=member.pk).update(email="self@example.com", phone="+8613900000000")
    points_award(
        member=member, points=7, reason="manual", actor=system_actor("t"), at=timezone.now()
    )

    erased = operator_client.delete(f"/api/v1/members/{member.pk}/")
    shown = operator_client.get(f"/api/v1/members/{member.pk}/").content.decode()

    assert erased.status_code == 204
    for personal in ("self@example.com", "+8613900000000", "Self", "member-self"):
        assert personal not in shown
    assert PointsEntry.objects.filter(member=member).count() == 1
