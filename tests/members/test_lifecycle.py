"""Lifecycle stages and scenario triggers across the 7/30/90-day boundaries (time-machine)."""

import io
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import call_command

from core.models import OutboxEvent
from members.lifecycle import lifecycle_advance
from members.models import Member, MemberTag
from members.tasks import lifecycle_advance_task
from rewards.selectors import ledger_violations

T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
EVENTS = "/api/v1/events/"


@pytest.fixture
def shop(make_partner):
    return make_partner("Shop", ["events:write"])[1]


def _post(client, at, *events):
    with time_machine.travel(at, tick=False):
        response = client.post(EVENTS, {"events": list(events)}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["results"]


def _event(event_id, external_id, event_type, at, **properties):
    return {
        "id": event_id,
        "external_id": external_id,
        "type": event_type,
        "occurred_at": at.isoformat(),
        "properties": properties,
    }


def _run_job(at):
    with time_machine.travel(at, tick=False):
        call_command("advance_lifecycle", stdout=io.StringIO(), stderr=io.StringIO())


def _stage(member):
    return Member.objects.values_list("lifecycle_stage", flat=True).get(pk=member.pk)


def _scenarios(member):
    return Counter(
        OutboxEvent.objects.filter(
            event_type="scenario.triggered", aggregate_id=str(member.pk)
        ).values_list("payload__scenario", flat=True)
    )


def _transitions(member):
    return [
        (payload["previous_stage"], payload["stage"])
        for payload in OutboxEvent.objects.filter(
            event_type="member.lifecycle_changed", aggregate_id=str(member.pk)
        )
        .order_by("created_at")
        .values_list("payload", flat=True)
    ]


def _lifecycle_tag(member):
    return MemberTag.objects.values_list("value", flat=True).get(
        member=member, namespace="system", key="lifecycle"
    )


def test_stages_and_scenarios_across_the_7_30_90_day_boundaries(make_member, shop):
    with time_machine.travel(T0 - timedelta(days=20), tick=False):
        ann = make_member("ann")
        bob = make_member("bob")  # never takes part
    _post(
        shop,
        T0,
        _event("a-1", "ann", "post", T0 - timedelta(days=1)),
        _event("a-2", "ann", "comment", T0),
        _event("a-3", "ann", "purchase", T0, amount="100"),
    )
    timeline = []

    for at in (
        T0 + timedelta(days=7) - timedelta(minutes=1),
        T0 + timedelta(days=7),
        T0 + timedelta(days=30) - timedelta(minutes=1),
        T0 + timedelta(days=30),
        T0 + timedelta(days=60),
        T0 + timedelta(days=90) - timedelta(minutes=1),
        T0 + timedelta(days=90),
    ):
        _run_job(at)
        _run_job(at)  # a re-run changes nothing
        timeline.append((_stage(ann), _stage(bob), sorted(_scenarios(ann).elements())))

    assert timeline == [
        ("active", "silent", ["welcome"]),
        ("silent", "silent", ["silent_reminder", "welcome"]),
        ("silent", "dormant", ["silent_reminder", "welcome"]),
        ("dormant", "dormant", ["come_back", "recall_30", "silent_reminder", "welcome"]),
        (
            "dormant",
            "dormant",
            ["come_back", "recall_30", "recall_60", "silent_reminder", "welcome"],
        ),
        (
            "dormant",
            "churned",
            ["come_back", "recall_30", "recall_60", "silent_reminder", "welcome"],
        ),
        (
            "churned",
            "churned",
            ["come_back", "recall_30", "recall_60", "recall_90", "silent_reminder", "welcome"],
        ),
    ]
    assert _transitions(ann) == [
        ("new", "active"),
        ("active", "silent"),
        ("silent", "dormant"),
        ("dormant", "churned"),
    ]
    # Bob's lapses were never caught within a trigger's catch-up window; he never took part.
    assert _scenarios(bob) == Counter()
    assert _transitions(bob) == [("new", "silent"), ("silent", "dormant"), ("dormant", "churned")]
    assert (_lifecycle_tag(ann), _lifecycle_tag(bob)) == ("churned", "churned")
    assert ledger_violations() == []


def test_scenario_payload_carries_the_scenario_and_suggested_benefit(make_member, shop):
    with time_machine.travel(T0 - timedelta(days=1), tick=False):
        ann = make_member("ann")
    _post(shop, T0, _event("a-1", "ann", "post", T0))

    _run_job(T0 + timedelta(days=7, hours=1))

    event = OutboxEvent.objects.get(event_type="scenario.triggered")
    assert event.aggregate_id == str(ann.pk)
    assert event.dedupe_key == f"silent_reminder:{ann.pk}:2026-03-02"
    assert event.payload == {
        "member_id": str(ann.pk),
        "external_id": "ann",
        "scenario": "silent_reminder",
        "suggested_benefit": "checkin_bonus",
        "anchor_at": T0.isoformat(),
    }


def test_a_member_who_lapses_again_is_reminded_again(make_member, shop):
    with time_machine.travel(T0 - timedelta(days=1), tick=False):
        ann = make_member("ann")
    _post(shop, T0, _event("a-1", "ann", "post", T0))
    _run_job(T0 + timedelta(days=7))
    back = T0 + timedelta(days=10)
    _post(shop, back, _event("a-2", "ann", "post", back))

    _run_job(back + timedelta(days=7))
    _run_job(back + timedelta(days=8))

    assert _scenarios(ann) == Counter({"silent_reminder": 2})
    assert _transitions(ann) == [("new", "silent"), ("silent", "active"), ("active", "silent")]


def test_ingestion_reactivates_a_silent_member_at_once(make_member, shop):
    with time_machine.travel(T0 - timedelta(days=20), tick=False):
        ann = make_member("ann")
    _run_job(T0)
    assert _stage(ann) == "silent"
    later = T0 + timedelta(days=3)

    results = _post(shop, later, _event("a-1", "ann", "like", later))

    assert results[0]["status"] == "accepted"
    ann.refresh_from_db()
    assert (ann.lifecycle_stage, ann.previous_lifecycle_stage) == ("active", "silent")
    assert ann.lifecycle_changed_at == later
    assert _transitions(ann) == [("new", "silent"), ("silent", "active")]
    assert _lifecycle_tag(ann) == "active"
    assert ledger_violations() == []


def test_a_login_brings_a_dormant_member_back_to_silent_not_active(make_member, shop):
    with time_machine.travel(T0 - timedelta(days=40), tick=False):
        ann = make_member("ann")
    _run_job(T0)
    assert _stage(ann) == "dormant"

    _post(shop, T0 + timedelta(hours=1), _event("l-1", "ann", "login", T0))

    assert _stage(ann) == "silent"
    assert _transitions(ann) == [("new", "dormant"), ("dormant", "silent")]


def test_a_late_interaction_older_than_7_days_does_not_reactivate(make_member, shop):
    with time_machine.travel(T0 - timedelta(days=20), tick=False):
        ann = make_member("ann")
    _run_job(T0)

    _post(shop, T0, _event("old-1", "ann", "post", T0 - timedelta(days=8)))

    assert _stage(ann) == "silent"


def test_new_members_become_active_after_interacting_on_two_days(make_member, shop):
    with time_machine.travel(T0 - timedelta(days=1), tick=False):
        ann = make_member("ann")

    _post(shop, T0, _event("a-1", "ann", "post", T0), _event("a-2", "ann", "like", T0))
    same_day = _stage(ann)
    _post(shop, T0 + timedelta(days=1), _event("a-3", "ann", "like", T0 + timedelta(days=1)))

    assert (same_day, _stage(ann)) == ("new", "active")


def test_welcome_fires_once_within_24_hours_of_the_first_purchase(make_member, shop):
    with time_machine.travel(T0 - timedelta(days=5), tick=False):
        ann = make_member("ann")
        bob = make_member("bob")

    _post(
        shop,
        T0,
        _event("p-1", "ann", "purchase", T0 - timedelta(hours=23), amount="10"),
        _event("p-2", "ann", "purchase", T0 - timedelta(hours=1), amount="10"),
        _event("p-3", "bob", "purchase", T0 - timedelta(hours=25), amount="10"),
    )
    _post(shop, T0 + timedelta(hours=2), _event("p-4", "ann", "purchase", T0, amount="5"))
    _post(shop, T0 + timedelta(hours=3), _event("p-5", "bob", "purchase", T0, amount="5"))

    welcome = OutboxEvent.objects.get(event_type="scenario.triggered")
    assert welcome.aggregate_id == str(ann.pk)
    assert welcome.payload["suggested_benefit"] == "new_member_coupon"
    assert welcome.payload["anchor_at"] == (T0 - timedelta(hours=23)).isoformat()
    assert _scenarios(bob) == Counter()
    assert ledger_violations() == []


def test_the_job_works_in_chunks_and_skips_erased_members(make_member):
    from core.actors import system_actor
    from members.services import member_erase

    at = T0 - timedelta(days=10)
    members = [make_member(f"m-{n}", at=at) for n in range(5)]
    member_erase(member=members[0], actor=system_actor("tests"), at=at)

    with time_machine.travel(T0, tick=False):
        result = lifecycle_advance(at=T0, chunk_size=2)
        again = lifecycle_advance_task()

    assert (result.changed, result.scenarios_triggered) == (4, 4)
    assert again == 0
    assert [_stage(member) for member in members] == ["new"] + ["silent"] * 4
