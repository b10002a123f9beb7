"""POST members/{id}/promotions/: operators set a tier with a reason and an optional pin; a
pin holds against reassessment; bad input and other roles change nothing."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from core.models import OutboxEvent
from members.models import Member
from tests.helpers import assert_problem
from tiers.models import TierChange

pytestmark = pytest.mark.django_db

START = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)


def _url(member: Member) -> str:
    return f"/api/v1/members/{member.pk}/promotions/"


def test_operator_promotes_with_a_pin_and_the_change_is_recorded(
    make_operator_client, member: Member
) -> None:
    with time_machine.travel(START, tick=False):
        client = make_operator_client("tiers.promote_member")
        response = client.post(
            _url(member), {"tier": "koc", "reason": "Ran the spring campaign", "pin_days": 60}
        )

    assert response.status_code == 201
    body = response.json()
    assert {key: body[key] for key in ("from_tier", "to_tier", "reason", "note")} == {
        "from_tier": "basic",
        "to_tier": "koc",
        "reason": "promotion",
        "note": "Ran the spring campaign",
    }
    assert body["pinned_until"] == "2026-05-01T04:00:00Z"
    assert body["actor"].startswith("operator:")
    assert body["id"] == TierChange.objects.get().pk
    member.refresh_from_db()
    assert (member.tier_id, member.tier_pin_id, member.tier_since) == ("koc", "koc", START)
    event = OutboxEvent.objects.get(event_type="member.tier_changed")
    assert (event.payload["from_tier"], event.payload["to_tier"]) == ("basic", "koc")


def test_a_demotion_is_recorded_as_such(operator_client, member: Member) -> None:
    operator_client.post(_url(member), {"tier": "koc", "reason": "up"})

    response = operator_client.post(_url(member), {"tier": "active", "reason": "Too quiet"})

    assert response.status_code == 201
    assert (response.json()["reason"], response.json()["from_tier"]) == ("demotion", "koc")


def test_a_replay_with_the_same_idempotency_key_promotes_once(
    operator_client, member: Member
) -> None:
    body = {"tier": "active", "reason": "Helpful"}

    first = operator_client.post(_url(member), body, HTTP_IDEMPOTENCY_KEY="promo-1")
    replay = operator_client.post(_url(member), body, HTTP_IDEMPOTENCY_KEY="promo-1")
    changed = operator_client.post(
        _url(member), {**body, "tier": "koc"}, HTTP_IDEMPOTENCY_KEY="promo-1"
    )

    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay.json() == first.json()
    assert replay["Idempotent-Replayed"] == "true"
    assert_problem(changed, 422, "idempotency_key_reused")
    assert TierChange.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "attr"),
    [
        ({"tier": "legend", "reason": "r"}, "tier"),
        ({"tier": "koc", "reason": "r", "pin_days": -5}, "pin_days"),
        ({"tier": "koc", "reason": "r", "pin_days": 0}, "pin_days"),
        ({"tier": "koc", "reason": "r", "pin_days": 100_000}, "pin_days"),
        ({"tier": "koc", "reason": "r", "pin_days": "soon"}, "pin_days"),
        ({"tier": "koc"}, "reason"),
        ({"tier": "koc", "reason": "   "}, "reason"),
        ({"tier": "koc", "reason": "r", "since": "2000-01-01T00:00:00Z"}, "since"),
    ],
)
def test_bad_promotions_are_400_and_change_nothing(operator_client, member: Member, body, attr):
    response = operator_client.post(_url(member), body)

    problem = assert_problem(response, 400)
    assert [error["attr"] for error in problem["errors"]] == [attr]
    member.refresh_from_db()
    assert (member.tier_id, member.tier_pin_id) == ("basic", None)
    assert not TierChange.objects.exists()
    assert not OutboxEvent.objects.exists()


def test_promoting_to_the_tier_held_without_a_pin_is_409(operator_client, member: Member) -> None:
    operator_client.post(_url(member), {"tier": "active", "reason": "up"})

    response = operator_client.post(_url(member), {"tier": "active", "reason": "again"})

    assert_problem(response, 409, "conflict")
    assert TierChange.objects.count() == 1


@pytest.mark.parametrize("role", ["member", "partner", "operator without permission"])
def test_only_operators_with_the_permission_promote(
    role, member: Member, member_client, make_partner, make_operator_client
) -> None:
    client = {
        "member": lambda: member_client,
        "partner": lambda: make_partner("Shop")[1],
        "operator without permission": lambda: make_operator_client("members.change_member"),
    }[role]()

    response = client.post(_url(member), {"tier": "kol", "reason": "me"})

    assert_problem(response, 403)
    member.refresh_from_db()
    assert member.tier_id == "basic"
    assert not TierChange.objects.exists()


def test_unknown_member_is_404(operator_client) -> None:
    response = operator_client.post(
        "/api/v1/members/01900000-0000-7000-8000-000000000000/promotions/",
        {"tier": "kol", "reason": "r"},
    )

    assert_problem(response, 404)


def test_a_pin_holds_the_tier_against_reassessment_until_it_ends(
    make_member: Callable[..., Member], make_operator_client, django_capture_on_commit_callbacks
) -> None:
    pinned = make_member("pinned", at=START - timedelta(days=5))
    unpinned = make_member("unpinned", at=START - timedelta(days=5))

    def reassess(day: int) -> None:
        with time_machine.travel(START + timedelta(days=day), tick=False):
            client = make_operator_client("tiers.run_reassessment")
            with django_capture_on_commit_callbacks(execute=True):
                response = client.post("/api/v1/tier-reassessments/", {})
            assert response.status_code == 202, response.content[:300]

    with time_machine.travel(START, tick=False):
        operator = make_operator_client("tiers.promote_member")
        operator.post(_url(pinned), {"tier": "koc", "reason": "Campaign", "pin_days": 90})
        operator.post(_url(unpinned), {"tier": "koc", "reason": "Campaign"})
    # Neither meets koc's maintenance: grace starts now and ends 30 days later.
    reassess(0)
    assert set(Member.objects.values_list("tier_id", flat=True)) == {"koc"}

    reassess(40)  # grace over: the pin holds, the unpinned member goes down one rank

    tiers = dict(Member.objects.values_list("external_id", "tier_id"))
    assert tiers == {"pinned": "koc", "unpinned": "active"}
    reassess(95)  # the pin has ended: one rank down
    assert Member.objects.get(pk=pinned.pk).tier_id == "active"
    assert TierChange.objects.filter(member=pinned).latest("created_at").reason == "pin_expired"
