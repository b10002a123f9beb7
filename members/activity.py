"""Activity event ingestion: validate, deduplicate, earn, store and roll up, in one transaction.

A batch is set-based: a fixed number of queries whether it holds 1 or 1,000 events (the members
and types are read once, the accounts locked once, points posted by one ledger posting, events
inserted by one statement, the daily rollups and the members' activity times written by one
statement each). Concurrent batches touching the same member serialise on the member's points
account lock, taken before the already-stored event ids are read, so an event is accepted once.
"""

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F

from core.actors import Actor
from core.db import InArray, chunked, is_postgres, lock_timeout, require_transaction
from core.exceptions import ConflictError
from core.read_cache import member_reads_changed
from members.lifecycle import lifecycle_refresh
from members.models import (
    EVENT_SOURCE_MEMBER,
    EVENT_SOURCE_OPERATOR,
    ROLLUP_COLUMNS,
    ROLLUP_OTHER_COLUMN,
    ActivityEvent,
    EventType,
    Member,
    MemberDailyActivity,
)
from members.scenarios import scenario_welcome_trigger
from rewards.locks import points_accounts_lock
from rewards.models import PointsAccount
from rewards.services.earning import (
    CHECKIN_EVENT,
    EVENT_REFERENCE_PREFIX,
    PURCHASE_EVENT,
    EventAward,
    EventForAward,
    business_date_of,
    events_award_batch,
)
from rewards.services.ledger import system_postings_deferred

LOGIN_EVENT = "login"
MAX_PURCHASE_AMOUNT = Decimal(10) ** 9
CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")


class EventStatus(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


class RejectReason(StrEnum):
    UNKNOWN_MEMBER = "unknown_member"
    UNKNOWN_TYPE = "unknown_type"
    FORBIDDEN_TYPE = "forbidden_type"  # a type members may not post about themselves
    BAD_FIELD = "bad_field"
    OUT_OF_ORDER = "out_of_order"  # older than the accepted lateness
    IN_THE_FUTURE = "in_the_future"


@dataclass(frozen=True, slots=True)
class EventInput:
    event_id: str
    type: str
    occurred_at: datetime
    external_id: str = ""  # members post about themselves: theirs is ignored
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EventResult:
    event_id: str
    status: EventStatus
    reason: RejectReason | None = None
    points_awarded: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


class EventBatchConflictError(ConflictError):
    """Another batch stored one of these event ids for a different member at the same moment."""

    code = "event_batch_conflict"
    title = "A concurrent batch stored some of these events; retry the batch"
    replayable = False


@dataclass(slots=True)
class _Item:
    position: int
    item: EventInput
    stored_id: str
    member: "_MemberRow | None"
    amount: Decimal | None = None
    rejection: RejectReason | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Accepted:
    position: int
    item: EventInput
    stored_id: str
    member: "_MemberRow"
    amount: Decimal | None


@dataclass(frozen=True, slots=True)
class _MemberRow:
    pk: UUID
    external_id: str
    first_purchase_at: datetime | None


@dataclass(frozen=True, slots=True)
class RecordedActivity:
    """An accepted piece of activity, as the rollups and the member's activity times see it."""

    member_id: UUID
    event_type: str
    occurred_at: datetime
    points: int
    counts_as_interaction: bool
    amount: Decimal | None = None


def event_source_for(actor: Actor) -> str:
    """The namespace an actor's event ids live in: its partner namespace, member or operator."""
    if actor.is_partner:
        return str(actor.partner_namespace)
    if actor.is_member:
        return EVENT_SOURCE_MEMBER
    return EVENT_SOURCE_OPERATOR


def event_reference(*, source: str, stored_id: str) -> str:
    """The ledger reference of the points an event earned."""
    return f"{EVENT_REFERENCE_PREFIX}{source}:{stored_id}"


@transaction.atomic
def events_ingest(*, items: Sequence[EventInput], actor: Actor, at: datetime) -> list[EventResult]:
    """Ingest a batch of activity events received at ``at``; one result per item, in order.

    Per item: ``accepted`` (stored, points earned by the earning rules, rolled up into its own
    business day), ``duplicate`` (this source sent the id before, or earlier in the batch) or
    ``rejected`` with a reason (unknown member or type, a type members may not post, a bad
    purchase amount, older than the accepted lateness or in the future). A member posts only
    about themselves. Accepted activity moves members' lifecycle at once, and a first purchase
    fires the welcome scenario.

    :raises EventBatchConflictError: when a concurrent batch stored one of the ids meanwhile.
    """
    source = event_source_for(actor)
    members = _members_resolve(items=items, actor=actor)
    event_types = {event_type.code: event_type for event_type in EventType.objects.all()}
    window = _TimeWindow.of(actor=actor, at=at)
    checked = [
        _item_check(
            position=position,
            item=item,
            member=members.get("" if actor.is_member else item.external_id),
            event_types=event_types,
            actor=actor,
            window=window,
        )
        for position, item in enumerate(items)
    ]

    lockable = sorted({c.member.pk for c in checked if c.rejection is None and c.member})
    # The account locks make concurrent batches over the same members take turns: the stored
    # ids read below are then final for these members, and earning caps stay exact. The wait
    # is bounded (BusyError, 503, when it runs out).
    with lock_timeout():
        accounts = points_accounts_lock(member_ids=lockable, at=at) if lockable else {}
    stored = dict(
        ActivityEvent.objects.filter(
            InArray(F("event_id"), [c.stored_id for c in checked]), source=source
        ).values_list("event_id", "points_awarded")
    )

    accepted: list[_Accepted] = []
    first_of: dict[str, int] = {}
    duplicates_in_batch: list[tuple[_Item, int]] = []
    results: dict[int, EventResult] = {}
    for c in checked:
        if c.stored_id in stored:
            results[c.position] = EventResult(
                c.item.event_id, EventStatus.DUPLICATE, points_awarded=stored[c.stored_id]
            )
        elif c.stored_id in first_of:
            duplicates_in_batch.append((c, first_of[c.stored_id]))
        elif c.rejection is not None or c.member is None:
            results[c.position] = EventResult(
                c.item.event_id, EventStatus.REJECTED, c.rejection, errors=c.errors
            )
        else:
            first_of[c.stored_id] = c.position
            accepted.append(_Accepted(c.position, c.item, c.stored_id, c.member, c.amount))

    # Every batch moves every system account shard: those rows are locked last, after the
    # events, rollups and activity times are written, and held only for the commit.
    with system_postings_deferred():
        points = _accepted_store(
            accepted=accepted,
            source=source,
            accounts=accounts,
            event_types=event_types,
            actor=actor,
            at=at,
        )
    for a in accepted:
        results[a.position] = EventResult(
            a.item.event_id, EventStatus.ACCEPTED, points_awarded=points[a.position]
        )
    for c, first_position in duplicates_in_batch:
        results[c.position] = EventResult(
            c.item.event_id, EventStatus.DUPLICATE, points_awarded=points[first_position]
        )

    _welcome_first_purchases(accepted=accepted, at=at)
    return [results[position] for position in range(len(items))]


def _members_resolve(*, items: Sequence[EventInput], actor: Actor) -> dict[str, _MemberRow]:
    """The items' members by external id (one query); a member actor is always themselves,
    under the key ``""``. Erased members are unknown."""
    queryset = Member.objects.filter(erased_at__isnull=True)
    if actor.is_member:
        queryset = queryset.filter(pk=actor.member_id)
    else:
        queryset = queryset.filter(InArray(F("external_id"), [item.external_id for item in items]))
    rows = [
        _MemberRow(*row) for row in queryset.values_list("pk", "external_id", "first_purchase_at")
    ]
    if actor.is_member:
        return {"": rows[0]} if rows else {}
    return {row.external_id: row for row in rows}


@dataclass(frozen=True, slots=True)
class _TimeWindow:
    """When an accepted event may have occurred, worked out once per batch (reading settings
    per item cost a twentieth of a batch)."""

    earliest: datetime
    latest: datetime
    max_age: timedelta

    @classmethod
    def of(cls, *, actor: Actor, at: datetime) -> "_TimeWindow":
        max_age = (
            timedelta(hours=settings.LOYALTY_MEMBER_EVENT_MAX_AGE_HOURS)
            if actor.is_member
            else timedelta(days=settings.LOYALTY_EVENT_MAX_AGE_DAYS)
        )
        latest = at + timedelta(seconds=settings.LOYALTY_EVENT_MAX_FUTURE_SECONDS)
        return cls(earliest=at - max_age, latest=latest, max_age=max_age)


def _item_check(
    *,
    position: int,
    item: EventInput,
    member: _MemberRow | None,
    event_types: Mapping[str, EventType],
    actor: Actor,
    window: _TimeWindow,
) -> _Item:
    if actor.is_member:
        member_prefix = f"{actor.member_id}:"
        checked = _Item(position, item, member_prefix + item.event_id, member)
    else:
        checked = _Item(position, item, item.event_id, member)

    def reject(reason: RejectReason, detail: str, attr: str | None = None) -> _Item:
        checked.rejection = reason
        checked.errors = [
            {
                "attr": attr,
                "pointer": "#/" + attr.replace(".", "/") if attr else "#",
                "code": reason.value,
                "detail": detail,
            }
        ]
        return checked

    if member is None:
        return reject(
            RejectReason.UNKNOWN_MEMBER, "No member with this external_id.", "external_id"
        )
    event_type = event_types.get(item.type)
    if event_type is None or not event_type.is_active:
        return reject(RejectReason.UNKNOWN_TYPE, f"{item.type!r} is not a registered type.", "type")
    if actor.is_member and not event_type.members_may_post:
        return reject(
            RejectReason.FORBIDDEN_TYPE, f"Members may not report {item.type!r} events.", "type"
        )
    if item.occurred_at > window.latest:
        return reject(RejectReason.IN_THE_FUTURE, "occurred_at is in the future.", "occurred_at")
    if item.occurred_at < window.earliest:
        return reject(
            RejectReason.OUT_OF_ORDER,
            f"occurred_at is more than {_describe(window.max_age)} in the past.",
            "occurred_at",
        )
    if item.type == PURCHASE_EVENT:
        try:
            checked.amount = purchase_amount_parse(item.properties)
        except ValueError as error:
            attr = f"properties.{error.args[1]}" if len(error.args) > 1 else "properties"
            return reject(RejectReason.BAD_FIELD, str(error.args[0]), attr)
    return checked


def _describe(age: timedelta) -> str:
    return f"{age.days} days" if age.days else f"{age.seconds // 3600} hours"


def purchase_amount_parse(properties: Mapping[str, Any]) -> Decimal:
    """A purchase's ``amount`` (a decimal string or a number, 0 to 10^9, at most 2 decimal
    places) and optional ``currency`` (an ISO 4217 code) from its properties.

    :raises ValueError: with a message and the property's name.
    """
    raw = properties.get("amount")
    if raw is None:
        raise ValueError("A purchase needs an amount.", "amount")
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError("amount must be a decimal string or a number.", "amount")
    try:
        amount = Decimal(str(raw).strip())
    except InvalidOperation:
        raise ValueError("amount must be a decimal string or a number.", "amount") from None
    if not amount.is_finite() or not 0 <= amount <= MAX_PURCHASE_AMOUNT:
        raise ValueError(f"amount must be from 0 to {MAX_PURCHASE_AMOUNT}.", "amount")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        raise ValueError("amount has at most 2 decimal places.", "amount")
    currency = properties.get("currency")
    if currency is not None and not (
        isinstance(currency, str) and CURRENCY_PATTERN.fullmatch(currency)
    ):
        raise ValueError("currency must be a three-letter ISO 4217 code.", "currency")
    return amount


def _accepted_store(
    *,
    accepted: Sequence[_Accepted],
    source: str,
    accounts: Mapping[UUID, PointsAccount],
    event_types: Mapping[str, EventType],
    actor: Actor,
    at: datetime,
) -> dict[int, int]:
    """Earn, store and roll up the accepted events, with the members' accounts locked. Returns
    the points per item position."""
    require_transaction()
    if not accepted:
        return {}
    try:
        awards = events_award_batch(
            items=[
                EventForAward(
                    member_id=a.member.pk,
                    event_type=a.item.type,
                    reference=event_reference(source=source, stored_id=a.stored_id),
                    occurred_at=a.item.occurred_at,
                    amount=a.amount,
                )
                for a in accepted
            ],
            actor=actor,
            at=at,
            accounts=accounts,
        )
        _events_insert(accepted=accepted, awards=awards, source=source, at=at)
    except IntegrityError as error:
        # Only possible when a concurrent batch stored the same id for another member (whose
        # account lock we do not hold) or earned the same reference: the batch rolls back.
        raise EventBatchConflictError() from error
    activity_record(
        records=[
            RecordedActivity(
                member_id=a.member.pk,
                event_type=a.item.type,
                occurred_at=a.item.occurred_at,
                points=award.points,
                counts_as_interaction=event_types[a.item.type].counts_as_interaction,
                amount=a.amount,
            )
            for a, award in zip(accepted, awards, strict=True)
        ],
        at=at,
    )
    return {a.position: award.points for a, award in zip(accepted, awards, strict=True)}


def _events_insert(
    *, accepted: Sequence[_Accepted], awards: Sequence[EventAward], source: str, at: datetime
) -> None:
    """Store the accepted events with the points they earned: on PostgreSQL one ``INSERT ...
    SELECT FROM unnest`` of column arrays (no model instances), elsewhere ``bulk_create``."""
    if not is_postgres():
        ActivityEvent.objects.bulk_create(
            [
                ActivityEvent(
                    source=source,
                    event_id=a.stored_id,
                    member_id=a.member.pk,
                    type=a.item.type,
                    occurred_at=a.item.occurred_at,
                    business_date=business_date_of(a.item.occurred_at),
                    properties=dict(a.item.properties),
                    points_awarded=award.points,
                    received_at=at,
                )
                for a, award in zip(accepted, awards, strict=True)
            ]
        )
        return
    days: dict[datetime, date] = {}
    for a in accepted:
        if a.item.occurred_at not in days:
            days[a.item.occurred_at] = business_date_of(a.item.occurred_at)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {ActivityEvent._meta.db_table} (source, event_id, member_id, type, "  # noqa: S608 - names from the model
            "occurred_at, business_date, properties, points_awarded, received_at) "
            "SELECT %s, event_id, member_id, type, occurred_at, business_date, properties, "
            "points_awarded, %s FROM unnest(%b::text[], %b::uuid[], %b::text[], "
            "%b::timestamptz[], %b::date[], %b::jsonb[], %b::bigint[]) AS v (event_id, "
            "member_id, type, occurred_at, business_date, properties, points_awarded)",
            [
                source,
                at,
                [a.stored_id for a in accepted],
                [a.member.pk for a in accepted],
                [a.item.type for a in accepted],
                [a.item.occurred_at for a in accepted],
                [days[a.item.occurred_at] for a in accepted],
                [json.dumps(a.item.properties) for a in accepted],
                [award.points for award in awards],
            ],
        )


def _welcome_first_purchases(*, accepted: Sequence[_Accepted], at: datetime) -> None:
    """Members without a purchase before this batch whose first purchase is in it."""
    first: dict[UUID, tuple[_MemberRow, datetime]] = {}
    for a in accepted:
        if a.item.type != PURCHASE_EVENT or a.member.first_purchase_at is not None:
            continue
        known = first.get(a.member.pk)
        if known is None or a.item.occurred_at < known[1]:
            first[a.member.pk] = (a.member, a.item.occurred_at)
    if first:
        scenario_welcome_trigger(
            members=[(row.pk, row.external_id, when) for row, when in first.values()], at=at
        )


# --- Recording activity: daily rollups, activity times, lifecycle ------------------------------


def checkin_activity_record(*, member_id: UUID, at: datetime, points: int) -> None:
    """Count the daily check-in (``me/check-ins/``) as the member's activity: an interaction in
    the day's rollup with the points it earned, and the lifecycle it implies."""
    activity_record(
        records=[
            RecordedActivity(
                member_id=member_id,
                event_type=CHECKIN_EVENT,
                occurred_at=at,
                points=points,
                counts_as_interaction=True,
            )
        ],
        at=at,
    )


def activity_record(*, records: Sequence[RecordedActivity], at: datetime) -> None:
    """Add accepted activity to the daily rollups and the members' activity times, set-based,
    then bring the members' lifecycle stages up to date."""
    require_transaction()
    if not records:
        return
    member_ids = sorted({record.member_id for record in records})
    member_reads_changed(member_ids)
    _daily_activity_add(records)
    _members_activity_touch(records)
    lifecycle_refresh(member_ids=member_ids, at=at)


_ROLLUP_COUNTERS = (
    "interactions",
    "logins",
    "checkins",
    "posts",
    "comments",
    "likes",
    "shares",
    "purchases",
    "support_inquiries",
    "courses_completed",
    "other_events",
    "points_earned",
)


def _daily_activity_add(records: Iterable[RecordedActivity]) -> None:
    """Increment each (member, business day) rollup by the batch's activity: one statement.

    ``INSERT ... ON CONFLICT DO UPDATE SET n = n + EXCLUDED.n`` (PostgreSQL, SQLite >= 3.24)
    increments atomically, so concurrent batches never lose a count.
    """
    counters: dict[tuple[UUID, date], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    amounts: dict[tuple[UUID, date], Decimal] = defaultdict(Decimal)
    for record in records:
        day = (record.member_id, business_date_of(record.occurred_at))
        row = counters[day]
        row[ROLLUP_COLUMNS.get(record.event_type, ROLLUP_OTHER_COLUMN)] += 1
        if record.counts_as_interaction:
            row["interactions"] += 1
        row["points_earned"] += record.points
        amounts[day] += record.amount or Decimal(0)

    meta = MemberDailyActivity._meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    columns = ["member_id", "business_date", *_ROLLUP_COUNTERS, "purchase_amount"]
    increments = ", ".join(
        f"{quote(name)} = {table}.{quote(name)} + EXCLUDED.{quote(name)}"
        for name in (*_ROLLUP_COUNTERS, "purchase_amount")
    )
    if is_postgres():
        # One array per column: no statement size limit, and no per-value parameters to bind.
        keys = list(counters)
        arrays: list[list[Any]] = [[member_id for member_id, _ in keys], [day for _, day in keys]]
        arrays += [[counters[key][name] for key in keys] for name in _ROLLUP_COUNTERS]
        arrays.append([amounts[key] for key in keys])
        types = [meta.get_field(name).db_type(connection) for name in _ROLLUP_COUNTERS]
        casts = ", ".join(f"%b::{db_type}[]" for db_type in ("uuid", "date", *types, "numeric"))
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(map(quote, columns))}) "  # noqa: S608
                f"SELECT * FROM unnest({casts}) "
                f"ON CONFLICT (member_id, business_date) DO UPDATE SET {increments}",
                arrays,
            )
        return
    member_field, date_field = meta.get_field("member"), meta.get_field("business_date")
    amount_field = meta.get_field("purchase_amount")
    rows = [
        [
            member_field.get_db_prep_value(member_id, connection),
            date_field.get_db_prep_value(day, connection),
            *(row[name] for name in _ROLLUP_COUNTERS),
            amount_field.get_db_prep_value(amounts[member_id, day], connection),
        ]
        for (member_id, day), row in counters.items()
    ]
    row_sql = "(" + ", ".join(["%s"] * len(columns)) + ")"
    with connection.cursor() as cursor:
        for chunk in chunked(rows, _rows_per_statement(len(columns))):
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(map(quote, columns))}) "  # noqa: S608
                f"VALUES {', '.join([row_sql] * len(chunk))} "
                f"ON CONFLICT (member_id, business_date) DO UPDATE SET {increments}",
                [value for row in chunk for value in row],
            )


# Member activity times: (column, keeps the earliest?, which records count).
_ACTIVITY_TIMES = (
    ("first_interaction_at", True, lambda record: record.counts_as_interaction),
    ("last_interaction_at", False, lambda record: record.counts_as_interaction),
    ("first_purchase_at", True, lambda record: record.event_type == PURCHASE_EVENT),
    ("last_purchase_at", False, lambda record: record.event_type == PURCHASE_EVENT),
    ("last_login_at", False, lambda record: record.event_type == LOGIN_EVENT),
    ("last_activity_at", False, lambda record: True),
)


def _members_activity_touch(records: Iterable[RecordedActivity]) -> None:
    """Move each member's activity times to include the batch: first_* only ever earlier,
    last_* only ever later (a late event never rewinds them). One UPDATE ... FROM (VALUES), from
    arrays on PostgreSQL."""
    times: dict[UUID, dict[str, datetime]] = defaultdict(dict)
    for record in records:
        member_times = times[record.member_id]
        for column, earliest, counts in _ACTIVITY_TIMES:
            if not counts(record):
                continue
            known = member_times.get(column)
            if known is None or (
                record.occurred_at < known if earliest else record.occurred_at > known
            ):
                member_times[column] = record.occurred_at

    meta = Member._meta
    columns = [column for column, _, _ in _ACTIVITY_TIMES]
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    assignments = []
    for column, earliest, _ in _ACTIVITY_TIMES:
        current, new = f"{table}.{quote(column)}", f"v.{quote(column)}"
        closer = "<" if earliest else ">"
        assignments.append(
            f"{quote(column)} = CASE WHEN {new} IS NULL THEN {current} "
            f"WHEN {current} IS NULL OR {new} {closer} {current} THEN {new} ELSE {current} END"
        )
    if is_postgres():
        # One array per column, in the order of the rows below (the members' first records).
        arrays: list[list[Any]] = [list(times)]
        arrays += [
            [member_times.get(column) for member_times in times.values()] for column in columns
        ]
        with connection.cursor() as cursor:
            cursor.execute(
                f"WITH v (id, {', '.join(map(quote, columns))}) AS "  # noqa: S608
                f"(SELECT * FROM unnest(%b::uuid[], {', '.join(['%b::timestamptz[]'] * len(columns))})) "
                f"UPDATE {table} SET {', '.join(assignments)} FROM v WHERE {table}.id = v.id",
                arrays,
            )
        return
    pk_field = meta.pk
    time_field = meta.get_field("last_activity_at")
    rows = [
        [
            pk_field.get_db_prep_value(member_id, connection),  # type: ignore[union-attr]
            *(
                time_field.get_db_prep_value(member_times.get(column), connection)
                for column in columns
            ),
        ]
        for member_id, member_times in times.items()
    ]
    row_sql = "(" + ", ".join(["%s"] * (len(columns) + 1)) + ")"
    with connection.cursor() as cursor:
        for chunk in chunked(rows, _rows_per_statement(len(columns) + 1)):
            cursor.execute(
                f"WITH v (id, {', '.join(map(quote, columns))}) AS "  # noqa: S608
                f"(VALUES {', '.join([row_sql] * len(chunk))}) "
                f"UPDATE {table} SET {', '.join(assignments)} FROM v WHERE {table}.id = v.id",
                [value for row in chunk for value in row],
            )


def _rows_per_statement(columns: int) -> int:
    """How many rows one multi-row statement may carry under the backend's parameter limit."""
    limit = connection.features.max_query_params or 65_535
    return max(1, limit // columns)
