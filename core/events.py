"""Recording domain events into the outbox, inside the caller's transaction."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import uuid6

from core.db import require_transaction, rows_insert
from core.models import OutboxEvent

# How every writer of the outbox skips an event recorded already: on its (type, dedupe key), the
# one conflict that means "recorded already". Naming it probes that unique index alone, where a
# bare ON CONFLICT DO NOTHING probes every unique index of the table.
OUTBOX_SKIP_DUPLICATE = "ON CONFLICT (event_type, dedupe_key) DO NOTHING"


@dataclass(frozen=True, slots=True)
class DomainEvent:
    event_type: str
    aggregate_id: str
    payload: dict[str, Any]
    occurred_at: datetime
    # Events without a natural once-only key get a unique one.
    dedupe_key: str = field(default_factory=lambda: str(uuid6.uuid7()))


def outbox_rows(*, events: Iterable[DomainEvent], at: datetime) -> list[OutboxEvent]:
    """The outbox rows of the events, unsaved (for callers writing them in their own statement)."""
    return [
        OutboxEvent(
            event_type=event.event_type,
            aggregate_id=event.aggregate_id,
            dedupe_key=event.dedupe_key,
            payload=event.payload,
            occurred_at=event.occurred_at,
            created_at=at,
        )
        for event in events
    ]


def domain_events_record(*, events: Iterable[DomainEvent], at: datetime) -> int:
    """Write events to the outbox in the caller's transaction; an event whose (type, dedupe key)
    exists already is skipped. Returns how many rows the batch offered."""
    require_transaction()
    rows = outbox_rows(events=events, at=at)
    if rows:
        rows_insert(rows, on_conflict=OUTBOX_SKIP_DUPLICATE)
    return len(rows)


def domain_event_record(
    *,
    event_type: str,
    aggregate_id: str,
    payload: dict[str, Any],
    at: datetime,
    dedupe_key: str | None = None,
) -> None:
    """Write one event to the outbox in the caller's transaction."""
    event = DomainEvent(event_type, aggregate_id, payload, at)
    if dedupe_key is not None:
        event = DomainEvent(event_type, aggregate_id, payload, at, dedupe_key)
    domain_events_record(events=[event], at=at)
