"""Webhooks: subscriptions, the outbox dispatcher and signed, retried, logged deliveries.

How an event reaches a partner:

1. A service writes an ``OutboxEvent`` in the transaction of the change (``core.events``).
2. ``webhooks_dispatch`` (every minute, and the ``deliver_webhooks`` command) gives each new
   event a feed ``position`` and creates one ``WebhookDelivery`` per matching active subscription
   (unique per subscription and event), then claims due deliveries with a lease and enqueues
   ``core.webhook_deliver`` for each on the ``webhooks`` queue.
3. ``webhook_deliver`` claims the delivery (a conditional UPDATE), re-checks the target (DNS
   rebinding), POSTs the Standard Webhooks message outside any transaction, and records the
   attempt afterwards: 2xx succeeds; anything else schedules the next attempt along
   ``RETRY_DELAYS`` (over a day) until the delivery gives up.

At least once: a task lost with its worker leaves a lease that runs out, and the next dispatcher
run enqueues the delivery again. Receivers dedupe on ``webhook-id`` (the event id).
"""

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Max, Q
from requests.adapters import HTTPAdapter

from core.actors import Actor
from core.broker import enqueue_on_commit
from core.db import durable_atomic, is_postgres, require_transaction
from core.events import domain_event_record
from core.exceptions import ConflictError, InvalidInputError
from core.models import (
    DeliveryStatus,
    OutboxEvent,
    Partner,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
)

logger = logging.getLogger(__name__)

# --- Event types -------------------------------------------------------------------------------

ALL_EVENTS = "*"
EVENT_TYPES: tuple[str, ...] = (
    "member.tier_changed",
    "member.lifecycle_changed",
    "points.awarded",
    "points.reversed",
    "points.expiring",
    "points.expired",
    "certification.granted",
    "certification.revoked",
    "certification.expired",
    "badge.awarded",
    "redemption.created",
    "redemption.fulfilled",
    "redemption.cancelled",
    "scenario.triggered",
    "tier.will_downgrade",
    "community.alert",
    "webhook.disabled",
)
WEBHOOK_DISABLED_EVENT = "webhook.disabled"

# --- Retry schedule ----------------------------------------------------------------------------

# The delay after each failed attempt (Standard Webhooks' example schedule, shortened at the
# tail): 8 attempts spread over about 31.6 hours, so a receiver that is down for a day still gets
# every event. Each delay varies by +-10% (jitter) so retries of many deliveries do not arrive in
# lockstep; even at -10% the schedule spans more than 24 hours.
RETRY_DELAYS: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
JITTER = 0.1
MAX_RETRY_AFTER = timedelta(hours=24)

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 32
USER_AGENT = "LoyaltyWebhooks/1.0 (+https://www.standardwebhooks.com/)"
RESPONSE_EXCERPT_CHARS = 500
ERROR_CHARS = 500
# Only one dispatcher hands out feed positions at a time (PostgreSQL advisory lock key).
_DISPATCH_LOCK_KEY = 0x4C59_5748  # "LYWH"


class WebhookURLError(InvalidInputError):
    code = "webhook_url_invalid"
    title = "This URL cannot receive webhooks"


class WebhookSubscriptionLimitError(ConflictError):
    code = "webhook_subscription_limit"
    title = "The partner has as many webhook subscriptions as allowed"


class WebhookSubscriptionInactiveError(ConflictError):
    code = "webhook_subscription_inactive"
    title = "The webhook subscription is disabled; enable it first"


# --- Signing (Standard Webhooks 1.0) -----------------------------------------------------------


def webhook_secret_generate() -> str:
    """A new signing secret: ``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The Standard Webhooks ``v1`` signature: HMAC-SHA256 over ``{id}.{timestamp}.{body}`` with
    the secret's decoded bytes, base64-encoded."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return f"v1,{base64.b64encode(digest).decode()}"


def webhook_body(event: OutboxEvent) -> str:
    """The JSON document POSTed for an event; the same for every attempt and subscription."""
    return json.dumps(
        {
            "id": str(event.pk),
            "type": event.event_type,
            "timestamp": event.occurred_at.isoformat(),
            "data": event.payload,
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def webhook_headers(
    *, subscription: WebhookSubscription, msg_id: str, timestamp: int, body: str, at: datetime
) -> dict[str, str]:
    """Standard Webhooks headers; during a secret rotation's grace period the message carries
    a signature with each secret, so receivers verify with either."""
    signatures = [sign(subscription.secret, msg_id, timestamp, body)]
    expires_at = subscription.previous_secret_expires_at
    if subscription.previous_secret and expires_at is not None and expires_at > at:
        signatures.append(sign(subscription.previous_secret, msg_id, timestamp, body))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }


def retry_delay(*, attempt_number: int, jitter: float, retry_after: int | None = None) -> timedelta:
    """How long to wait after failed attempt ``attempt_number`` (1-based); ``jitter`` in [0, 1).
    A receiver's ``Retry-After`` (seconds) can lengthen the wait, up to a day, never shorten it."""
    base = RETRY_DELAYS[min(attempt_number, len(RETRY_DELAYS)) - 1]
    delay = base * (1 - JITTER + 2 * JITTER * jitter)
    if retry_after is not None:
        delay = max(delay, min(timedelta(seconds=retry_after), MAX_RETRY_AFTER))
    return delay


def event_type_matches(event_types: Sequence[str], event_type: str) -> bool:
    return ALL_EVENTS in event_types or event_type in event_types


# --- Target validation (SSRF) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """A webhook URL that passed validation, with the addresses its host resolved to."""

    url: str
    scheme: str
    hostname: str
    port: int
    addresses: tuple[str, ...]


def _address_is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and not _address_is_public(str(embedded)):
            return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _resolve(hostname: str, port: int) -> tuple[str, ...]:
    try:
        infos = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise WebhookURLError(f"The host {hostname!r} cannot be resolved.") from None
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise WebhookURLError(f"The host {hostname!r} cannot be resolved.")
    return addresses


def webhook_target_resolve(url: str) -> WebhookTarget:
    """Validate a webhook URL and resolve its host, at subscription and again at each delivery
    (a host may later resolve elsewhere: DNS rebinding).

    https only (http when LOYALTY_WEBHOOK_ALLOW_HTTP); no credentials or fragment; every address
    the host resolves to must be public unless LOYALTY_WEBHOOK_ALLOW_PRIVATE_TARGETS.

    :raises WebhookURLError: when the URL may not be called.
    """
    if len(url) > 2000 or not url.isprintable() or any(char.isspace() for char in url):
        raise WebhookURLError("The URL must be at most 2000 printable characters, no spaces.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookURLError("The URL is malformed.") from None
    scheme = parts.scheme.lower()
    allowed = ("https", "http") if settings.LOYALTY_WEBHOOK_ALLOW_HTTP else ("https",)
    if scheme not in allowed:
        raise WebhookURLError(f"The URL must use {' or '.join(allowed)}.")
    if "@" in parts.netloc:
        raise WebhookURLError("The URL must not contain credentials.")
    if parts.fragment:
        raise WebhookURLError("The URL must not contain a fragment.")
    hostname = parts.hostname
    if not hostname:
        raise WebhookURLError("The URL has no host.")
    port = port or (443 if scheme == "https" else 80)
    addresses = _resolve(hostname, port)
    if not settings.LOYALTY_WEBHOOK_ALLOW_PRIVATE_TARGETS and not all(
        _address_is_public(address) for address in addresses
    ):
        raise WebhookURLError(
            "The host resolves to a loopback, private, link-local or otherwise non-public "
            "address; webhooks only call public hosts."
        )
    return WebhookTarget(url, scheme, hostname, port, addresses)


# --- Subscriptions -----------------------------------------------------------------------------


def _checked_event_types(event_types: Iterable[str]) -> list[str]:
    chosen = sorted(set(event_types))
    if not chosen:
        raise InvalidInputError("Subscribe to at least one event type.")
    if ALL_EVENTS in chosen and len(chosen) > 1:
        raise InvalidInputError(f"{ALL_EVENTS!r} subscribes to everything; list it alone.")
    unknown = sorted(set(chosen) - {*EVENT_TYPES, ALL_EVENTS})
    if unknown:
        raise InvalidInputError(f"Unknown event types: {', '.join(unknown)}.")
    return chosen


@transaction.atomic
def webhook_subscription_create(
    *,
    partner: Partner,
    target: WebhookTarget,
    event_types: Sequence[str],
    at: datetime,
    description: str = "",
) -> tuple[WebhookSubscription, str]:
    """Subscribe a validated URL of the partner to event types. Returns the subscription and its
    signing secret (shown once).

    :raises InvalidInputError: for unknown event types.
    :raises WebhookSubscriptionLimitError: when the partner has the maximum already.
    """
    checked = _checked_event_types(event_types)
    # Lock the partner so concurrent creations cannot both pass the limit check.
    Partner.objects.select_for_update(no_key=True).filter(pk=partner.pk).first()
    limit = settings.LOYALTY_WEBHOOK_MAX_SUBSCRIPTIONS_PER_PARTNER
    if WebhookSubscription.objects.filter(partner=partner).count() >= limit:
        raise WebhookSubscriptionLimitError(f"A partner may have at most {limit} subscriptions.")
    secret = webhook_secret_generate()
    subscription = WebhookSubscription.objects.create(
        partner=partner,
        url=target.url,
        event_types=checked,
        description=description,
        secret=secret,
        created_at=at,
        updated_at=at,
    )
    return subscription, secret


@transaction.atomic
def webhook_subscription_update(
    *,
    subscription: WebhookSubscription,
    actor: Actor,
    at: datetime,
    target: WebhookTarget | None = None,
    event_types: Sequence[str] | None = None,
    description: str | None = None,
    is_active: bool | None = None,
) -> WebhookSubscription:
    """Change the URL, event types, description or state. Enabling clears the failure count;
    disabling stops deliveries (pending ones resume when enabled again).

    :raises InvalidInputError: for unknown event types.
    """
    changed: list[str] = []
    if target is not None:
        subscription.url = target.url
        changed.append("url")
    if event_types is not None:
        subscription.event_types = _checked_event_types(event_types)
        changed.append("event_types")
    if description is not None:
        subscription.description = description
        changed.append("description")
    if is_active is not None and is_active != subscription.is_active:
        subscription.is_active = is_active
        subscription.consecutive_failures = 0
        subscription.disabled_at = None if is_active else at
        subscription.disabled_reason = "" if is_active else f"Disabled by {actor.label}."
        changed += ["is_active", "consecutive_failures", "disabled_at", "disabled_reason"]
    if changed:
        subscription.updated_at = at
        subscription.save(update_fields=[*changed, "updated_at"])
    return subscription


@transaction.atomic
def webhook_subscription_delete(*, subscription: WebhookSubscription) -> None:
    """Delete a subscription with its delivery log; events stay in the outbox and the feed."""
    # Lock first: a dispatcher inserting deliveries for it commits before the cascade collects
    # them, and none can be added after (the dispatcher's next run no longer sees it).
    WebhookSubscription.objects.select_for_update().filter(pk=subscription.pk).first()
    subscription.delete()


@transaction.atomic
def webhook_secret_rotate(
    *, subscription: WebhookSubscription, at: datetime
) -> tuple[str, datetime]:
    """Issue a new signing secret. Deliveries are signed with the old one as well until the
    returned time, so receivers can switch without a gap. Returns the new secret (shown once)."""
    # Lock the row: of two concurrent rotations, the second must keep the first's secret as
    # "previous", or a receiver holding it would reject deliveries.
    current = WebhookSubscription.objects.select_for_update(no_key=True).get(pk=subscription.pk)
    secret = webhook_secret_generate()
    expires_at = at + timedelta(hours=settings.LOYALTY_WEBHOOK_SECRET_ROTATION_GRACE_HOURS)
    WebhookSubscription.objects.filter(pk=current.pk).update(
        secret=secret,
        previous_secret=current.secret,
        previous_secret_expires_at=expires_at,
        updated_at=at,
    )
    return secret, expires_at


# --- Enqueueing --------------------------------------------------------------------------------


def _enqueue_on_commit(
    delivery_ids: Sequence[int], lease_token: uuid.UUID, countdown: float | None = None
) -> None:
    """Send one ``core.webhook_deliver`` task per delivery once the lease is committed."""
    if not delivery_ids:
        return
    from core.tasks import webhook_deliver_task  # the task module imports these services

    ids, token = list(delivery_ids), str(lease_token)

    def send() -> None:
        for delivery_id in ids:
            webhook_deliver_task.apply_async(
                kwargs={"delivery_id": delivery_id, "lease_token": token}, countdown=countdown
            )

    # With the broker down the leased deliveries stay due: the next dispatch after the lease
    # sends them.
    enqueue_on_commit(send, what="webhook deliveries")


def _queue_lease(at: datetime) -> datetime:
    return at + timedelta(seconds=settings.LOYALTY_WEBHOOK_QUEUE_LEASE_SECONDS)


def webhook_deliveries_redeliver(*, delivery_ids: Iterable[int], at: datetime) -> int:
    """Attempt the deliveries again now, whatever their state; those of disabled subscriptions
    are left alone. A redelivery that fails schedules no further retries once the delivery has
    used its schedule. Returns how many were queued."""
    require_transaction()
    token = uuid.uuid4()
    queryset = WebhookDelivery.objects.filter(
        pk__in=list(delivery_ids), subscription__is_active=True
    )
    queued = list(queryset.values_list("pk", flat=True))
    WebhookDelivery.objects.filter(pk__in=queued).update(
        status=DeliveryStatus.PENDING,
        next_attempt_at=at,
        lease_token=token,
        leased_until=_queue_lease(at),
    )
    _enqueue_on_commit(queued, token)
    return len(queued)


def webhook_delivery_redeliver(*, delivery: WebhookDelivery, at: datetime) -> None:
    """Attempt one delivery again now (manual redelivery).

    :raises WebhookSubscriptionInactiveError: when its subscription is disabled.
    """
    require_transaction()
    if not webhook_deliveries_redeliver(delivery_ids=[delivery.pk], at=at):
        raise WebhookSubscriptionInactiveError()


# --- Dispatcher --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DispatchResult:
    events_dispatched: int
    deliveries_offered: int
    deliveries_enqueued: int


def _events_fan_out(*, at: datetime, batch_size: int) -> tuple[int, int] | None:
    """Sequence one batch of undispatched events and create their deliveries. Returns (events,
    deliveries offered), or None when another dispatcher holds the sequence."""
    with durable_atomic():
        if is_postgres():
            # Positions must grow in commit order (see OutboxEvent.position), so one dispatcher
            # at a time; a second one skips this step rather than wait.
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_DISPATCH_LOCK_KEY])
                if not cursor.fetchone()[0]:
                    return None
        events = list(
            OutboxEvent.objects.filter(position__isnull=True)
            .order_by("id")
            .only("id", "event_type", "aggregate_id", "position")[:batch_size]
        )
        if not events:
            return 0, 0
        last_position = OutboxEvent.objects.aggregate(last=Max("position"))["last"] or 0
        subscriptions = list(
            WebhookSubscription.objects.filter(is_active=True)
            .order_by("pk")
            .values_list("pk", "partner_id", "event_types")
        )
        # A subscription's disabling concerns its own partner only (its aggregate is the
        # subscription); every other event goes to every partner that subscribed to its type.
        disabled = [e.aggregate_id for e in events if e.event_type == WEBHOOK_DISABLED_EVENT]
        owners = {
            str(pk): partner_id
            for pk, partner_id in WebhookSubscription.objects.filter(pk__in=disabled).values_list(
                "pk", "partner_id"
            )
        }
        deliveries = [
            WebhookDelivery(
                subscription_id=subscription_id,
                event_id=event.pk,
                next_attempt_at=at,
                created_at=at,
            )
            for event in events
            for subscription_id, partner_id, event_types in subscriptions
            if event_type_matches(event_types, event.event_type)
            and (
                event.event_type != WEBHOOK_DISABLED_EVENT
                or owners.get(event.aggregate_id) == partner_id
            )
        ]
        # One delivery per (subscription, event): a second dispatch of the same pair is a no-op.
        WebhookDelivery.objects.bulk_create(deliveries, ignore_conflicts=True, batch_size=1000)
        for offset, event in enumerate(events, start=1):
            event.position = last_position + offset
        OutboxEvent.objects.bulk_update(events, ["position"], batch_size=1000)
        return len(events), len(deliveries)


def _due_deliveries_enqueue(*, at: datetime, limit: int) -> int:
    """Lease pending deliveries that are due and not in flight, and enqueue them."""
    token = uuid.uuid4()
    with durable_atomic():
        candidates = (
            WebhookDelivery.objects.filter(
                status=DeliveryStatus.PENDING,
                next_attempt_at__lte=at,
                subscription__is_active=True,
            )
            .filter(Q(leased_until__isnull=True) | Q(leased_until__lte=at))
            .order_by("next_attempt_at", "id")
        )
        if is_postgres():
            # Concurrent dispatchers take disjoint rows instead of waiting for each other.
            candidates = candidates.select_for_update(skip_locked=True, of=("self",))
        ids = list(candidates.values_list("pk", flat=True)[:limit])
        if not ids:
            return 0
        WebhookDelivery.objects.filter(pk__in=ids).filter(
            Q(leased_until__isnull=True) | Q(leased_until__lte=at)
        ).update(lease_token=token, leased_until=_queue_lease(at))
        claimed = list(
            WebhookDelivery.objects.filter(pk__in=ids, lease_token=token)
            .order_by("id")
            .values_list("pk", flat=True)
        )
        _enqueue_on_commit(claimed, token)
        return len(claimed)


def webhooks_dispatch(*, at: datetime) -> DispatchResult:
    """Fan new outbox events out to subscriptions and enqueue every due delivery. Bounded per run
    (LOYALTY_WEBHOOK_DISPATCH_*); the next run continues. Opens its own transactions."""
    batch_size = settings.LOYALTY_WEBHOOK_DISPATCH_BATCH_SIZE
    budget = settings.LOYALTY_WEBHOOK_DISPATCH_MAX_PER_RUN
    events = offered = 0
    while events < budget:
        result = _events_fan_out(at=at, batch_size=batch_size)
        if result is None:
            break
        events += result[0]
        offered += result[1]
        if result[0] < batch_size:
            break
    enqueued = 0
    while enqueued < budget:
        claimed = _due_deliveries_enqueue(at=at, limit=min(batch_size, budget - enqueued))
        enqueued += claimed
        if claimed < batch_size:
            break
    return DispatchResult(events, offered, enqueued)


# --- Delivery ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What one run of the delivery task did: ``skipped`` (nothing to do: finished, not due,
    in flight elsewhere, or its subscription is disabled), ``succeeded``, ``retrying`` or
    ``failed`` (gave up)."""

    status: str
    attempt_number: int | None = None
    next_attempt_at: datetime | None = None


SKIPPED = DeliveryOutcome("skipped")


@dataclass(frozen=True, slots=True)
class _HttpResult:
    status_code: int | None
    error: str
    duration_ms: int
    response_excerpt: str = ""
    retry_after: int | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class _PinnedAddressAdapter(HTTPAdapter):
    """Connects to the address that was validated, while TLS (SNI and the certificate check)
    still uses the URL's host name, so a second DNS answer cannot redirect the request."""

    def __init__(self, hostname: str) -> None:
        self._hostname = hostname
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        try:
            ipaddress.ip_address(self._hostname)
        except ValueError:
            # urllib3 drops both for plain http pools.
            kwargs["server_hostname"] = self._hostname
            kwargs["assert_hostname"] = self._hostname
        super().init_poolmanager(*args, **kwargs)


def _pinned_url(target: WebhookTarget) -> tuple[str, str]:
    """The URL with its host replaced by the validated address, and the Host header."""
    parts = urlsplit(target.url)
    address = target.addresses[0].split("%", 1)[0]
    host = f"[{address}]" if ":" in address else address
    pinned = urlunsplit((parts.scheme, f"{host}:{target.port}", parts.path or "/", parts.query, ""))
    return pinned, parts.netloc


def _retry_after(response: requests.Response) -> int | None:
    value = response.headers.get("Retry-After", "")
    return int(value) if value.isdigit() else None


def _post(*, target: WebhookTarget, body: str, headers: dict[str, str]) -> _HttpResult:
    """POST once, never following redirects; every failure becomes a result, never raised."""
    url, host = _pinned_url(target)
    session = requests.Session()
    session.trust_env = False  # no proxies or .netrc credentials from the environment
    session.mount(f"{target.scheme}://", _PinnedAddressAdapter(target.hostname))
    timeout = (
        settings.LOYALTY_WEBHOOK_CONNECT_TIMEOUT_SECONDS,
        settings.LOYALTY_WEBHOOK_READ_TIMEOUT_SECONDS,
    )
    started = time.monotonic()
    status_code, error, excerpt, retry_after = None, "", "", None
    try:
        with session.post(
            url,
            data=body.encode(),
            headers={**headers, "Host": host},
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        ) as response:
            status_code = response.status_code
            retry_after = _retry_after(response)
            raw = response.raw.read(RESPONSE_EXCERPT_CHARS * 2, decode_content=True) or b""
            excerpt = raw.decode("utf-8", "replace")[:RESPONSE_EXCERPT_CHARS]
    except requests.Timeout:
        error = "Timed out."
    except requests.RequestException as exc:
        error = f"Request failed: {type(exc).__name__}: {exc}"
    except Exception as exc:  # e.g. the task's soft time limit: still a failed attempt
        logger.warning("Webhook POST to %s aborted: %r", target.hostname, exc)
        error = f"Aborted: {type(exc).__name__}."
    finally:
        session.close()
    if status_code is not None and 300 <= status_code < 400:
        error = "Redirects are not followed."
    duration_ms = int((time.monotonic() - started) * 1000)
    return _HttpResult(status_code, error[:ERROR_CHARS], duration_ms, excerpt, retry_after)


def _attempt(*, url: str, body: str, headers: dict[str, str]) -> _HttpResult:
    started = time.monotonic()
    try:
        target = webhook_target_resolve(url)
    except WebhookURLError as error:
        # Refused before connecting: the host now resolves somewhere forbidden.
        duration_ms = int((time.monotonic() - started) * 1000)
        return _HttpResult(None, f"Target refused: {error.detail}"[:ERROR_CHARS], duration_ms)
    return _post(target=target, body=body, headers=headers)


def _delivery_claim(
    *, delivery_id: int, lease_token: uuid.UUID | None, at: datetime
) -> tuple[WebhookDelivery, uuid.UUID] | None:
    """Take the delivery for one attempt (a conditional UPDATE), or None when it is finished,
    not due, in flight elsewhere, or its subscription is disabled."""
    attempt_token = uuid.uuid4()
    free = Q(leased_until__isnull=True) | Q(leased_until__lte=at)
    if lease_token is not None:
        free |= Q(lease_token=lease_token)
    with durable_atomic():
        claimed = (
            WebhookDelivery.objects.filter(
                pk=delivery_id,
                status=DeliveryStatus.PENDING,
                next_attempt_at__lte=at,
                subscription__is_active=True,
            )
            .filter(free)
            .update(
                lease_token=attempt_token,
                leased_until=at + timedelta(seconds=settings.LOYALTY_WEBHOOK_ATTEMPT_LEASE_SECONDS),
            )
        )
        if not claimed:
            return None
        delivery = WebhookDelivery.objects.select_related("subscription", "event").get(
            pk=delivery_id
        )
    return delivery, attempt_token


def _subscription_disable(*, subscription: WebhookSubscription, reason: str, at: datetime) -> None:
    """Disable an active subscription, once, with an alert for the operators."""
    disabled = WebhookSubscription.objects.filter(pk=subscription.pk, is_active=True).update(
        is_active=False, disabled_at=at, disabled_reason=reason[:200], updated_at=at
    )
    if not disabled:
        return
    logger.error(
        "Webhook subscription %s of partner %s disabled: %s",
        subscription.pk,
        subscription.partner_id,
        reason,
    )
    domain_event_record(
        event_type=WEBHOOK_DISABLED_EVENT,
        aggregate_id=str(subscription.pk),
        payload={
            "subscription_id": str(subscription.pk),
            "partner_id": subscription.partner_id,
            "reason": reason,
            "disabled_at": at.isoformat(),
        },
        at=at,
        dedupe_key=f"{subscription.pk}:{at.isoformat()}",
    )


def _attempt_record(
    *,
    delivery: WebhookDelivery,
    attempt_token: uuid.UUID,
    result: _HttpResult,
    attempted_at: datetime,
    at: datetime,
) -> DeliveryOutcome:
    attempt_number = delivery.attempts_count + 1
    subscription = delivery.subscription
    counted = {
        "attempts_count": F("attempts_count") + 1,
        "last_attempt_at": attempted_at,
        "last_status_code": result.status_code,
    }
    finished = {"next_attempt_at": None, "lease_token": None, "leased_until": None}
    WebhookAttempt.objects.create(
        delivery=delivery,
        attempted_at=attempted_at,
        succeeded=result.succeeded,
        status_code=result.status_code,
        error=result.error,
        duration_ms=result.duration_ms,
        response_excerpt=result.response_excerpt,
    )
    this_delivery = WebhookDelivery.objects.filter(pk=delivery.pk)

    if result.succeeded:
        # A success counts even if the delivery was redelivered meanwhile.
        if not this_delivery.filter(status=DeliveryStatus.PENDING).update(
            status=DeliveryStatus.SUCCEEDED, **finished, **counted
        ):
            this_delivery.update(**counted)
        WebhookSubscription.objects.filter(pk=subscription.pk, consecutive_failures__gt=0).update(
            consecutive_failures=0
        )
        return DeliveryOutcome(DeliveryStatus.SUCCEEDED, attempt_number)

    gone = result.status_code == 410
    if gone or attempt_number >= MAX_ATTEMPTS:
        owned = this_delivery.filter(
            status=DeliveryStatus.PENDING, lease_token=attempt_token
        ).update(status=DeliveryStatus.FAILED, **finished, **counted)
        if not owned:
            this_delivery.update(**counted)
            return DeliveryOutcome("superseded", attempt_number)
        if gone:
            _subscription_disable(
                subscription=subscription, reason="The receiver answered 410 Gone.", at=at
            )
        elif attempt_number == MAX_ATTEMPTS:
            # The retry schedule ran out (manual redeliveries beyond it do not count).
            WebhookSubscription.objects.filter(pk=subscription.pk).update(
                consecutive_failures=F("consecutive_failures") + 1
            )
            threshold = settings.LOYALTY_WEBHOOK_DISABLE_AFTER_FAILURES
            if WebhookSubscription.objects.filter(
                pk=subscription.pk, consecutive_failures__gte=threshold
            ).exists():
                _subscription_disable(
                    subscription=subscription,
                    reason=f"{threshold} deliveries in a row failed after every retry.",
                    at=at,
                )
        return DeliveryOutcome(DeliveryStatus.FAILED, attempt_number)

    delay = retry_delay(
        attempt_number=attempt_number,
        jitter=random.random(),  # noqa: S311 - spreading retries, not security
        retry_after=result.retry_after,
    )
    next_attempt_at = at + delay
    # A retry within the countdown cap is enqueued now with a countdown; a later one is left
    # to the dispatcher. Inline (eager) mode has no timer, so it always leaves it.
    countdown = delay.total_seconds()
    timed = (
        countdown <= settings.LOYALTY_WEBHOOK_MAX_COUNTDOWN_SECONDS
        and not settings.CELERY_TASK_ALWAYS_EAGER
    )
    retry_token = uuid.uuid4() if timed else None
    owned = this_delivery.filter(status=DeliveryStatus.PENDING, lease_token=attempt_token).update(
        next_attempt_at=next_attempt_at,
        lease_token=retry_token,
        leased_until=_queue_lease(next_attempt_at) if timed else None,
        **counted,
    )
    if not owned:
        this_delivery.update(**counted)
        return DeliveryOutcome("superseded", attempt_number)
    if retry_token is not None:
        _enqueue_on_commit([delivery.pk], retry_token, countdown=countdown)
    return DeliveryOutcome("retrying", attempt_number, next_attempt_at)


def webhook_deliver(
    *, delivery_id: int, lease_token: uuid.UUID | None, clock: Callable[[], datetime]
) -> DeliveryOutcome:
    """Make one attempt of a delivery, if it is due and nobody else is attempting it.

    Runs its own short transactions around the HTTP call, never across it, so it must not be
    called inside one. Idempotent: a duplicate task finds the delivery finished, not due or
    leased, and does nothing.
    """
    claimed = _delivery_claim(delivery_id=delivery_id, lease_token=lease_token, at=clock())
    if claimed is None:
        return SKIPPED
    delivery, attempt_token = claimed
    attempted_at = clock()
    timestamp = int(attempted_at.timestamp())
    body = webhook_body(delivery.event)
    headers = webhook_headers(
        subscription=delivery.subscription,
        msg_id=str(delivery.event_id),
        timestamp=timestamp,
        body=body,
        at=attempted_at,
    )
    result = _attempt(url=delivery.subscription.url, body=body, headers=headers)
    try:
        with durable_atomic():
            return _attempt_record(
                delivery=delivery,
                attempt_token=attempt_token,
                result=result,
                attempted_at=attempted_at,
                at=clock(),
            )
    except IntegrityError:
        # The subscription (and its deliveries) was deleted while the call was in flight.
        return SKIPPED
