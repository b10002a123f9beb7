"""Redemption races on PostgreSQL (reliability.md L11): threads released together by a barrier,
each request on its own connection. Every test ends with the ledger audit, I12 included."""

from collections import Counter

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from core.actors import system_actor
from core.api.tokens import member_token_pair, operator_token_pair
from members.models import Member
from members.services import member_create
from rewards.models import PointsAccount, PointsEntry, Redemption, Reward
from rewards.selectors import ledger_violations, system_account_balances
from rewards.services.catalog import redemption_create, reward_create
from rewards.services.ledger import points_award
from tests.rewards.test_concurrency import _race

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ACTOR = system_actor("tests")


def _client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _members(count: int, points: int) -> list[Member]:
    now = timezone.now()
    members = [
        member_create(external_id=f"race-{n:03d}", display_name="R", actor=ACTOR, at=now)
        for n in range(count)
    ]
    for member in members:
        points_award(member=member, points=points, reason="manual", actor=ACTOR, at=now)
    return members


def test_100_members_race_for_10_items(audited_after_race):
    members = _members(100, 100)
    reward = reward_create(name="Trial", points_cost=40, stock=10, actor=ACTOR, at=timezone.now())
    tokens = [member_token_pair(member.pk)["access"] for member in members]
    url = f"/api/v1/rewards/{reward.pk}/redemptions/"

    responses = _race(
        100, lambda n: _client(tokens[n]).post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY=f"k{n}")
    )

    statuses = Counter(response.status_code for response in responses)
    assert statuses == {201: 10, 409: 90}
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"out_of_stock"}
    reward.refresh_from_db()
    assert (reward.stock, reward.redeemed_count) == (0, 10)
    winners = {r.json()["member"] for r in responses if r.status_code == 201}
    balances = dict(PointsAccount.objects.values_list("member_id", "available"))
    assert sorted(balances[member.pk] for member in members) == [60] * 10 + [100] * 90
    assert {str(m) for m, available in balances.items() if available == 60} == winners
    assert PointsEntry.objects.filter(kind="redeem").count() == 10
    assert Redemption.objects.count() == 10
    assert system_account_balances()["redemption"] == 400


def test_one_member_races_a_limit_1_reward(audited_after_race):
    (member,) = _members(1, 1000)
    reward = reward_create(
        name="Once", points_cost=10, per_member_limit=1, actor=ACTOR, at=timezone.now()
    )
    token = member_token_pair(member.pk)["access"]

    responses = _race(
        10,
        lambda n: _client(token).post(
            "/api/v1/me/redemptions/", {"reward": reward.pk}, format="json"
        ),
    )

    statuses = Counter(response.status_code for response in responses)
    assert statuses == {201: 1, 409: 9}
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"limit_reached"}
    assert PointsAccount.objects.get(pk=member.pk).available == 990
    assert Redemption.objects.count() == 1


def test_concurrent_cancels_refund_once_and_restore_stock_once(superuser, audited_after_race):
    (member,) = _members(1, 100)
    reward = reward_create(name="Seat", points_cost=30, stock=1, actor=ACTOR, at=timezone.now())
    redemption = redemption_create(member=member, reward=reward, actor=ACTOR, at=timezone.now())
    member_token = member_token_pair(member.pk)["access"]
    operator_token = operator_token_pair(superuser)["access"]
    url = f"/api/v1/redemptions/{redemption.pk}/"

    responses = _race(
        20,
        lambda n: _client(member_token if n % 2 else operator_token).patch(
            url, {"status": "cancelled", "reason": "race"}, format="json"
        ),
    )

    statuses = Counter(response.status_code for response in responses)
    assert statuses == {200: 1, 409: 19}
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"already_cancelled"}
    reward.refresh_from_db()
    assert (reward.stock, reward.redeemed_count) == (1, 0)
    assert PointsAccount.objects.get(pk=member.pk).available == 100
    assert PointsEntry.objects.filter(member=member, kind="reverse").count() == 1


def test_fulfil_and_cancel_race_one_wins(superuser, audited_after_race):
    (member,) = _members(1, 100)
    reward = reward_create(name="Seat", points_cost=30, stock=5, actor=ACTOR, at=timezone.now())
    redemption = redemption_create(member=member, reward=reward, actor=ACTOR, at=timezone.now())
    member_token = member_token_pair(member.pk)["access"]
    operator_token = operator_token_pair(superuser)["access"]
    url = f"/api/v1/redemptions/{redemption.pk}/"

    responses = _race(
        10,
        lambda n: (
            _client(member_token).patch(url, {"status": "cancelled"}, format="json")
            if n % 2
            else _client(operator_token).patch(url, {"status": "fulfilled"}, format="json")
        ),
    )

    assert Counter(response.status_code for response in responses)[200] == 1
    final = Redemption.objects.get(pk=redemption.pk)
    reward.refresh_from_db()
    available = PointsAccount.objects.get(pk=member.pk).available
    if final.status == "cancelled":
        assert (reward.stock, available) == (5, 100)
    else:
        assert (final.status, reward.stock, available) == ("fulfilled", 4, 70)


def test_redeem_cancel_loops_never_net_points_or_stock(audited_after_race):
    members = _members(10, 100)
    reward = reward_create(name="Loop", points_cost=10, stock=3, actor=ACTOR, at=timezone.now())
    tokens = [member_token_pair(member.pk)["access"] for member in members]

    def loop(n: int) -> None:
        client = _client(tokens[n % 10])
        for _ in range(3):
            created = client.post(f"/api/v1/rewards/{reward.pk}/redemptions/", {}, format="json")
            if created.status_code == 201:
                client.patch(
                    f"/api/v1/redemptions/{created.json()['id']}/",
                    {"status": "cancelled"},
                    format="json",
                )

    _race(10, loop)

    reward.refresh_from_db()
    assert (reward.stock, reward.redeemed_count) == (3, 0)
    assert set(PointsAccount.objects.values_list("available", flat=True)) == {100}


@pytest.fixture
def audited_after_race():
    yield
    assert ledger_violations() == []
    assert Reward.objects.filter(stock__lt=0).count() == 0
