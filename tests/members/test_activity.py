"""Event ingestion (the service): statuses, duplicates, daily rollups, activity times, earning."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction

from core.actors import Actor, ActorKind
from core.models import OutboxEvent
from members.activity import EventInput, EventStatus, RejectReason, events_ingest
from members.models import ActivityEvent, EventType, Member, MemberDailyActivity
from rewards.models import DailyEarning, EarningRule, PointsEntry
from rewards.selectors import ledger_violations
from rewards.services.earning import checkin_create

NOW = datetime(2026, 5, 10, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
SHOP = Actor(kind=ActorKind.PARTNER, partner_id=1, partner_namespace="shop")


def _ingest(items, at=NOW, actor=SHOP):
    with transaction.atomic():
        return events_ingest(items=items, actor=actor, at=at)


def _event(event_id, event_type="post", occurred_at=NOW, external_id="ann", **properties):
    return EventInput(event_id, event_type, occurred_at, external_id, properties)


def _rollups():
    return {
        (row.member.external_id, row.business_date): row
        for row in MemberDailyActivity.objects.select_related("member")
    }


def _state():
    """Everything ingestion writes, for before/after comparisons."""
    return (
        sorted(ActivityEvent.objects.values_list("source", "event_id", "points_awarded")),
        sorted(MemberDailyActivity.objects.values_list("member_id", "business_date", "posts")),
        sorted(PointsEntry.objects.values_list("reference", "points")),
        OutboxEvent.objects.count(),
        sorted(
            Member.objects.values_list("pk", "lifecycle_stage", "last_activity_at", "updated_at")
        ),
    )


@pytest.fixture
def ann(make_member):
    return make_member("ann", at=NOW - timedelta(days=100))


def test_each_item_gets_its_status_and_reason(ann):
    items = [
        _event("e-1"),
        _event("e-1", occurred_at=NOW - timedelta(minutes=1)),
        _event("e-2", external_id="nobody"),
        _event("e-3", event_type="dance"),
        _event("e-4", occurred_at=NOW - timedelta(days=30, seconds=1)),
        _event("e-5", occurred_at=NOW + timedelta(minutes=5, seconds=1)),
        _event("e-6", event_type="purchase", amount="12.345"),
        _event("e-7", event_type="purchase"),
        _event("e-8", event_type="purchase", amount="10", currency="rmb"),
        _event("e-9", event_type="purchase", amount=-1),
        _event("e-10", occurred_at=NOW - timedelta(days=30)),
        _event("e-11", occurred_at=NOW + timedelta(minutes=5)),
    ]

    results = _ingest(items)

    assert [(r.event_id, r.status, r.reason) for r in results] == [
        ("e-1", EventStatus.ACCEPTED, None),
        ("e-1", EventStatus.DUPLICATE, None),
        ("e-2", EventStatus.REJECTED, RejectReason.UNKNOWN_MEMBER),
        ("e-3", EventStatus.REJECTED, RejectReason.UNKNOWN_TYPE),
        ("e-4", EventStatus.REJECTED, RejectReason.OUT_OF_ORDER),
        ("e-5", EventStatus.REJECTED, RejectReason.IN_THE_FUTURE),
        ("e-6", EventStatus.REJECTED, RejectReason.BAD_FIELD),
        ("e-7", EventStatus.REJECTED, RejectReason.BAD_FIELD),
        ("e-8", EventStatus.REJECTED, RejectReason.BAD_FIELD),
        ("e-9", EventStatus.REJECTED, RejectReason.BAD_FIELD),
        ("e-10", EventStatus.ACCEPTED, None),
        ("e-11", EventStatus.ACCEPTED, None),
    ]
    assert [r.points_awarded for r in results[:2]] == [20, 20]
    assert results[6].errors == [
        {
            "attr": "properties.amount",
            "pointer": "#/properties/amount",
            "code": "bad_field",
            "detail": "amount has at most 2 decimal places.",
        }
    ]
    assert results[8].errors[0]["attr"] == "properties.currency"
    assert sorted(ActivityEvent.objects.values_list("event_id", flat=True)) == [
        "e-1",
        "e-10",
        "e-11",
    ]
    assert ledger_violations() == []


def test_rejected_events_write_nothing(ann):
    before = _state()

    results = _ingest(
        [
            _event("r-1", external_id="nobody"),
            _event("r-2", event_type="dance"),
            _event("r-3", event_type="purchase", amount="abc"),
            _event("r-4", occurred_at=NOW - timedelta(days=31)),
            _event("r-5", occurred_at=NOW + timedelta(hours=1)),
        ]
    )

    assert {r.status for r in results} == {EventStatus.REJECTED}
    assert _state() == before
    assert (ActivityEvent.objects.count(), MemberDailyActivity.objects.count()) == (0, 0)
    assert (PointsEntry.objects.count(), DailyEarning.objects.count()) == (0, 0)
    assert ledger_violations() == []


def test_replaying_a_batch_changes_nothing(ann, make_member):
    make_member("bob")
    batch = [
        _event("p-1"),
        _event("p-2", event_type="like", external_id="bob"),
        _event("p-3", event_type="purchase", external_id="bob", amount="99.90"),
        _event("p-4", event_type="login", occurred_at=NOW - timedelta(days=2)),
    ]
    first = _ingest(batch)
    before = _state()

    replay = _ingest(batch, at=NOW + timedelta(minutes=10))

    assert [r.status for r in first] == [EventStatus.ACCEPTED] * 4
    assert [r.status for r in replay] == [EventStatus.DUPLICATE] * 4
    assert [r.points_awarded for r in replay] == [r.points_awarded for r in first] == [20, 1, 99, 0]
    assert _state() == before
    assert ledger_violations() == []


def test_the_same_id_from_another_source_is_another_event(ann):
    other = Actor(kind=ActorKind.PARTNER, partner_id=2, partner_namespace="crm")
    _ingest([_event("x-1")])

    results = _ingest([_event("x-1")], actor=other)

    assert results[0].status == EventStatus.ACCEPTED
    assert sorted(ActivityEvent.objects.values_list("source", "event_id")) == [
        ("crm", "x-1"),
        ("shop", "x-1"),
    ]
    assert ledger_violations() == []


def test_late_events_land_in_their_own_business_day(ann):
    _ingest([_event("d-1"), _event("d-2", event_type="like")])

    late = _ingest(
        [
            _event("d-3", occurred_at=NOW - timedelta(days=3)),
            # 15:59:59 UTC is 23:59:59 in Shanghai, 16:00:00 UTC the next Shanghai day.
            _event(
                "d-4", event_type="share", occurred_at=datetime(2026, 5, 5, 15, 59, 59, tzinfo=UTC)
            ),
            _event(
                "d-5", event_type="share", occurred_at=datetime(2026, 5, 5, 16, 0, 0, tzinfo=UTC)
            ),
            _event(
                "d-6",
                event_type="purchase",
                amount="10.05",
                occurred_at=NOW - timedelta(days=3),
            ),
            _event("d-7", event_type="purchase", amount=5, occurred_at=NOW - timedelta(days=3)),
        ],
        at=NOW + timedelta(hours=1),
    )

    assert {r.status for r in late} == {EventStatus.ACCEPTED}
    rollups = _rollups()
    assert sorted(rollups) == [
        ("ann", date(2026, 5, 5)),
        ("ann", date(2026, 5, 6)),
        ("ann", date(2026, 5, 7)),
        ("ann", date(2026, 5, 10)),
    ]
    today = rollups["ann", date(2026, 5, 10)]
    assert (today.posts, today.likes, today.interactions, today.points_earned) == (1, 1, 2, 21)
    three_days_ago = rollups["ann", date(2026, 5, 7)]
    assert (three_days_ago.posts, three_days_ago.purchases, three_days_ago.interactions) == (
        1,
        2,
        1,
    )
    assert three_days_ago.purchase_amount == Decimal("15.05")
    assert three_days_ago.points_earned == 20 + 10 + 5
    assert (rollups["ann", date(2026, 5, 5)].shares, rollups["ann", date(2026, 5, 6)].shares) == (
        1,
        1,
    )
    assert ActivityEvent.objects.get(event_id="d-5").business_date == date(2026, 5, 6)
    assert ledger_violations() == []


def test_activity_times_never_move_backwards_for_late_events(ann):
    _ingest(
        [
            _event("t-1"),
            _event("t-2", event_type="purchase", amount=1),
            _event("t-3", event_type="login"),
        ]
    )

    _ingest(
        [
            _event("t-4", event_type="comment", occurred_at=NOW - timedelta(days=5)),
            _event("t-5", event_type="purchase", amount=1, occurred_at=NOW - timedelta(days=6)),
            _event("t-6", event_type="login", occurred_at=NOW - timedelta(days=7)),
        ],
        at=NOW + timedelta(hours=1),
    )

    ann.refresh_from_db()
    assert ann.first_interaction_at == NOW - timedelta(days=5)
    assert ann.last_interaction_at == NOW
    assert ann.first_purchase_at == NOW - timedelta(days=6)
    assert ann.last_purchase_at == NOW
    assert ann.last_login_at == NOW
    assert ann.last_activity_at == NOW
    assert ledger_violations() == []


def test_points_are_recorded_on_the_event_and_in_the_rollup(ann):
    Member.objects.filter(pk=ann.pk).update(tier_id="koc")  # multiplier 1.25
    EarningRule.objects.filter(event_type="post").update(daily_cap=60, hourly_limit=None)

    results = _ingest(
        [_event(f"c-{n}", occurred_at=NOW - timedelta(minutes=10 - n)) for n in range(4)]
    )

    assert [r.points_awarded for r in results] == [25, 25, 10, 0]
    assert list(
        ActivityEvent.objects.order_by("event_id").values_list("points_awarded", flat=True)
    ) == [25, 25, 10, 0]
    rollup = MemberDailyActivity.objects.get(member=ann)
    assert (rollup.posts, rollup.points_earned) == (4, 60)
    assert DailyEarning.objects.get(member=ann).points == 60
    assert sorted(PointsEntry.objects.values_list("reference", flat=True)) == [
        "event:shop:c-0",
        "event:shop:c-1",
        "event:shop:c-2",
    ]
    assert ledger_violations() == []


def test_daily_caps_count_per_business_day_of_the_event(ann):
    EarningRule.objects.filter(event_type="post").update(daily_cap=40, hourly_limit=None)
    yesterday = NOW - timedelta(days=1)

    results = _ingest(
        [
            _event("y-1", occurred_at=yesterday),
            _event("y-2", occurred_at=yesterday),
            _event("y-3", occurred_at=yesterday),
            _event("n-1"),
            _event("n-2"),
        ]
    )

    assert [r.points_awarded for r in results] == [20, 20, 0, 20, 20]
    assert sorted(DailyEarning.objects.values_list("business_date", "points")) == [
        (date(2026, 5, 9), 40),
        (date(2026, 5, 10), 40),
    ]
    assert ledger_violations() == []


def test_velocity_counts_awards_received_in_the_last_hour(ann):
    EarningRule.objects.filter(event_type="like").update(hourly_limit=2, daily_cap=None)
    _ingest([_event("v-1", event_type="like"), _event("v-2", event_type="like")])

    same_hour = _ingest([_event("v-3", event_type="like")], at=NOW + timedelta(minutes=59))
    next_hour = _ingest(
        [_event("v-4", event_type="like", occurred_at=NOW + timedelta(hours=1))],
        at=NOW + timedelta(hours=1, seconds=1),
    )

    assert same_hour[0].points_awarded == 0
    assert next_hour[0].points_awarded == 1
    assert ledger_violations() == []


def test_custom_types_must_be_registered_and_count_as_other_events(ann):
    EventType.objects.create(code="webinar", name="Webinar", created_at=NOW)
    EventType.objects.create(
        code="page_view", name="Page view", counts_as_interaction=False, created_at=NOW
    )
    EventType.objects.create(code="retired", name="Retired", is_active=False, created_at=NOW)

    results = _ingest(
        [
            _event("w-1", event_type="webinar"),
            _event("w-2", event_type="page_view"),
            _event("w-3", event_type="retired"),
        ]
    )

    assert [(r.status, r.reason) for r in results] == [
        (EventStatus.ACCEPTED, None),
        (EventStatus.ACCEPTED, None),
        (EventStatus.REJECTED, RejectReason.UNKNOWN_TYPE),
    ]
    rollup = MemberDailyActivity.objects.get(member=ann)
    assert (rollup.other_events, rollup.interactions) == (2, 1)
    assert ledger_violations() == []


def test_members_post_only_their_own_allowed_types_and_recent_events(ann, make_member):
    bob = make_member("bob")
    as_bob = Actor(kind=ActorKind.MEMBER, member_id=bob.pk)

    results = _ingest(
        [
            _event("m-1", external_id="ann"),  # ignored: a member posts about themselves
            _event("m-2", event_type="purchase", amount=10),
            _event("m-3", event_type="checkin"),
            _event("m-4", occurred_at=NOW - timedelta(hours=24, seconds=1)),
        ],
        actor=as_bob,
    )

    assert [(r.status, r.reason) for r in results] == [
        (EventStatus.ACCEPTED, None),
        (EventStatus.REJECTED, RejectReason.FORBIDDEN_TYPE),
        (EventStatus.REJECTED, RejectReason.FORBIDDEN_TYPE),
        (EventStatus.REJECTED, RejectReason.OUT_OF_ORDER),
    ]
    event = ActivityEvent.objects.get()
    assert (event.member_id, event.source, event.event_id) == (bob.pk, "member", f"{bob.pk}:m-1")
    assert event.client_event_id == "m-1"
    assert PointsEntry.objects.get().reference == f"event:member:{bob.pk}:m-1"
    assert not MemberDailyActivity.objects.filter(member=ann).exists()
    assert ledger_violations() == []


def test_two_members_may_use_the_same_client_event_id(ann, make_member):
    bob = make_member("bob")

    first = _ingest([_event("same")], actor=Actor(kind=ActorKind.MEMBER, member_id=ann.pk))
    second = _ingest([_event("same")], actor=Actor(kind=ActorKind.MEMBER, member_id=bob.pk))

    assert (first[0].status, second[0].status) == (EventStatus.ACCEPTED, EventStatus.ACCEPTED)
    assert ledger_violations() == []


def test_erased_members_are_unknown(ann):
    from core.actors import system_actor
    from members.services import member_erase

    member_erase(member=ann, actor=system_actor("tests"), at=NOW)

    results = _ingest([_event("z-1")])

    assert results[0].reason == RejectReason.UNKNOWN_MEMBER
    assert ledger_violations() == []


def test_the_daily_check_in_counts_as_an_interaction(ann):
    result = checkin_create(
        member=ann, actor=Actor(kind=ActorKind.MEMBER, member_id=ann.pk), at=NOW
    )

    rollup = MemberDailyActivity.objects.get(member=ann)
    assert (rollup.checkins, rollup.interactions, rollup.points_earned) == (1, 1, 5)
    assert result.check_in.points_awarded == 5
    ann.refresh_from_db()
    assert (ann.first_interaction_at, ann.last_interaction_at, ann.last_activity_at) == (
        NOW,
        NOW,
        NOW,
    )
    assert ledger_violations() == []


def test_ingestion_earns_like_award_for_event_for_the_same_sequence(ann, make_member):
    from rewards.services.earning import award_for_event

    EarningRule.objects.filter(event_type="post").update(daily_cap=90, hourly_limit=None)
    EarningRule.objects.filter(event_type="like").update(daily_cap=None, hourly_limit=2)
    direct = make_member("direct")
    Member.objects.filter(pk__in=[ann.pk, direct.pk]).update(tier_id="koc")  # 1.25
    direct.refresh_from_db()
    sequence = [
        ("post", 0, None),
        ("like", 1, None),
        ("post", 2, None),
        ("like", 3, None),
        ("post", 4, None),
        ("like", 5, None),
        ("purchase", 6, "80.90"),
        ("post", 7, None),
    ]
    start = NOW - timedelta(minutes=30)

    with transaction.atomic():
        one_by_one = [
            award_for_event(
                member=direct,
                event_type=kind,
                reference=f"{kind}:direct:{n}",
                actor=SHOP,
                at=start + timedelta(minutes=minutes),
                amount=Decimal(amount) if amount else None,
            ).points
            for n, (kind, minutes, amount) in enumerate(sequence)
        ]
    ingested = _ingest(
        [
            _event(
                f"s-{n}",
                kind,
                start + timedelta(minutes=minutes),
                **({"amount": amount} if amount else {}),
            )
            for n, (kind, minutes, amount) in enumerate(sequence)
        ]
    )

    assert one_by_one == [25, 1, 25, 1, 25, 0, 100, 15]
    assert [result.points_awarded for result in ingested] == one_by_one
    assert MemberDailyActivity.objects.get(member=ann).points_earned == sum(one_by_one)
    assert ledger_violations() == []


def test_erasure_clears_event_properties_and_keeps_the_counts(operator_client, member):
    from django.utils import timezone

    from members.models import ActivityEvent, MemberDailyActivity

    now = timezone.now()
    ActivityEvent.objects.create(
        source="operator",
        event_id="e-1",
        member=member,
        type="post",
        occurred_at=now,
        business_date=now.date(),
        properties={"text": "my phone is 138..."},
        received_at=now,
    )
    MemberDailyActivity.objects.create(
        member=member, business_date=now.date(), posts=1, interactions=1
    )

    operator_client.delete(f"/api/v1/members/{member.pk}/")

    assert ActivityEvent.objects.get(member=member).properties == {}
    assert MemberDailyActivity.objects.get(member=member).posts == 1
