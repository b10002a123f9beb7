"""The admin for activity: events and daily rollups read-only, event types editable."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction

from core.actors import Actor, ActorKind
from members.activity import EventInput, events_ingest
from members.models import ActivityEvent, EventType, Member, MemberDailyActivity
from rewards.selectors import ledger_violations

NOW = datetime(2026, 5, 10, 4, 0, tzinfo=UTC)


@pytest.fixture
def activity(make_member, make_partner):
    make_partner("Shop")
    ann, bob = make_member("ann"), make_member("bob")
    shop = Actor(kind=ActorKind.PARTNER, partner_id=1, partner_namespace="shop")
    with transaction.atomic():
        events_ingest(
            items=[
                EventInput("e-1", "post", NOW, "ann"),
                EventInput("e-2", "like", NOW - timedelta(days=1), "bob"),
            ],
            actor=shop,
            at=NOW,
        )
        events_ingest(
            items=[EventInput("e-3", "like", NOW, "")],
            actor=Actor(kind=ActorKind.MEMBER, member_id=bob.pk),
            at=NOW,
        )
    return {"ann": ann, "bob": bob}


def _event_pk(event_id):
    return ActivityEvent.objects.get(event_id__endswith=event_id).pk


@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        pytest.param("activityevent", {"type": "like"}, ["e-3", "e-2"], id="events by type"),
        pytest.param("activityevent", {"source": "member"}, ["e-3"], id="events by source"),
        pytest.param("activityevent", {"q": "ann"}, ["e-1"], id="events by member"),
        pytest.param("activityevent", {"q": "e-2"}, ["e-2"], id="events by id"),
        pytest.param(
            "activityevent",
            {"business_date__gte": "2026-05-09", "business_date__lt": "2026-05-10"},
            ["e-2"],
            id="events by business date",
        ),
    ],
)
def test_event_changelist_filters_and_searches(admin_client, activity, path, params, expected):
    response = admin_client.get(f"/admin/members/{path}/", params)

    assert response.status_code == 200
    assert [row.pk for row in response.context["cl"].result_list] == [
        _event_pk(event_id) for event_id in expected
    ]
    assert ledger_violations() == []


def test_source_filter_offers_members_operators_and_partners(admin_client, activity):
    response = admin_client.get("/admin/members/activityevent/")

    source_filter = next(f for f in response.context["cl"].filter_specs if f.title == "source")
    assert [value for value, _ in source_filter.lookup_choices] == ["member", "operator", "shop"]


def test_daily_activity_changelist_searches_by_member(admin_client, activity):
    response = admin_client.get("/admin/members/memberdailyactivity/", {"q": "bob"})

    assert [row.business_date.isoformat() for row in response.context["cl"].result_list] == [
        "2026-05-10",
        "2026-05-09",
    ]


@pytest.mark.parametrize("path", ["activityevent", "memberdailyactivity"])
def test_activity_is_read_only(admin_client, activity, path):
    model = ActivityEvent if path == "activityevent" else MemberDailyActivity
    pk = model.objects.order_by("pk").first().pk

    changelist = admin_client.get(f"/admin/members/{path}/")
    change = admin_client.get(f"/admin/members/{path}/{pk}/change/")
    add = admin_client.get(f"/admin/members/{path}/add/")

    assert changelist.context["has_add_permission"] is False
    assert changelist.context["action_form"] is None
    assert change.context["has_change_permission"] is False
    assert change.context["has_delete_permission"] is False
    assert add.status_code == 403


def test_operators_register_custom_event_types(admin_client, db):
    response = admin_client.post(
        "/admin/members/eventtype/add/",
        {
            "code": "webinar",
            "name": "Webinar attended",
            "counts_as_interaction": "on",
            "members_may_post": "",
            "is_active": "on",
        },
    )

    assert response.status_code == 302
    webinar = EventType.objects.get(code="webinar")
    assert (webinar.is_builtin, webinar.counts_as_interaction, webinar.members_may_post) == (
        False,
        True,
        False,
    )
    assert webinar.created_at is not None


def test_built_in_types_keep_their_meaning_and_cannot_be_deleted(admin_client, db):
    purchase = EventType.objects.get(code="purchase")

    response = admin_client.post(
        "/admin/members/eventtype/purchase/change/",
        {
            "name": "Order",
            "counts_as_interaction": "on",
            "members_may_post": "on",
            "is_active": "on",
        },
    )
    delete = admin_client.get("/admin/members/eventtype/purchase/delete/")

    assert response.status_code == 302
    purchase.refresh_from_db()
    assert (purchase.name, purchase.counts_as_interaction, purchase.members_may_post) == (
        "Order",
        False,
        False,
    )
    assert delete.status_code == 403


def test_members_filter_by_lifecycle_stage(admin_client, make_member):
    ann = make_member("ann")
    make_member("bob")
    Member.objects.filter(pk=ann.pk).update(lifecycle_stage="silent")

    response = admin_client.get("/admin/members/member/", {"lifecycle_stage__exact": "silent"})

    assert [member.pk for member in response.context["cl"].result_list] == [ann.pk]
