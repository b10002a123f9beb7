"""The webhooks API and the outbox feed: access per role, secrets shown once, SSRF at the door,
redelivery, and the polling feed's cursor."""

from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from core.api.tokens import member_token_pair
from core.events import domain_event_record
from core.models import DeliveryStatus, IdempotencyRecord, WebhookDelivery, WebhookSubscription
from core.webhooks import webhooks_dispatch
from tests.helpers import assert_problem

URL = "https://hooks.example.com/loyalty"


@pytest.fixture(autouse=True)
def _stub_dns(fake_dns):
    """No test here resolves a real host name."""


def _create(client, **body):
    return client.post("/api/v1/webhooks/", {"url": URL, "event_types": ["*"], **body})


# --- Access matrix -----------------------------------------------------------------------------


@pytest.fixture
def two_partners(make_partner):
    own_partner, own = make_partner("Own", ["webhooks:manage"])
    other_partner, other = make_partner("Other", ["webhooks:manage"])
    return own_partner, own, other_partner, other


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("get", "", None),
        ("patch", "", {"description": "x"}),
        ("delete", "", None),
        ("get", "deliveries/", None),
        ("post", "deliveries/1/redeliveries/", {}),
        ("post", "secret-rotations/", {}),
    ],
    ids=["read", "edit", "delete", "deliveries", "redeliver", "rotate secret"],
)
def test_another_partners_webhook_is_404_and_unchanged(
    two_partners, make_subscription, method, suffix, body
):
    _, own, other_partner, _ = two_partners
    subscription, _ = make_subscription(URL, partner=other_partner)

    response = getattr(own, method)(f"/api/v1/webhooks/{subscription.pk}/{suffix}", body)

    assert_problem(response, 404)
    after = WebhookSubscription.objects.get(pk=subscription.pk)
    assert (after.secret, after.description, after.is_active) == (subscription.secret, "", True)
    assert own.get("/api/v1/webhooks/").json()["results"] == []


def test_a_partner_without_the_scope_is_forbidden(make_partner, make_subscription):
    partner, client = make_partner("Reader", ["members:read"])
    subscription, _ = make_subscription(URL, partner=partner)

    responses = [
        client.get("/api/v1/webhooks/"),
        _create(client),
        client.get(f"/api/v1/webhooks/{subscription.pk}/"),
        client.get(f"/api/v1/webhooks/{subscription.pk}/deliveries/"),
        client.get("/api/v1/outbox-events/"),
    ]

    for response in responses:
        assert_problem(response, 403)
    assert WebhookSubscription.objects.count() == 1


def test_members_and_anonymous_clients_cannot_reach_webhooks(
    member_client, anonymous_client, make_subscription
):
    subscription, _ = make_subscription(URL)

    for client, status in ((member_client, 403), (anonymous_client, 401)):
        assert_problem(client.get("/api/v1/webhooks/"), status)
        assert_problem(_create(client), status)
        assert_problem(client.get(f"/api/v1/webhooks/{subscription.pk}/"), status)
        assert_problem(client.get("/api/v1/outbox-events/"), status)
    assert WebhookSubscription.objects.count() == 1


def test_operators_act_within_their_permissions(
    make_operator_client, make_subscription, webhook_partner
):
    subscription, _ = make_subscription(URL)
    nobody = make_operator_client()
    viewer = make_operator_client("core.view_webhooksubscription")
    creator = make_operator_client("core.add_webhooksubscription")

    assert_problem(nobody.get("/api/v1/webhooks/"), 403)
    assert_problem(_create(nobody, partner=webhook_partner.pk), 403)
    assert_problem(viewer.patch(f"/api/v1/webhooks/{subscription.pk}/", {"is_active": False}), 403)
    listed = viewer.get("/api/v1/webhooks/")
    created = _create(creator, partner=webhook_partner.pk)

    assert [item["id"] for item in listed.json()["results"]] == [str(subscription.pk)]
    assert created.status_code == 201
    assert created.json()["partner"] == webhook_partner.pk
    assert WebhookSubscription.objects.get(pk=subscription.pk).is_active is True


def test_an_operator_must_name_an_existing_partner_and_a_partner_may_not(
    operator_client, make_partner
):
    _, partner_client = make_partner("Self", ["webhooks:manage"])

    missing = _create(operator_client)
    unknown = _create(operator_client, partner=999_999)
    foreign = _create(partner_client, partner=1)

    for response in (missing, unknown, foreign):
        assert assert_problem(response, 400, "validation_error")["errors"][0]["attr"] == "partner"
    assert WebhookSubscription.objects.count() == 0


# --- Validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://localhost/hook",
        "https://user:secret@hooks.example.com/hook",
        "ftp://hooks.example.com/hook",
    ],
)
def test_unsafe_urls_are_400_problems_and_nothing_is_created(settings, partner_client, url):
    settings.LOYALTY_WEBHOOK_ALLOW_HTTP = True

    response = partner_client.post("/api/v1/webhooks/", {"url": url, "event_types": ["*"]})

    problem = assert_problem(response, 400, "validation_error")
    [error] = problem["errors"]
    assert (error["attr"], error["code"]) == ("url", "webhook_url_invalid")
    assert WebhookSubscription.objects.count() == 0


def test_plain_http_is_refused_by_default(partner_client):
    response = partner_client.post(
        "/api/v1/webhooks/", {"url": "http://hooks.example.com/x", "event_types": ["*"]}
    )

    problem = assert_problem(response, 400)
    assert problem["errors"][0]["detail"] == "The URL must use https."


@pytest.mark.parametrize(
    ("body", "attr"),
    [
        ({"url": URL, "event_types": ["points.stolen"]}, "event_types.0"),
        ({"url": URL, "event_types": []}, "event_types"),
        ({"url": URL}, "event_types"),
        ({"url": URL, "event_types": ["*"], "secret": "whsec_mine"}, "secret"),
        ({"url": URL, "event_types": ["*"], "is_active": False}, "is_active"),
    ],
)
def test_bad_bodies_are_rejected_field_by_field(partner_client, body, attr):
    response = partner_client.post("/api/v1/webhooks/", body)

    problem = assert_problem(response, 400, "validation_error")
    assert [error["attr"] for error in problem["errors"]] == [attr]
    assert WebhookSubscription.objects.count() == 0


def test_all_events_must_be_listed_alone(partner_client):
    response = _create(partner_client, event_types=["*", "points.awarded"])

    assert_problem(response, 400, "validation_error")
    assert WebhookSubscription.objects.count() == 0


def test_the_number_of_subscriptions_per_partner_is_capped(settings, partner_client):
    settings.LOYALTY_WEBHOOK_MAX_SUBSCRIPTIONS_PER_PARTNER = 1
    assert _create(partner_client).status_code == 201

    response = _create(partner_client)

    assert_problem(response, 409, "webhook_subscription_limit")
    assert WebhookSubscription.objects.count() == 1


def test_create_is_idempotent_and_a_replay_returns_the_same_secret(partner_client):
    first = partner_client.post(
        "/api/v1/webhooks/", {"url": URL, "event_types": ["*"]}, HTTP_IDEMPOTENCY_KEY="hook-1"
    )
    replay = partner_client.post(
        "/api/v1/webhooks/", {"url": URL, "event_types": ["*"]}, HTTP_IDEMPOTENCY_KEY="hook-1"
    )

    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert WebhookSubscription.objects.count() == 1
    assert IdempotencyRecord.objects.count() == 1


# --- Changes, rotation, deletion ---------------------------------------------------------------


def test_patch_changes_types_and_url_and_revalidates_the_url(partner_client, fake_dns):
    subscription_id = _create(partner_client).json()["id"]
    fake_dns["new.example.com"] = ["93.184.215.15"]

    changed = partner_client.patch(
        f"/api/v1/webhooks/{subscription_id}/",
        {"url": "https://new.example.com/in", "event_types": ["points.awarded"]},
    )
    refused = partner_client.patch(
        f"/api/v1/webhooks/{subscription_id}/", {"url": "https://10.0.0.1/in"}
    )

    assert changed.status_code == 200
    assert (changed.json()["url"], changed.json()["event_types"]) == (
        "https://new.example.com/in",
        ["points.awarded"],
    )
    assert_problem(refused, 400, "validation_error")
    assert WebhookSubscription.objects.get().url == "https://new.example.com/in"


def test_disabling_and_reenabling_resets_the_failures(partner_client):
    subscription_id = _create(partner_client).json()["id"]
    WebhookSubscription.objects.update(consecutive_failures=4)

    disabled = partner_client.patch(f"/api/v1/webhooks/{subscription_id}/", {"is_active": False})
    WebhookSubscription.objects.update(consecutive_failures=4)
    enabled = partner_client.patch(f"/api/v1/webhooks/{subscription_id}/", {"is_active": True})

    assert disabled.json()["is_active"] is False
    assert disabled.json()["disabled_reason"].startswith("Disabled by partner:")
    assert disabled.json()["disabled_at"] is not None
    body = enabled.json()
    assert (body["is_active"], body["consecutive_failures"], body["disabled_at"]) == (
        True,
        0,
        None,
    )
    assert body["disabled_reason"] == ""


def test_secret_rotation_returns_the_new_secret_once(partner_client):
    created = _create(partner_client).json()

    rotated = partner_client.post(f"/api/v1/webhooks/{created['id']}/secret-rotations/", {})
    detail = partner_client.get(f"/api/v1/webhooks/{created['id']}/")

    assert rotated.status_code == 201
    subscription = WebhookSubscription.objects.get()
    assert rotated.json()["secret"] == subscription.secret != created["secret"]
    assert subscription.previous_secret == created["secret"]
    assert rotated.json()["previous_secret_expires_at"].startswith(
        str(subscription.previous_secret_expires_at.date())
    )
    assert created["secret"] not in detail.content.decode()
    assert subscription.secret not in detail.content.decode()


def test_rotation_rejects_a_body(partner_client):
    created = _create(partner_client).json()

    response = partner_client.post(
        f"/api/v1/webhooks/{created['id']}/secret-rotations/", {"secret": "whsec_mine"}
    )

    assert_problem(response, 400, "validation_error")
    assert WebhookSubscription.objects.get().secret == created["secret"]


def test_delete_removes_the_subscription_and_its_log(partner_client, record_event):
    subscription_id = _create(partner_client).json()["id"]
    record_event()
    webhooks_dispatch(at=timezone.now())

    response = partner_client.delete(f"/api/v1/webhooks/{subscription_id}/")

    assert response.status_code == 204
    assert WebhookSubscription.objects.count() == 0
    assert WebhookDelivery.objects.count() == 0


# --- Delivery log and redelivery ---------------------------------------------------------------


@pytest.fixture
def failed_delivery(allow_loopback_webhooks, httpserver, make_partner, record_event):
    """A partner client and its subscription with one delivery that gave up."""
    _, client = make_partner("Receiver", ["webhooks:manage"])
    created = client.post(
        "/api/v1/webhooks/",
        {"url": f"http://127.0.0.1:{httpserver.port}/hook", "event_types": ["*"]},
    )
    record_event()
    webhooks_dispatch(at=timezone.now())
    WebhookDelivery.objects.update(
        status=DeliveryStatus.FAILED,
        attempts_count=8,
        next_attempt_at=None,
        lease_token=None,
        leased_until=None,
    )
    return client, created.json()["id"], WebhookDelivery.objects.get()


def test_the_delivery_log_lists_deliveries_with_their_attempts(
    allow_loopback_webhooks,
    httpserver,
    partner_client,
    record_event,
    django_capture_on_commit_callbacks,
):
    httpserver.expect_request("/hook").respond_with_data("nope", status=500)
    subscription_id = partner_client.post(
        "/api/v1/webhooks/",
        {"url": f"http://127.0.0.1:{httpserver.port}/hook", "event_types": ["points.awarded"]},
    ).json()["id"]
    event = record_event("points.awarded")
    with django_capture_on_commit_callbacks(execute=True):
        webhooks_dispatch(at=timezone.now())

    response = partner_client.get(f"/api/v1/webhooks/{subscription_id}/deliveries/")

    [delivery] = response.json()["results"]
    assert delivery["event"] == str(event.pk)
    assert delivery["event_type"] == "points.awarded"
    assert (delivery["status"], delivery["attempts_count"], delivery["last_status_code"]) == (
        "pending",
        1,
        500,
    )
    [attempt] = delivery["attempts"]
    assert (attempt["succeeded"], attempt["status_code"], attempt["error"]) == (False, 500, "")
    assert "response_excerpt" not in attempt  # the receiver's body never comes back
    assert "nope" not in response.content.decode()
    filtered = partner_client.get(
        f"/api/v1/webhooks/{subscription_id}/deliveries/", {"status": "succeeded"}
    )
    assert filtered.json()["results"] == []
    assert_problem(
        partner_client.get(f"/api/v1/webhooks/{subscription_id}/deliveries/", {"status": "lost"}),
        400,
    )


@pytest.mark.parametrize("rows", [1, 20])
def test_the_delivery_log_costs_the_same_queries_for_1_or_20_rows(
    rows, partner_client, record_event, django_assert_num_queries
):
    subscription_id = _create(partner_client).json()["id"]
    for _ in range(rows):
        record_event()
    webhooks_dispatch(at=timezone.now())

    # the subscription, the page with its events, the attempts (the key with its partner was
    # looked up by the request that created the subscription and is cached since)
    with django_assert_num_queries(3):
        response = partner_client.get(f"/api/v1/webhooks/{subscription_id}/deliveries/")

    assert len(response.json()["results"]) == rows


def test_a_failed_delivery_is_redelivered_on_request(
    failed_delivery, httpserver, django_capture_on_commit_callbacks
):
    client, subscription_id, delivery = failed_delivery
    httpserver.expect_request("/hook").respond_with_data("ok")

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/api/v1/webhooks/{subscription_id}/deliveries/{delivery.pk}/redeliveries/", {}
        )

    assert response.status_code == 202, response.content
    assert response.json()["status"] == "pending"  # queued; the attempt runs after the commit
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts_count) == (DeliveryStatus.SUCCEEDED, 9)
    [(request, _)] = httpserver.log
    assert request.headers["webhook-id"] == str(delivery.event_id)


def test_a_redelivery_that_fails_again_does_not_restart_the_schedule(
    failed_delivery, httpserver, django_capture_on_commit_callbacks
):
    client, subscription_id, delivery = failed_delivery
    httpserver.expect_request("/hook").respond_with_data("", status=500)

    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/api/v1/webhooks/{subscription_id}/deliveries/{delivery.pk}/redeliveries/")

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts_count, delivery.next_attempt_at) == (
        DeliveryStatus.FAILED,
        9,
        None,
    )
    assert WebhookSubscription.objects.get().consecutive_failures == 0


def test_redelivery_is_refused_while_the_subscription_is_disabled(failed_delivery):
    client, subscription_id, delivery = failed_delivery
    WebhookSubscription.objects.update(is_active=False)

    response = client.post(
        f"/api/v1/webhooks/{subscription_id}/deliveries/{delivery.pk}/redeliveries/"
    )

    assert_problem(response, 409, "webhook_subscription_inactive")
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED


def test_redelivery_of_a_delivery_of_another_webhook_is_404(failed_delivery):
    client, _, delivery = failed_delivery
    other_id = _create(client).json()["id"]

    response = client.post(f"/api/v1/webhooks/{other_id}/deliveries/{delivery.pk}/redeliveries/")

    assert_problem(response, 404)
    assert WebhookDelivery.objects.get().status == DeliveryStatus.FAILED


# --- The outbox feed ---------------------------------------------------------------------------


def _cursor(link: str) -> str:
    return parse_qs(urlsplit(link).query)["cursor"][0]


def test_the_feed_pages_oldest_first_and_its_next_link_resumes_for_polling(
    partner_client, record_event
):
    events = [record_event("points.awarded", {"n": n}) for n in range(5)]
    webhooks_dispatch(at=timezone.now())

    first = partner_client.get("/api/v1/outbox-events/", {"page_size": 2}).json()
    second = partner_client.get(
        "/api/v1/outbox-events/", {"page_size": 2, "cursor": _cursor(first["next"])}
    ).json()
    third = partner_client.get(
        "/api/v1/outbox-events/", {"page_size": 2, "cursor": _cursor(second["next"])}
    ).json()
    idle = partner_client.get(
        "/api/v1/outbox-events/", {"page_size": 2, "cursor": _cursor(third["next"])}
    ).json()
    late = record_event("points.expired", {"n": 5})
    before_dispatch = partner_client.get(
        "/api/v1/outbox-events/", {"page_size": 2, "cursor": _cursor(idle["next"])}
    ).json()
    webhooks_dispatch(at=timezone.now())
    resumed = partner_client.get(
        "/api/v1/outbox-events/", {"page_size": 2, "cursor": _cursor(idle["next"])}
    ).json()

    pages = [first, second, third]
    assert [[item["data"]["n"] for item in page["results"]] for page in pages] == [
        [0, 1],
        [2, 3],
        [4],
    ]
    assert [item["id"] for page in pages for item in page["results"]] == [
        str(event.pk) for event in events
    ]
    assert first["results"][0] == {
        "id": str(events[0].pk),
        "type": "points.awarded",
        "timestamp": first["results"][0]["timestamp"],
        "data": {"n": 0},
        "aggregate_id": "member-1",
        "position": 1,
        "created_at": first["results"][0]["created_at"],
    }
    assert idle["results"] == []
    assert idle["next"] is not None
    assert before_dispatch["results"] == []
    assert [item["id"] for item in resumed["results"]] == [str(late.pk)]


def test_the_feed_filters_by_type_and_operators_need_the_permission(
    make_operator_client, record_event
):
    record_event("points.awarded")
    expired = record_event("points.expired")
    webhooks_dispatch(at=timezone.now())
    viewer = make_operator_client("core.view_outboxevent")

    filtered = viewer.get("/api/v1/outbox-events/", {"type": "points.expired"})

    assert [item["id"] for item in filtered.json()["results"]] == [str(expired.pk)]
    assert_problem(make_operator_client().get("/api/v1/outbox-events/"), 403)
    assert_problem(viewer.get("/api/v1/outbox-events/", {"cursor": "garbage"}), 400)


@pytest.mark.parametrize("rows", [1, 30])
def test_the_feed_costs_the_same_queries_for_1_or_30_rows(
    rows, partner_client, record_event, django_assert_num_queries
):
    for _ in range(rows):
        record_event()
    webhooks_dispatch(at=timezone.now())

    with django_assert_num_queries(2):
        response = partner_client.get("/api/v1/outbox-events/")

    assert len(response.json()["results"]) == rows


def test_the_member_token_cannot_read_the_feed(member):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {member_token_pair(member.pk)['access']}")

    assert_problem(client.get("/api/v1/outbox-events/"), 403)


def test_a_partner_does_not_see_other_partners_webhook_disabled_events(make_partner):
    owner, owner_client = make_partner("Owner", ["webhooks:manage"])
    _, other_client = make_partner("Bystander", ["webhooks:manage"])
    with transaction.atomic():
        domain_event_record(
            event_type="webhook.disabled",
            aggregate_id="0190c2a0-0000-7000-8000-000000000001",
            payload={"subscription_id": "x", "partner_id": owner.pk, "reason": "410"},
            at=timezone.now(),
        )
        domain_event_record(
            event_type="points.awarded", aggregate_id="m", payload={}, at=timezone.now()
        )
    webhooks_dispatch(at=timezone.now())

    seen_by_owner = owner_client.get("/api/v1/outbox-events/").json()["results"]
    seen_by_other = other_client.get("/api/v1/outbox-events/").json()["results"]

    assert [item["type"] for item in seen_by_owner] == ["webhook.disabled", "points.awarded"]
    assert [item["type"] for item in seen_by_other] == ["points.awarded"]
