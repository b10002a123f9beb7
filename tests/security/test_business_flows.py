"""OWASP API6 (unrestricted access to sensitive business flows), through the API as a script
would drive it: earning from self-posted engagement stops at the daily cap, backdating is
refused, a second check-in the same day earns nothing. (Races on the same flows are in
tests/rewards/test_concurrency.py, tests/rewards/test_catalog_concurrency.py and
tests/security/test_races.py.)"""

from datetime import timedelta

from django.utils import timezone
from rest_framework.test import APIClient

from core.api.tokens import member_token_pair
from members.models import ActivityEvent
from rewards.models import PointsAccount, PointsEntry
from rewards.selectors import ledger_violations

ME_EVENTS = "/api/v1/me/events/"


def _member_client(member) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {member_token_pair(member.pk)['access']}")
    return client


def test_a_script_liking_all_day_earns_no_more_than_the_daily_cap(member):
    client = _member_client(member)
    at = timezone.now().isoformat()

    for batch in range(5):
        events = [{"id": f"like-{batch}-{n}", "type": "like", "occurred_at": at} for n in range(20)]
        response = client.post(ME_EVENTS, {"events": events}, format="json")
        assert response.status_code == 200

    # like: 1 point each, at most 10 a business day (rewards/defaults.py).
    assert ActivityEvent.objects.filter(member=member).count() == 100
    assert PointsAccount.objects.get(pk=member.pk).available == 10
    assert ledger_violations() == []


def test_a_member_cannot_backdate_engagement_to_farm_past_days(member):
    old = (timezone.now() - timedelta(hours=25)).isoformat()

    response = _member_client(member).post(
        ME_EVENTS, {"events": [{"id": "old-1", "type": "post", "occurred_at": old}]}, format="json"
    )

    assert response.status_code == 200
    [result] = response.json()["results"]
    assert (result["status"], result["points_awarded"]) == ("rejected", 0)
    assert not ActivityEvent.objects.filter(member=member).exists()
    assert not PointsEntry.objects.filter(member=member).exists()


def test_a_member_cannot_post_purchases_for_points(member):
    at = timezone.now().isoformat()
    event = {"id": "buy-1", "type": "purchase", "occurred_at": at, "properties": {"amount": 9999}}

    response = _member_client(member).post(ME_EVENTS, {"events": [event]}, format="json")

    [result] = response.json()["results"]
    assert (result["status"], result["reason"]) == ("rejected", "forbidden_type")
    assert not PointsEntry.objects.filter(member=member).exists()


def test_a_second_check_in_the_same_day_earns_nothing(member):
    client = _member_client(member)

    first = client.post("/api/v1/me/check-ins/")
    second = client.post("/api/v1/me/check-ins/")

    assert (first.status_code, first.json()["points_awarded"]) == (201, 5)
    # The repeat answers with the day's check-in; it posts nothing new.
    assert (second.status_code, second.json()) == (200, first.json())
    assert PointsAccount.objects.get(pk=member.pk).available == 5
    assert PointsEntry.objects.filter(member=member).count() == 1
