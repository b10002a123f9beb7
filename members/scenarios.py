"""Scenario triggers: the source's playbook, emitted as ``scenario.triggered`` outbox events for
the brand's outreach tools (which deliver the message and the suggested benefit).

| scenario | who | when | suggested benefit |
|---|---|---|---|
| ``welcome`` | a member's first purchase | at ingestion, if the purchase is at most ``LOYALTY_WELCOME_WINDOW_HOURS`` (24) old | ``new_member_coupon`` |
| ``silent_reminder`` | anyone without an interaction (since joining) | ``LOYALTY_SILENT_DAYS`` (7) days after the last one | ``checkin_bonus`` |
| ``come_back`` | members who had taken part (interacted at least once) | ``LOYALTY_DORMANT_DAYS`` (30) days without a visit | ``comeback_points`` |
| ``recall_30``, ``recall_60``, ``recall_90`` | lapsed purchasers | 30, 60, 90 days after the last purchase (``LOYALTY_RECALL_DAYS``) | ``repurchase_coupon``, ``double_points_coupon``, ``win_back_gift`` |

The come-back campaign is about the community (no visit), the recall ladder about buying (no
purchase, even if the member still visits). Each fires once per member per occurrence: the
outbox dedupe key is ``<scenario>:<member id>:<anchor day>``, the anchor being the business day
of the activity the lapse is counted from, so a member who lapses again later is triggered again,
but never twice for the same lapse. The daily job fires a missed trigger up to
``LOYALTY_SCENARIO_CATCH_UP_DAYS`` (7) after its threshold and never later, so a first run over
old data does not message everyone who lapsed long ago.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db.models import F, Q
from django.db.models.expressions import Combinable
from django.db.models.functions import Coalesce

from core.db import durable_atomic, require_transaction
from core.events import DomainEvent, domain_events_record
from core.models import OutboxEvent
from members.models import Member
from rewards.services.earning import business_date_of

SCENARIO_EVENT = "scenario.triggered"
WELCOME = "welcome"
SILENT_REMINDER = "silent_reminder"
COME_BACK = "come_back"
RECALL_BENEFITS = ("repurchase_coupon", "double_points_coupon", "win_back_gift")
SUGGESTED_BENEFITS = {
    WELCOME: "new_member_coupon",
    SILENT_REMINDER: "checkin_bonus",
    COME_BACK: "comeback_points",
}

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class _Detection:
    """A time-based scenario: members whose ``anchor`` time is ``days`` old (within catch-up)."""

    scenario: str
    benefit: str
    anchor: Combinable
    days: int
    condition: Q = field(default_factory=Q)


def recall_scenario(days: int) -> str:
    return f"recall_{days}"


def _detections() -> list[_Detection]:
    recall_days = sorted(settings.LOYALTY_RECALL_DAYS)
    return [
        _Detection(
            SILENT_REMINDER,
            SUGGESTED_BENEFITS[SILENT_REMINDER],
            Coalesce(F("last_interaction_at"), F("joined_at")),
            settings.LOYALTY_SILENT_DAYS,
        ),
        _Detection(
            COME_BACK,
            SUGGESTED_BENEFITS[COME_BACK],
            Coalesce(F("last_activity_at"), F("joined_at")),
            settings.LOYALTY_DORMANT_DAYS,
            Q(first_interaction_at__isnull=False),
        ),
        *(
            _Detection(
                recall_scenario(days),
                RECALL_BENEFITS[min(rung, len(RECALL_BENEFITS) - 1)],
                F("last_purchase_at"),
                days,
            )
            for rung, days in enumerate(recall_days)
        ),
    ]


def scenarios_trigger(
    *, at: datetime, chunk_size: int | None = None, progress: Progress | None = None
) -> int:
    """Fire the time-based scenarios due at ``at`` (the daily job), in chunks of members, one
    transaction each. Returns how many fired; a re-run fires nothing again."""
    chunk_size = chunk_size or settings.LOYALTY_JOB_CHUNK_SIZE
    catch_up = timedelta(days=settings.LOYALTY_SCENARIO_CATCH_UP_DAYS)
    fired = 0
    for detection in _detections():
        threshold = at - timedelta(days=detection.days)
        due = (
            Member.objects.filter(erased_at__isnull=True)
            .annotate(anchor=detection.anchor)
            .filter(detection.condition, anchor__lte=threshold, anchor__gt=threshold - catch_up)
        )
        after: UUID | None = None
        while True:
            with durable_atomic():
                chunk = due if after is None else due.filter(pk__gt=after)
                rows = list(
                    chunk.order_by("pk").values_list("pk", "external_id", "anchor")[:chunk_size]
                )
                if not rows:
                    break
                fired += _fire(detection.scenario, detection.benefit, rows, at=at)
            after = rows[-1][0]
            if progress is not None:
                progress(len(rows))
    return fired


def scenario_welcome_trigger(*, members: Sequence[tuple[UUID, str, datetime]], at: datetime) -> int:
    """Welcome members after their first purchase (member id, external id, purchase time), when
    it happened at most ``LOYALTY_WELCOME_WINDOW_HOURS`` before ``at``. Returns how many fired."""
    window = timedelta(hours=settings.LOYALTY_WELCOME_WINDOW_HOURS)
    due = [row for row in members if row[2] > at - window]
    return _fire(WELCOME, SUGGESTED_BENEFITS[WELCOME], due, at=at) if due else 0


def _fire(
    scenario: str, benefit: str, rows: Sequence[tuple[UUID, str, datetime]], *, at: datetime
) -> int:
    """Record the scenario for each (member id, external id, anchor time) not triggered yet for
    that anchor's day. Returns how many were new."""
    require_transaction()
    events = {}
    for member_id, external_id, anchor_at in rows:
        dedupe_key = f"{scenario}:{member_id}:{business_date_of(anchor_at).isoformat()}"
        events[dedupe_key] = DomainEvent(
            SCENARIO_EVENT,
            str(member_id),
            {
                "member_id": str(member_id),
                "external_id": external_id,
                "scenario": scenario,
                "suggested_benefit": benefit,
                "anchor_at": anchor_at.isoformat(),
            },
            at,
            dedupe_key=dedupe_key,
        )
    fired_before = set(
        OutboxEvent.objects.filter(
            event_type=SCENARIO_EVENT, dedupe_key__in=list(events)
        ).values_list("dedupe_key", flat=True)
    )
    new = [event for key, event in events.items() if key not in fired_before]
    # The unique (event type, dedupe key) stays the guard against a concurrent run.
    domain_events_record(events=new, at=at)
    return len(new)
