"""The rewards catalog: rewards, redemption, fulfilment and cancellation, through the API."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from core.actors import system_actor
from core.api.tokens import member_token_pair
from core.models import OutboxEvent
from rewards.models import PointsAccount, PointsEntry, Redemption, Reward
from rewards.services.catalog import redemption_create, reward_create
from rewards.services.ledger import points_award

pytestmark = pytest.mark.django_db

ACTOR = system_actor("tests")


def _reward(**fields) -> Reward:
    values = {"name": "Trial kit", "points_cost": 30, **fields}
    return reward_create(actor=ACTOR, at=timezone.now(), **values)


def _give(member, points: int) -> None:
    points_award(member=member, points=points, reason="manual", actor=ACTOR, at=timezone.now())


def _state(member, reward) -> tuple:
    """Everything a refused redemption must leave as it was."""
    reward.refresh_from_db()
    return (
        PointsAccount.objects.filter(pk=member.pk).values_list("available", flat=True).first(),
        PointsEntry.objects.filter(member=member).count(),
        Redemption.objects.count(),
        reward.stock,
        reward.redeemed_count,
        OutboxEvent.objects.filter(event_type__startswith="redemption.").count(),
    )


def test_operator_creates_a_reward(operator_client, audited):
    response = operator_client.post(
        "/api/v1/rewards/",
        {"name": "Event seat", "points_cost": 200, "stock": 5, "min_tier": "koc"},
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["name"], body["points_cost"], body["stock"], body["min_tier"]) == (
        "Event seat",
        200,
        5,
        "koc",
    )
    assert (body["redeemable"], body["reasons"]) == (None, [])
    assert Reward.objects.get(pk=body["id"]).redeemed_count == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "X", "points_cost": 0}, "points_cost"),
        ({"name": "X", "points_cost": 5, "stock": -1}, "stock"),
        ({"name": "X", "points_cost": 5, "min_tier": "nope"}, "min_tier"),
        ({"name": "X", "points_cost": 5, "balance": 3}, "balance"),
        (
            {
                "name": "X",
                "points_cost": 5,
                "available_from": "2030-01-02T00:00:00Z",
                "available_until": "2030-01-01T00:00:00Z",
            },
            "available_until",
        ),
    ],
)
def test_invalid_reward_is_400_and_creates_nothing(operator_client, body, field):
    response = operator_client.post("/api/v1/rewards/", body, format="json")

    assert response.status_code == 400
    assert field in response.content.decode()
    assert Reward.objects.count() == 0


def test_operator_edits_a_reward(operator_client):
    reward = _reward(stock=3)

    response = operator_client.patch(
        f"/api/v1/rewards/{reward.pk}/", {"stock": 8, "is_active": False}, format="json"
    )

    assert response.status_code == 200
    reward.refresh_from_db()
    assert (reward.stock, reward.is_active) == (8, False)


def test_member_redeems_points_and_stock_leave_together(member, member_client, audited):
    _give(member, 100)
    reward = _reward(stock=2)

    response = member_client.post(
        f"/api/v1/rewards/{reward.pk}/redemptions/", {}, format="json", HTTP_IDEMPOTENCY_KEY="r1"
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["status"], body["points"], body["member"]) == ("requested", 30, str(member.pk))
    reward.refresh_from_db()
    assert (reward.stock, reward.redeemed_count) == (1, 1)
    assert PointsAccount.objects.get(pk=member.pk).available == 70
    entry = PointsEntry.objects.get(pk=body["redeem_entry"])
    assert (entry.kind, entry.points, entry.reason, entry.counter_account, entry.reference) == (
        "redeem",
        -30,
        "redemption",
        "redemption",
        f"redemption:{body['id']}",
    )
    assert OutboxEvent.objects.filter(event_type="redemption.created").count() == 1


def test_unlimited_stock_stays_unlimited(member, member_client, audited):
    _give(member, 100)
    reward = _reward(stock=None)

    response = member_client.post("/api/v1/me/redemptions/", {"reward": reward.pk}, format="json")

    assert response.status_code == 201
    reward.refresh_from_db()
    assert (reward.stock, reward.redeemed_count) == (None, 1)


def test_idempotent_replay_creates_one_redemption(member, member_client, audited):
    _give(member, 100)
    reward = _reward()
    url = f"/api/v1/rewards/{reward.pk}/redemptions/"

    first = member_client.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="same")
    second = member_client.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="same")

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json() == second.json()
    assert second["Idempotent-Replayed"] == "true"
    assert Redemption.objects.count() == 1
    assert PointsAccount.objects.get(pk=member.pk).available == 70


@pytest.mark.parametrize(
    ("terms", "points", "code"),
    [
        ({"stock": 0}, 100, "out_of_stock"),
        ({}, 29, "insufficient_points"),
        ({"is_active": False}, 100, "not_available"),
        ({"min_tier": "koc"}, 100, "tier_too_low"),
        ({"required_benefit": "new_product_trial"}, 100, "benefit_required"),
        ({"available_from": timezone.now() + timedelta(days=1)}, 100, "not_available"),
        (
            {
                "available_from": timezone.now() - timedelta(days=2),
                "available_until": timezone.now() - timedelta(days=1),
            },
            100,
            "not_available",
        ),
    ],
)
def test_refused_redemption_is_409_and_changes_nothing(
    member, member_client, terms, points, code, audited
):
    _give(member, points)
    reward = _reward(**terms)
    before = _state(member, reward)

    response = member_client.post(f"/api/v1/rewards/{reward.pk}/redemptions/", {}, format="json")

    assert response.status_code == 409
    assert response["Content-Type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    assert _state(member, reward) == before


def test_a_benefit_of_the_members_tier_unlocks_a_reward(member, member_client, audited):
    from tiers.services.promotions import tier_promote

    _give(member, 100)
    reward = _reward(required_benefit="new_product_trial")
    url = f"/api/v1/rewards/{reward.pk}/redemptions/"
    assert member_client.post(url, {}, format="json").json()["code"] == "benefit_required"
    # koc's rung gives new-product trials.
    tier_promote(member=member, tier="koc", reason="tests", actor=ACTOR, at=timezone.now())

    assert member_client.post(url, {}, format="json").status_code == 201


def test_per_member_limit(member, member_client, audited):
    _give(member, 100)
    reward = _reward(per_member_limit=1)
    url = f"/api/v1/rewards/{reward.pk}/redemptions/"
    assert member_client.post(url, {}, format="json").status_code == 201
    before = _state(member, reward)

    response = member_client.post(url, {}, format="json")

    assert (response.status_code, response.json()["code"]) == (409, "limit_reached")
    assert _state(member, reward) == before


def test_cancelled_redemption_frees_the_limit(member, member_client, audited):
    _give(member, 100)
    reward = _reward(per_member_limit=1)
    url = f"/api/v1/rewards/{reward.pk}/redemptions/"
    first = member_client.post(url, {}, format="json").json()
    member_client.patch(f"/api/v1/redemptions/{first['id']}/", {"status": "cancelled"})

    response = member_client.post(url, {}, format="json")

    assert response.status_code == 201


def test_member_cannot_redeem_for_someone_else(member, other_member, member_client, audited):
    _give(member, 100)
    _give(other_member, 100)
    reward = _reward()

    response = member_client.post(
        f"/api/v1/rewards/{reward.pk}/redemptions/", {"member": str(other_member.pk)}
    )

    assert response.status_code == 404
    assert Redemption.objects.count() == 0
    assert PointsAccount.objects.get(pk=other_member.pk).available == 100


def test_operator_redeems_on_behalf(member, make_operator_client, audited):
    _give(member, 100)
    reward = _reward()
    client = make_operator_client("rewards.redeem_for_member")

    missing = client.post(f"/api/v1/rewards/{reward.pk}/redemptions/", {}, format="json")
    response = client.post(
        f"/api/v1/rewards/{reward.pk}/redemptions/", {"member": str(member.pk)}, format="json"
    )

    assert missing.status_code == 400
    assert response.status_code == 201
    assert response.json()["actor"].startswith("operator:")
    assert PointsAccount.objects.get(pk=member.pk).available == 70


def test_member_cannot_read_another_members_redemption(member, other_member, audited):
    _give(other_member, 100)
    reward = _reward()
    theirs = redemption_create(member=other_member, reward=reward, actor=ACTOR, at=timezone.now())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {member_token_pair(member.pk)['access']}")

    detail = client.get(f"/api/v1/redemptions/{theirs.pk}/")
    cancel = client.patch(f"/api/v1/redemptions/{theirs.pk}/", {"status": "cancelled"})
    listed = client.get("/api/v1/redemptions/")

    assert (detail.status_code, cancel.status_code) == (404, 404)
    assert listed.json()["results"] == []
    assert Redemption.objects.get(pk=theirs.pk).status == "requested"


def test_member_cancel_refunds_once_and_restores_stock_once(member, member_client, audited):
    _give(member, 100)
    reward = _reward(stock=1)
    created = member_client.post(f"/api/v1/rewards/{reward.pk}/redemptions/", {}).json()
    url = f"/api/v1/redemptions/{created['id']}/"

    first = member_client.patch(url, {"status": "cancelled"}, format="json")
    second = member_client.patch(url, {"status": "cancelled"}, format="json")

    assert first.status_code == 200
    assert (first.json()["status"], first.json()["refund_entry"] is not None) == (
        "cancelled",
        True,
    )
    assert (second.status_code, second.json()["code"]) == (409, "already_cancelled")
    reward.refresh_from_db()
    assert (reward.stock, reward.redeemed_count) == (1, 0)
    assert PointsAccount.objects.get(pk=member.pk).available == 100
    assert PointsEntry.objects.filter(member=member, kind="reverse").count() == 1
    assert OutboxEvent.objects.filter(event_type="redemption.cancelled").count() == 1


def test_fulfil_then_member_cannot_cancel_but_operator_can(
    member, member_client, make_operator_client, audited
):
    _give(member, 100)
    reward = _reward(stock=1)
    created = member_client.post(f"/api/v1/rewards/{reward.pk}/redemptions/", {}).json()
    url = f"/api/v1/redemptions/{created['id']}/"
    fulfiller = make_operator_client("rewards.fulfil_redemption")
    canceller = make_operator_client("rewards.cancel_redemption")

    fulfilled = fulfiller.patch(url, {"status": "fulfilled"}, format="json")
    again = fulfiller.patch(url, {"status": "fulfilled"}, format="json")
    by_member = member_client.patch(url, {"status": "cancelled"}, format="json")
    member_fulfils = member_client.patch(url, {"status": "fulfilled"}, format="json")
    no_reason = canceller.patch(url, {"status": "cancelled"}, format="json")
    by_operator = canceller.patch(url, {"status": "cancelled", "reason": "Returned"}, format="json")

    assert fulfilled.status_code == 200
    assert fulfilled.json()["fulfilled_at"] is not None
    assert (again.status_code, again.json()["code"]) == (409, "already_fulfilled")
    assert (by_member.status_code, by_member.json()["code"]) == (409, "not_cancellable")
    assert member_fulfils.status_code == 403
    assert no_reason.status_code == 400
    assert by_operator.status_code == 200
    assert by_operator.json()["cancel_reason"] == "Returned"
    reward.refresh_from_db()
    assert (reward.stock, reward.redeemed_count) == (1, 0)
    assert PointsAccount.objects.get(pk=member.pk).available == 100


def test_operator_needs_the_permission_of_the_status(member, make_operator_client, audited):
    _give(member, 100)
    redemption = redemption_create(member=member, reward=_reward(), actor=ACTOR, at=timezone.now())
    url = f"/api/v1/redemptions/{redemption.pk}/"
    fulfiller = make_operator_client("rewards.fulfil_redemption")

    response = fulfiller.patch(url, {"status": "cancelled", "reason": "x"}, format="json")

    assert response.status_code == 403
    assert Redemption.objects.get(pk=redemption.pk).status == "requested"


def test_member_sees_what_they_can_redeem_and_why_not(member, member_client):
    _give(member, 50)
    now = timezone.now()
    ok = _reward(name="ok", points_cost=50)
    _reward(name="pricey", points_cost=51)
    _reward(name="gone", stock=0)
    _reward(name="koc only", min_tier="koc")
    _reward(name="later", available_from=now + timedelta(days=1))
    _reward(name="hidden", is_active=False)
    _reward(
        name="ended",
        available_until=now - timedelta(days=1),
        available_from=now - timedelta(days=9),
    )
    once = _reward(name="once", per_member_limit=1, points_cost=1)
    redemption_create(member=member, reward=once, actor=ACTOR, at=now)

    body = member_client.get("/api/v1/me/rewards/").json()
    same = member_client.get("/api/v1/rewards/").json()

    reasons = {row["name"]: (row["redeemable"], row["reasons"]) for row in body["results"]}
    assert reasons == {
        "ok": (False, ["points"]),  # 49 left after the redemption of "once"
        "pricey": (False, ["points"]),
        "gone": (False, ["stock"]),
        "koc only": (False, ["tier"]),
        "later": (False, ["window"]),
        "once": (False, ["limit"]),
    }
    assert same["results"] == body["results"]
    assert ok.pk in {row["id"] for row in body["results"]}


def test_member_does_not_see_an_inactive_reward(member_client):
    reward = _reward(is_active=False)

    response = member_client.get(f"/api/v1/rewards/{reward.pk}/")

    assert response.status_code == 404


def test_redemption_list_filters(member, other_member, operator_client):
    _give(member, 100)
    _give(other_member, 100)
    first, second = _reward(name="a"), _reward(name="b")
    mine = redemption_create(member=member, reward=first, actor=ACTOR, at=timezone.now())
    redemption_create(member=other_member, reward=second, actor=ACTOR, at=timezone.now())

    by_member = operator_client.get(f"/api/v1/redemptions/?member={member.pk}").json()
    by_reward = operator_client.get(f"/api/v1/redemptions/?reward={second.pk}").json()
    by_status = operator_client.get("/api/v1/redemptions/?status=cancelled").json()
    everything = operator_client.get("/api/v1/redemptions/").json()

    assert [row["id"] for row in by_member["results"]] == [str(mine.pk)]
    assert [row["reward_name"] for row in by_reward["results"]] == ["b"]
    assert by_status["results"] == []
    assert len(everything["results"]) == 2


@pytest.mark.parametrize("rows", [1, 50])
def test_list_query_counts_do_not_grow(
    rows, make_member, member, member_client, operator_client, django_assert_num_queries
):
    _give(member, 10_000)
    rewards = [_reward(name=f"r{n}", points_cost=1, per_member_limit=5) for n in range(rows)]
    for reward in rewards:
        redemption_create(member=member, reward=reward, actor=ACTOR, at=timezone.now())

    # Member: auth-free JWT, the member's state (points and tier, benefits: 3), the page (1).
    with django_assert_num_queries(4):
        assert len(member_client.get("/api/v1/me/rewards/").json()["results"]) == rows
    with django_assert_num_queries(4):
        assert len(member_client.get("/api/v1/rewards/").json()["results"]) == rows
    with django_assert_num_queries(1):
        assert len(member_client.get("/api/v1/redemptions/").json()["results"]) == rows
    # Operator: the user (with permissions, cached after the first request), then the page.
    with django_assert_num_queries(2):
        assert len(operator_client.get("/api/v1/redemptions/").json()["results"]) == rows
    with django_assert_num_queries(1):
        assert len(operator_client.get("/api/v1/rewards/").json()["results"]) == rows


def test_me_endpoints_are_for_members_only(operator_client, partner_client):
    for client in (operator_client, partner_client):
        assert client.get("/api/v1/me/rewards/").status_code == 403
        assert client.post("/api/v1/me/redemptions/", {"reward": 1}).status_code == 403


def test_admin_fulfils_and_cancels_through_the_services(client, superuser, member, audited):
    _give(member, 100)
    reward = _reward(stock=2)
    first = redemption_create(member=member, reward=reward, actor=ACTOR, at=timezone.now())
    second = redemption_create(member=member, reward=reward, actor=ACTOR, at=timezone.now())
    client.force_login(superuser)
    url = "/admin/rewards/redemption/"

    client.post(url, {"action": "fulfil", "_selected_action": [str(first.pk)]})
    form = client.post(url, {"action": "cancel", "_selected_action": [str(second.pk)]})
    client.post(
        url,
        {"action": "cancel", "_selected_action": [str(second.pk)], "apply": "1", "reason": "Oops"},
    )

    assert form.status_code == 200
    assert b"Cancel and refund" in form.content
    assert Redemption.objects.get(pk=first.pk).status == "fulfilled"
    cancelled = Redemption.objects.get(pk=second.pk)
    assert (cancelled.status, cancelled.cancel_reason) == ("cancelled", "Oops")
    reward.refresh_from_db()
    assert (reward.stock, reward.redeemed_count) == (1, 1)
    assert PointsAccount.objects.get(pk=member.pk).available == 70


def test_admin_creates_and_edits_a_reward_through_the_service(client, superuser):
    client.force_login(superuser)

    client.post(
        "/admin/rewards/reward/add/",
        {"name": "Tote", "points_cost": 12, "stock": 4, "is_active": "on"},
    )
    reward = Reward.objects.get(name="Tote")
    client.post(
        f"/admin/rewards/reward/{reward.pk}/change/",
        {"name": "Tote bag", "points_cost": 12, "stock": 9, "is_active": "on"},
    )

    reward.refresh_from_db()
    assert (reward.name, reward.stock, reward.redeemed_count) == ("Tote bag", 9, 0)
    assert reward.created_at is not None
