"""Lifecycle stages from activity, set-based: one definition used by ingestion and the daily job.

A member's stage at a moment follows from their activity times (SPEC §2, thresholds in settings):

- ``churned``: no activity of any kind (a visit) for ``LOYALTY_CHURNED_DAYS`` (90);
- ``dormant``: no visit for ``LOYALTY_DORMANT_DAYS`` (30); any event is a visit (a member who
  posts was signed in), a login event included;
- ``silent``: no interaction for ``LOYALTY_SILENT_DAYS`` (7);
- ``new``: not yet a regular participant, i.e. interactions on fewer than
  ``LOYALTY_REGULAR_PARTICIPATION_DAYS`` (2) distinct business days; once a member has been
  past ``new`` they never return to it;
- ``active`` otherwise.

Members who never interacted or visited count from ``joined_at``. Ingestion refreshes the members
it touched at once (an interaction brings a silent, dormant or churned member back to ``active``,
a bare login brings a dormant member back to ``silent``); the daily job refreshes everyone whose
stage is out of date. Each change records ``member.lifecycle_changed`` in the outbox and sets the
member's ``system`` tag ``lifecycle`` to the stage.
"""

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db.models import (
    Case,
    Count,
    DateTimeField,
    F,
    OuterRef,
    Q,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.db.models.lookups import GreaterThanOrEqual, LessThanOrEqual

from core.actors import system_actor
from core.db import InArray, durable_atomic, require_transaction
from core.events import DomainEvent, domain_events_record
from core.models import SYSTEM_NAMESPACE
from core.read_cache import member_reads_changed
from members.models import LifecycleStage, Member, MemberDailyActivity, TagCategory, TagSource
from members.scenarios import scenarios_trigger
from members.services import TagInput, TagSyncItem, TagSyncMode, tags_sync
from rewards.services.earning import business_date_of

LIFECYCLE_CHANGED_EVENT = "member.lifecycle_changed"
LIFECYCLE_TAG_KEY = "lifecycle"
LIFECYCLE_ACTOR = system_actor("lifecycle")

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class LifecycleChange:
    member_id: UUID
    external_id: str
    previous_stage: str
    stage: str


@dataclass(frozen=True, slots=True)
class LifecycleRunResult:
    changed: int
    scenarios_triggered: int


def lifecycle_stage_expression(*, at: datetime) -> Case:
    """The stage each member's activity implies at ``at``, as a SQL expression over the row."""

    def before(days: int) -> Value:
        return Value(at - timedelta(days=days), output_field=DateTimeField())

    last_visit = Coalesce(F("last_activity_at"), F("joined_at"))
    last_interaction = Coalesce(F("last_interaction_at"), F("joined_at"))
    interaction_days = Subquery(
        MemberDailyActivity.objects.filter(member=OuterRef("pk"), interactions__gt=0)
        .order_by()
        .values("member")
        .annotate(days=Count("pk"))
        .values("days")
    )
    regular = GreaterThanOrEqual(
        Coalesce(interaction_days, Value(0)), settings.LOYALTY_REGULAR_PARTICIPATION_DAYS
    )
    return Case(
        When(
            LessThanOrEqual(last_visit, before(settings.LOYALTY_CHURNED_DAYS)),
            then=Value(LifecycleStage.CHURNED),
        ),
        When(
            LessThanOrEqual(last_visit, before(settings.LOYALTY_DORMANT_DAYS)),
            then=Value(LifecycleStage.DORMANT),
        ),
        When(
            LessThanOrEqual(last_interaction, before(settings.LOYALTY_SILENT_DAYS)),
            then=Value(LifecycleStage.SILENT),
        ),
        # Nested so that the rollup count runs only for members still ``new``.
        When(
            Q(lifecycle_stage=LifecycleStage.NEW),
            then=Case(
                When(regular, then=Value(LifecycleStage.ACTIVE)),
                default=Value(LifecycleStage.NEW),
            ),
        ),
        default=Value(LifecycleStage.ACTIVE),
    )


def lifecycle_refresh(*, member_ids: Collection[UUID], at: datetime) -> list[LifecycleChange]:
    """Bring these members' stages to what their activity implies at ``at``; record each change
    (outbox event and system tag). A constant number of queries; must run in a transaction."""
    require_transaction()
    stage = lifecycle_stage_expression(at=at)
    # One conditional UPDATE: the stage is computed from the row as it is when written, so a
    # concurrent ingestion that just refreshed the member's activity times is never undone.
    updated = (
        Member.objects.filter(InArray(F("pk"), list(member_ids)), erased_at__isnull=True)
        .exclude(lifecycle_stage=stage)
        .update(
            previous_lifecycle_stage=F("lifecycle_stage"),
            lifecycle_stage=stage,
            lifecycle_changed_at=at,
        )
    )
    if not updated:
        return []
    member_reads_changed(member_ids)
    changes = [
        LifecycleChange(*row)
        for row in Member.objects.filter(
            InArray(F("pk"), list(member_ids)), lifecycle_changed_at=at
        )
        .order_by("pk")
        .values_list("pk", "external_id", "previous_lifecycle_stage", "lifecycle_stage")
    ]
    _changes_record(changes, at=at)
    return changes


def _changes_record(changes: list[LifecycleChange], *, at: datetime) -> None:
    day = business_date_of(at).isoformat()
    domain_events_record(
        events=[
            DomainEvent(
                LIFECYCLE_CHANGED_EVENT,
                str(change.member_id),
                {
                    "member_id": str(change.member_id),
                    "external_id": change.external_id,
                    "previous_stage": change.previous_stage,
                    "stage": change.stage,
                    "changed_at": at.isoformat(),
                },
                at,
                dedupe_key=f"{change.member_id}:{change.stage}:{day}",
            )
            for change in changes
        ],
        at=at,
    )
    tags_sync(
        namespace=SYSTEM_NAMESPACE,
        mode=TagSyncMode.MERGE,
        items=[
            TagSyncItem(
                external_id=change.external_id,
                tags=[
                    TagInput(key=LIFECYCLE_TAG_KEY, value=change.stage, category=TagCategory.SOCIAL)
                ],
            )
            for change in changes
        ],
        actor=LIFECYCLE_ACTOR,
        at=at,
        source=TagSource.SYSTEM,
    )


def lifecycle_advance(
    *, at: datetime, chunk_size: int | None = None, progress: Progress | None = None
) -> LifecycleRunResult:
    """The daily lifecycle job: move every member whose stage is out of date at ``at`` (in
    chunks of members, one transaction each), then fire the time-based scenario triggers.

    Idempotent and resumable: a re-run, or a run after a killed one, changes and records nothing
    twice (stages are recomputed, outbox events and tags are keyed per occurrence).
    """
    chunk_size = chunk_size or settings.LOYALTY_JOB_CHUNK_SIZE
    changed = 0
    after: UUID | None = None
    while True:
        with durable_atomic():
            candidates = Member.objects.filter(erased_at__isnull=True).exclude(
                lifecycle_stage=lifecycle_stage_expression(at=at)
            )
            if after is not None:
                candidates = candidates.filter(pk__gt=after)
            member_ids = list(candidates.order_by("pk").values_list("pk", flat=True)[:chunk_size])
            if not member_ids:
                break
            changed += len(lifecycle_refresh(member_ids=member_ids, at=at))
        after = member_ids[-1]
        if progress is not None:
            progress(len(member_ids))
    triggered = scenarios_trigger(at=at, chunk_size=chunk_size, progress=progress)
    return LifecycleRunResult(changed=changed, scenarios_triggered=triggered)
