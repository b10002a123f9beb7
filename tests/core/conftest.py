"""Fixtures for the outbox and webhook tests: receivers on loopback, a stub resolver, events."""

import socket
from collections.abc import Callable
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from core.events import domain_event_record
from core.models import OutboxEvent, Partner, WebhookDelivery, WebhookSubscription
from core.webhooks import webhook_deliver, webhook_subscription_create, webhook_target_resolve

PUBLIC_ADDRESS = "93.184.215.14"


@pytest.fixture(scope="session")
def httpserver_listen_address() -> tuple[str, int]:
    # Our client connects to the first resolved address; pin the receiver to IPv4 loopback.
    return ("127.0.0.1", 0)


@pytest.fixture
def allow_loopback_webhooks(settings: Any) -> None:
    """Test receivers listen on http://127.0.0.1, which production settings refuse."""
    settings.LOYALTY_WEBHOOK_ALLOW_HTTP = True
    settings.LOYALTY_WEBHOOK_ALLOW_PRIVATE_TARGETS = True


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """A stub resolver: host name -> addresses (edit the dict to re-point a host). IP literals
    resolve as the system would; any other name does not resolve. No test touches real DNS."""
    records: dict[str, list[str]] = {
        "hooks.example.com": [PUBLIC_ADDRESS],
        "localhost": ["127.0.0.1", "::1"],
    }
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host in records:
            return [
                (
                    socket.AF_INET6 if ":" in address else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (address, port),
                )
                for address in records[host]
            ]
        # Numeric hosts only (127.0.0.1, 2130706433, ::1); names never reach real DNS.
        return real(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)

    monkeypatch.setattr("core.webhooks.socket.getaddrinfo", getaddrinfo)
    return records


@pytest.fixture
def webhook_partner(make_partner: Callable[..., Any]) -> Partner:
    return make_partner("Hooks Shop")[0]


@pytest.fixture
def make_subscription(
    webhook_partner: Partner,
) -> Callable[..., tuple[WebhookSubscription, str]]:
    """A subscription made through the service (the URL must pass the current settings)."""

    def make(
        url: str, event_types: list[str] | None = None, partner: Partner | None = None
    ) -> tuple[WebhookSubscription, str]:
        return webhook_subscription_create(
            partner=partner or webhook_partner,
            target=webhook_target_resolve(url),
            event_types=event_types or ["*"],
            at=timezone.now(),
        )

    return make


@pytest.fixture
def record_event(db: Any) -> Callable[..., OutboxEvent]:
    """Write an outbox event the way services do, in a transaction."""

    def record(
        event_type: str = "points.awarded", payload: dict[str, Any] | None = None
    ) -> OutboxEvent:
        with transaction.atomic():
            before = set(OutboxEvent.objects.values_list("pk", flat=True))
            domain_event_record(
                event_type=event_type,
                aggregate_id="member-1",
                payload=payload if payload is not None else {"member_id": "member-1", "points": 5},
                at=timezone.now(),
            )
        return OutboxEvent.objects.exclude(pk__in=before).get()

    return record


@pytest.fixture
def deliver() -> Callable[[WebhookDelivery], str]:
    """Run the delivery task's service once, synchronously, as the queued message would."""

    def run(delivery: WebhookDelivery) -> str:
        delivery.refresh_from_db()
        return webhook_deliver(
            delivery_id=delivery.pk, lease_token=delivery.lease_token, clock=timezone.now
        ).status

    return run
