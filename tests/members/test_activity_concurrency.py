"""Races on PostgreSQL: concurrent batches with the same events, each thread on its own
connection, released together by a barrier. Ends with the ledger audit."""

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import close_old_connections, connection
from django.utils import timezone
from rest_framework.test import APIClient

from core.services import partner_key_issue
from members.models import ActivityEvent, MemberDailyActivity
from rewards.models import DailyEarning, EarningRule, PointsAccount, PointsEntry
from rewards.selectors import ledger_violations

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _race(count, work):
    barrier = threading.Barrier(count)
    results = [None] * count

    def run(index):
        try:
            barrier.wait()
            results[index] = work(index)
        except Exception as error:  # reported by the assertions below
            results[index] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    close_old_connections()
    return results


def test_five_concurrent_batches_with_the_same_events_store_each_once(make_member, make_partner):
    EarningRule.objects.filter(event_type="post").update(daily_cap=60, hourly_limit=None)
    members = [make_member(f"race-{n}") for n in range(4)]
    partner, _ = make_partner("Shop", ["events:write"])
    keys = [partner_key_issue(partner=partner, name=f"k{n}") for n in range(5)]
    now = timezone.now()
    events = [
        {
            "id": f"{member.external_id}-{n}",
            "external_id": member.external_id,
            "type": "post",
            "occurred_at": (now - timedelta(minutes=n)).isoformat(),
        }
        for member in members
        for n in range(5)
    ]

    def post(index):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {keys[index]}")
        return client.post("/api/v1/events/", {"events": events}, format="json")

    responses = _race(5, post)

    assert [response.status_code for response in responses] == [200] * 5
    statuses = Counter(
        (result["id"], result["status"])
        for response in responses
        for result in response.json()["results"]
    )
    assert statuses == Counter(
        {
            (event["id"], status): count
            for event in events
            for status, count in (("accepted", 1), ("duplicate", 4))
        }
    )
    assert ActivityEvent.objects.count() == 20
    # Each member: 5 posts, 3 awarded (20 + 20 + 20 reaches the cap of 60), counted once.
    assert (
        sorted(MemberDailyActivity.objects.values_list("posts", "interactions", "points_earned"))
        == [(5, 5, 60)] * 4
    )
    assert sorted(DailyEarning.objects.values_list("points", "awards_count")) == [(60, 3)] * 4
    assert PointsEntry.objects.count() == 12
    assert sorted(PointsAccount.objects.values_list("available", flat=True)) == [60] * 4
    assert ledger_violations() == []
