"""Concurrent runs of the daily alert job record and announce each alert once."""

import threading
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest
from django.db import close_old_connections, connection

from analytics.models import CommunityAlert
from analytics.services import health_alerts_publish
from core.models import OutboxEvent
from members.models import Member
from tests.analytics.conftest import NOW


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_racing_runs_publish_each_alert_once(
    person: Callable[..., Member], active_on: Callable[..., None]
) -> None:
    member = person(last_interaction_at=NOW - timedelta(days=1))
    active_on(member, date(2026, 3, 2), posts=2)
    active_on(member, date(2026, 3, 9), posts=1)
    threads = 6
    barrier = threading.Barrier(threads)
    results: list[Any] = [None] * threads

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = health_alerts_publish(at=NOW + timedelta(seconds=index))
        except Exception as error:
            results[index] = error
        finally:
            connection.close()

    workers = [threading.Thread(target=run, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    close_old_connections()

    assert not [result for result in results if isinstance(result, Exception)], results
    recorded = sorted(alert.code for result in results for alert in result)
    assert recorded == ["post_density_drop", "shares_per_day_low"]
    assert CommunityAlert.objects.count() == 2
    assert OutboxEvent.objects.filter(event_type="community.alert").count() == 2
