"""The events endpoints: batch ingestion, self-reported events, the event list, metrics."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from core.api.tokens import member_token_pair
from core.models import IdempotencyRecord, OutboxEvent
from members.models import ActivityEvent, MemberDailyActivity
from rewards.models import PointsEntry
from rewards.selectors import ledger_violations
from tests.helpers import assert_problem

NOW = datetime(2026, 5, 10, 4, 0, tzinfo=UTC)
EVENTS = "/api/v1/events/"
ME_EVENTS = "/api/v1/me/events/"


@pytest.fixture(autouse=True)
def _frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


def _event(event_id, external_id="member-self", event_type="post", occurred_at=NOW, **properties):
    return {
        "id": event_id,
        "external_id": external_id,
        "type": event_type,
        "occurred_at": occurred_at.isoformat(),
        "properties": properties,
    }


def _member_client(member):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {member_token_pair(member.pk)['access']}")
    return client


def _written():
    return (
        ActivityEvent.objects.count(),
        MemberDailyActivity.objects.count(),
        PointsEntry.objects.count(),
        OutboxEvent.objects.count(),
    )


def test_partner_batch_gets_a_result_per_event_in_order(member, partner_client):
    body = {
        "events": [
            _event("e-1"),
            _event("e-1"),
            _event("e-2", external_id="nobody"),
            _event("e-3", event_type="purchase", amount="19.99", currency="CNY"),
            {
                "id": "e-4",
                "external_id": "member-self",
                "type": "post",
                "occurred_at": "2026-05-10T04:00:00",
            },
            {
                "id": "bad id!",
                "external_id": "member-self",
                "type": "post",
                "occurred_at": NOW.isoformat(),
            },
            {**_event("e-5"), "member": "x"},
            _event("e-6", **{f"k{n}": n for n in range(51)}),
            _event("e-7", blob="x" * 4096),
            "not an object",
        ]
    }

    response = partner_client.post(EVENTS, body, format="json")

    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["id"], r["status"], r["reason"], r["points_awarded"]) for r in results] == [
        ("e-1", "accepted", None, 20),
        ("e-1", "duplicate", None, 20),
        ("e-2", "rejected", "unknown_member", 0),
        ("e-3", "accepted", None, 19),
        ("e-4", "rejected", "bad_field", 0),
        ("bad id!", "rejected", "bad_field", 0),
        ("e-5", "rejected", "bad_field", 0),
        ("e-6", "rejected", "bad_field", 0),
        ("e-7", "rejected", "bad_field", 0),
        ("", "rejected", "bad_field", 0),
    ]
    assert results[0]["errors"] == []
    assert results[2]["errors"] == [
        {
            "attr": "external_id",
            "pointer": "#/external_id",
            "code": "unknown_member",
            "detail": "No member with this external_id.",
        }
    ]
    assert [(error["attr"], error["code"]) for error in results[4]["errors"]] == [
        ("occurred_at", "naive_datetime")
    ]
    assert [error["attr"] for error in results[5]["errors"]] == ["id"]
    assert [(error["attr"], error["code"]) for error in results[6]["errors"]] == [
        ("member", "unknown_field")
    ]
    assert [error["code"] for error in results[7]["errors"]] == ["too_many_keys"]
    assert [error["code"] for error in results[8]["errors"]] == ["too_large"]
    assert sorted(ActivityEvent.objects.values_list("source", "event_id")) == [
        ("shop", "e-1"),
        ("shop", "e-3"),
    ]
    assert ledger_violations() == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"events": []},
        {"events": "x"},
        {"events": [_event("e-1")], "mode": "x"},
        {"events": [_event(f"e-{n}") for n in range(1001)]},
    ],
    ids=["missing", "empty", "not a list", "unknown field", "over 1000"],
)
def test_bad_envelopes_are_400_and_write_nothing(member, partner_client, body):
    response = partner_client.post(EVENTS, body, format="json")

    assert_problem(response, 400, "validation_error")
    assert _written() == (0, 0, 0, 0)


def test_idempotency_key_replays_the_whole_batch(member, partner_client):
    body = {"events": [_event("k-1"), _event("k-2", event_type="like")]}
    first = partner_client.post(EVENTS, body, format="json", HTTP_IDEMPOTENCY_KEY="batch-1")
    written = _written()

    replay = partner_client.post(EVENTS, body, format="json", HTTP_IDEMPOTENCY_KEY="batch-1")
    reused = partner_client.post(
        EVENTS, {"events": [_event("k-3")]}, format="json", HTTP_IDEMPOTENCY_KEY="batch-1"
    )

    assert replay.status_code == 200
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert [r["status"] for r in first.json()["results"]] == ["accepted", "accepted"]
    assert_problem(reused, 422, "idempotency_key_reused")
    assert _written() == written
    assert IdempotencyRecord.objects.count() == 1
    assert ledger_violations() == []


def test_resending_a_batch_without_a_key_reports_duplicates(member, partner_client):
    body = {"events": [_event("d-1"), _event("d-2", event_type="share")]}
    partner_client.post(EVENTS, body, format="json")
    written = _written()

    again = partner_client.post(EVENTS, body, format="json")

    assert [(r["status"], r["points_awarded"]) for r in again.json()["results"]] == [
        ("duplicate", 20),
        ("duplicate", 5),
    ]
    assert _written() == written
    assert ledger_violations() == []


def test_member_posts_own_engagement_but_never_purchases(member, other_member):
    client = _member_client(member)
    body = {
        "events": [
            {"id": "m-1", "type": "post", "occurred_at": NOW.isoformat()},
            {
                "id": "m-2",
                "type": "purchase",
                "occurred_at": NOW.isoformat(),
                "properties": {"amount": 10},
            },
            {
                "id": "m-3",
                "type": "like",
                "occurred_at": NOW.isoformat(),
                "external_id": "member-other",
            },
            {"id": "m:4", "type": "like", "occurred_at": NOW.isoformat()},
        ]
    }

    response = client.post(ME_EVENTS, body, format="json")

    assert response.status_code == 200
    assert [(r["id"], r["status"], r["reason"]) for r in response.json()["results"]] == [
        ("m-1", "accepted", None),
        ("m-2", "rejected", "forbidden_type"),
        ("m-3", "rejected", "bad_field"),
        ("m:4", "rejected", "bad_field"),
    ]
    assert list(ActivityEvent.objects.values_list("member_id", "type")) == [(member.pk, "post")]
    assert not ActivityEvent.objects.filter(member=other_member).exists()
    assert PointsEntry.objects.get().member_id == member.pk
    assert ledger_violations() == []


def test_member_batches_are_capped(member):
    events = [{"id": f"m-{n}", "type": "like", "occurred_at": NOW.isoformat()} for n in range(101)]

    response = _member_client(member).post(ME_EVENTS, {"events": events}, format="json")

    assert_problem(response, 400, "validation_error")
    assert _written() == (0, 0, 0, 0)


# --- Access ----------------------------------------------------------------------------------


@pytest.fixture
def roles(member, other_member, make_partner, make_operator_client):
    def partner(scopes):
        return make_partner(f"P{len(scopes)}-{'-'.join(scopes) or 'none'}", scopes)[1]

    return {
        "anonymous": APIClient(),
        "member self": _member_client(member),
        "member other": _member_client(other_member),
        "operator without permission": make_operator_client(),
        "partner without scope": partner(["members:write", "tags:write"]),
        "make_operator": make_operator_client,
        "partner": partner,
    }


# (label, method, path, body, operator permission, partner scope, member may, ok status)
ENDPOINTS = [
    (
        "ingest",
        "post",
        EVENTS,
        {"events": [_event("a-1")]},
        "members.add_activityevent",
        "events:write",
        False,
        200,
    ),
    (
        "self-report",
        "post",
        ME_EVENTS,
        {"events": [{"id": "a-1", "type": "like", "occurred_at": NOW.isoformat()}]},
        None,
        None,
        True,
        200,
    ),
    (
        "list events",
        "get",
        "/api/v1/members/{id}/events/",
        None,
        "members.view_activityevent",
        "members:read",
        True,
        200,
    ),
    (
        "metrics",
        "get",
        "/api/v1/members/{id}/metrics/",
        None,
        "members.view_memberdailyactivity",
        "members:read",
        True,
        200,
    ),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[endpoint[0] for endpoint in ENDPOINTS])
@pytest.mark.parametrize(
    "role",
    [
        "anonymous",
        "member self",
        "member other",
        "operator with permission",
        "operator without permission",
        "partner with scope",
        "partner without scope",
    ],
)
def test_access(member, roles, role, endpoint):
    label, method, template, body, permission, scope, member_may, ok = endpoint
    path = template.format(id=member.pk)
    if role == "anonymous":
        client, expected = roles[role], 401
    elif role == "member self":
        client, expected = roles[role], ok if member_may else 403
    elif role == "member other":
        client = roles[role]
        expected = (404 if "{id}" in template else ok) if member_may else 403
    elif role == "operator with permission":
        client = roles["make_operator"](*([permission] if permission else []))
        expected = ok if permission else 403
    elif role == "operator without permission":
        client, expected = roles[role], 403
    elif role == "partner with scope":
        client = roles["partner"]([scope] if scope else [])
        expected = ok if scope else 403
    else:
        client, expected = roles[role], 403

    response = getattr(client, method)(path, body, format="json")

    assert response.status_code == expected, (label, role, response.content[:300])
    if expected >= 400:
        assert response["Content-Type"].startswith("application/problem+json")


# --- The event list ----------------------------------------------------------------------------


def test_event_list_is_newest_first_with_filters(member, partner_client, operator_client):
    partner_client.post(
        EVENTS,
        {
            "events": [
                _event("l-1", occurred_at=NOW - timedelta(days=2)),
                _event("l-2", event_type="like", occurred_at=NOW - timedelta(days=1)),
                _event("l-3", occurred_at=NOW),
            ]
        },
        format="json",
    )
    url = f"/api/v1/members/{member.pk}/events/"

    def ids(query=""):
        response = operator_client.get(url + query)
        assert response.status_code == 200, response.content
        return [event["id"] for event in response.json()["results"]]

    first_page = operator_client.get(url + "?page_size=2").json()
    second_page = operator_client.get(first_page["next"]).json()

    assert ids() == ["l-3", "l-2", "l-1"]
    assert ids("?type=post") == ["l-3", "l-1"]
    assert ids(f"?occurred_after={(NOW - timedelta(days=1)).isoformat().replace('+', '%2B')}") == [
        "l-3",
        "l-2",
    ]
    assert ids("?business_date=2026-05-09") == ["l-2"]
    assert [e["id"] for e in first_page["results"] + second_page["results"]] == [
        "l-3",
        "l-2",
        "l-1",
    ]
    assert first_page["results"][0] == {
        "id": "l-3",
        "source": "shop",
        "type": "post",
        "occurred_at": "2026-05-10T04:00:00Z",
        "business_date": "2026-05-10",
        "properties": {},
        "points_awarded": 20,
        "received_at": "2026-05-10T04:00:00Z",
    }
    assert_problem(operator_client.get(url + "?occurred_after=yesterday"), 400)


def test_member_sees_own_self_reported_ids(member):
    client = _member_client(member)
    client.post(
        ME_EVENTS,
        {"events": [{"id": "mine", "type": "like", "occurred_at": NOW.isoformat()}]},
        format="json",
    )

    response = client.get(f"/api/v1/members/{member.pk}/events/")

    assert [(e["id"], e["source"]) for e in response.json()["results"]] == [("mine", "member")]


def test_event_list_query_count_does_not_grow_with_rows(member, partner_client, operator_client):
    url = f"/api/v1/members/{member.pk}/events/"
    partner_client.post(EVENTS, {"events": [_event("q-0")]}, format="json")
    with CaptureQueriesContext(connection) as one:
        assert len(operator_client.get(url).json()["results"]) == 1
    partner_client.post(EVENTS, {"events": [_event(f"q-{n}") for n in range(1, 50)]}, format="json")

    with CaptureQueriesContext(connection) as fifty:
        assert len(operator_client.get(url).json()["results"]) == 50

    assert len(fifty) == len(one)


# --- Metrics -----------------------------------------------------------------------------------


def test_metrics_endpoint_reports_the_default_metrics(member, partner_client, operator_client):
    partner_client.post(
        EVENTS,
        {
            "events": [
                _event("x-1", occurred_at=NOW - timedelta(days=3)),
                _event("x-2", event_type="share"),
                _event("x-3", event_type="purchase", amount="25.50"),
                _event("x-4", event_type="login"),
            ]
        },
        format="json",
    )

    response = operator_client.get(f"/api/v1/members/{member.pk}/metrics/?window_days=7")
    narrow = operator_client.get(
        f"/api/v1/members/{member.pk}/metrics/?window_days=1&as_of=2026-05-07"
    )

    assert response.status_code == 200
    assert response.json() == {
        "member_id": str(member.pk),
        "as_of": "2026-05-10",
        "window_days": 7,
        "interactions": 2,
        "active_days": 2,
        "posts": 1,
        "shares": 1,
        "purchases": 1,
        "purchase_amount": "25.50",
        "qualifying_points": 20 + 5 + 25,
        "checkin_streak": 0,
        "tenure_days": 0,
    }
    assert (
        narrow.json()["posts"],
        narrow.json()["shares"],
        narrow.json()["qualifying_points"],
    ) == (1, 0, 0)
    assert_problem(operator_client.get(f"/api/v1/members/{member.pk}/metrics/?window_days=0"), 400)
    assert_problem(operator_client.get(f"/api/v1/members/{member.pk}/metrics/?as_of=x"), 400)


# --- Scale ---------------------------------------------------------------------------------------


def _batch(members, per_member):
    kinds = [
        "post",
        "like",
        "comment",
        "share",
        "login",
        "purchase",
        "course_completed",
        "like",
        "post",
        "comment",
    ]
    events = []
    for member in members:
        for n in range(per_member):
            event_type = kinds[n % len(kinds)]
            extra = {"amount": "12.30"} if event_type == "purchase" else {}
            occurred_at = NOW - timedelta(days=1 if n == 0 else 0, minutes=n)
            events.append(
                _event(
                    f"{member.external_id}-{n}",
                    member.external_id,
                    event_type,
                    occurred_at,
                    **extra,
                )
            )
    return {"events": events}


@pytest.mark.postgres
def test_a_batch_of_1000_events_takes_as_many_queries_as_a_batch_of_10(make_member, partner_client):
    small = [make_member(f"s-{n}") for n in range(1)]
    large = [make_member(f"l-{n:03d}") for n in range(100)]
    partner_client.get("/api/v1/members/?page_size=1")  # warm-up: the key lookup gets cached

    with CaptureQueriesContext(connection) as ten:
        response_10 = partner_client.post(EVENTS, _batch(small, 10), format="json")
    with CaptureQueriesContext(connection) as thousand:
        response_1000 = partner_client.post(EVENTS, _batch(large, 10), format="json")

    assert {r["status"] for r in response_10.json()["results"]} == {"accepted"}
    assert [r["status"] for r in response_1000.json()["results"]] == ["accepted"] * 1000
    assert len(thousand) == len(ten)
    assert ActivityEvent.objects.count() == 1010
    assert MemberDailyActivity.objects.count() == 202
    assert ledger_violations() == []


def test_a_concurrent_batch_storing_the_same_id_answers_409_and_writes_nothing(
    member, partner_client
):
    from unittest import mock

    from django.db import IntegrityError

    from members import activity

    # The events' insert is where a concurrent batch's row for the same id would collide.
    with mock.patch.object(activity, "_events_insert", side_effect=IntegrityError("duplicate key")):
        response = partner_client.post(EVENTS, {"events": [_event("c-1")]}, format="json")

    assert_problem(response, 409, "event_batch_conflict")
    assert _written() == (0, 0, 0, 0)
    assert ledger_violations() == []
