"""The single write path of the points ledger.

Every posting runs with the member's account row locked (``rewards.locks``), appends an
immutable entry whose ``version`` and ``balance_after`` continue the account's chain, moves
points between lots, and writes the account back guarded by its version (so even the SQLite demo,
where row locks do nothing, cannot lose an update). Spending never takes ``available`` below zero;
only a reversal may (debt), and debt blocks spending until new points repay it.

The ledger is double-entry: each entry names its system counter account, and the same write
moves that account (the member's shard of it) by minus the entry's points, so members and
system accounts always sum to zero.
"""

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

import uuid6
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Max, Sum

from core.actors import Actor
from core.broker import enqueue_on_commit
from core.db import (
    InArray,
    insert_parts,
    is_postgres,
    joins_transaction,
    require_transaction,
)
from core.events import OUTBOX_SKIP_DUPLICATE, DomainEvent, domain_events_record, outbox_rows
from core.exceptions import ConflictError, InvalidInputError, NotFoundError
from core.models import OutboxEvent
from core.read_cache import member_reads_changed
from members.exceptions import MemberErasedError
from members.models import Member
from rewards.locks import points_accounts_lock
from rewards.models import (
    COUNTER_ACCOUNT_OF_KIND,
    EntryKind,
    LotConsumption,
    PointsAccount,
    PointsEntry,
    PointsLot,
    Reason,
    SystemAccountBalance,
)


class InsufficientPointsError(ConflictError):
    code = "insufficient_points"
    title = "Not enough available points"


class BalanceInDebtError(ConflictError):
    code = "balance_in_debt"
    title = "The balance is negative after a refund; spending is blocked until it is repaid"


class AlreadyReversedError(ConflictError):
    code = "already_reversed"
    title = "This entry has already been reversed"


class NotReversibleError(ConflictError):
    code = "not_reversible"
    title = "This entry cannot be reversed"


class DuplicateAwardError(ConflictError):
    code = "duplicate_award"
    title = "Points for this reference were already awarded"


@dataclass(slots=True)
class _Posting:
    """What one locked posting writes; collected so batches write set-based."""

    entries: list[PointsEntry] = field(default_factory=list)
    lots: list[PointsLot] = field(default_factory=list)
    lot_updates: dict[int, PointsLot] = field(default_factory=dict)
    # (entry, lot, points): entries have no id until inserted.
    consumptions: list[tuple[PointsEntry, PointsLot, int]] = field(default_factory=list)
    events: list[DomainEvent] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AwardSpec:
    member_id: UUID
    points: int
    reason: str
    note: str = ""
    expires_at: datetime | None = None
    pending_until: datetime | None = None
    reference: str = ""
    idempotency_key: str = ""
    kind: str = EntryKind.EARN


def _default_expiry(at: datetime) -> datetime:
    return at + timedelta(days=settings.LOYALTY_POINTS_EXPIRY_DAYS)


def _validate_award(spec: AwardSpec, at: datetime) -> None:
    errors = []
    if not 0 < spec.points <= settings.LOYALTY_POINTS_MAX_AWARD:
        errors.append(("points", f"Must be from 1 to {settings.LOYALTY_POINTS_MAX_AWARD}."))
    if spec.expires_at is not None and spec.expires_at <= at:
        errors.append(("expires_at", "Must be in the future."))
    if spec.pending_until is not None:
        if spec.pending_until <= at:
            errors.append(("pending_until", "Must be in the future."))
        elif spec.pending_until >= (spec.expires_at or _default_expiry(at)):
            errors.append(("pending_until", "Must be before the points expire."))
    if errors:
        raise InvalidInputError(
            "; ".join(detail for _, detail in errors),
            errors=[
                {"attr": attr, "pointer": f"#/{attr}", "code": "invalid", "detail": detail}
                for attr, detail in errors
            ],
        )


def _next_entry(
    account: PointsAccount,
    *,
    kind: str,
    points: int,
    reason: str,
    actor: Actor,
    at: datetime,
    **fields: Any,
) -> PointsEntry:
    account.version += 1
    reverses: PointsEntry | None = fields.get("reverses")
    return PointsEntry(
        member_id=account.pk,
        version=account.version,
        kind=kind,
        points=points,
        # A reversal makes whole the system account its target moved.
        counter_account=(
            reverses.counter_account
            if kind == EntryKind.REVERSE and reverses is not None
            else COUNTER_ACCOUNT_OF_KIND[kind]
        ),
        balance_after=account.balance,
        reason=reason,
        actor=actor.label,
        created_at=at,
        **fields,
    )


def _credit_locked(
    account: PointsAccount,
    spec: AwardSpec,
    *,
    actor: Actor,
    at: datetime,
    posting: _Posting,
    reverses: PointsEntry | None = None,
) -> PointsEntry:
    """Add points as a new lot; non-pending points repay any debt first."""
    pending = spec.pending_until is not None
    repay = 0 if pending else min(max(0, -account.available), spec.points)
    if pending:
        account.pending += spec.points
    else:
        account.available += spec.points
    if spec.kind == EntryKind.EARN:
        account.lifetime_earned += spec.points
    entry = _next_entry(
        account,
        kind=spec.kind,
        points=spec.points,
        reason=spec.reason,
        actor=actor,
        at=at,
        note=spec.note,
        reference=spec.reference,
        idempotency_key=spec.idempotency_key,
        reverses=reverses,
    )
    lot = PointsLot(
        entry=entry,
        member_id=account.pk,
        points=spec.points,
        remaining=spec.points - repay,
        expires_at=spec.expires_at or _default_expiry(at),
        pending_until=spec.pending_until,
        is_pending=pending,
        created_at=at,
    )
    posting.entries.append(entry)
    posting.lots.append(lot)
    # The entry carries its lot, so callers render it without reading it back.
    PointsEntry.lot.related.set_cached_value(entry, lot)
    if repay:
        # The new lot pays the debt off at once: recorded as consumed by its own entry.
        posting.consumptions.append((entry, lot, repay))
    posting.events.append(
        DomainEvent(
            "points.awarded",
            str(account.pk),
            {
                "member_id": str(account.pk),
                "points": spec.points,
                "kind": spec.kind,
                "reason": spec.reason,
                "pending_until": spec.pending_until.isoformat() if spec.pending_until else None,
            },
            at,
        )
    )
    return entry


def _consume_fifo(
    account: PointsAccount, points: int, entry: PointsEntry, posting: _Posting, at: datetime
) -> int:
    """Take up to ``points`` from the oldest-expiring available lots. Returns what was taken."""
    taken = 0
    lots = PointsLot.objects.filter(
        member_id=account.pk, remaining__gt=0, is_pending=False
    ).order_by("expires_at", "entry_id")
    for stored in lots:
        if taken == points:
            break
        lot = posting.lot_updates.get(stored.pk, stored)
        share = min(lot.remaining, points - taken)
        if share <= 0:
            continue
        lot.remaining -= share
        taken += share
        posting.lot_updates[lot.pk] = lot
        posting.consumptions.append((entry, lot, share))
    return taken


def _debit_locked(
    account: PointsAccount,
    *,
    points: int,
    kind: str,
    reason: str,
    actor: Actor,
    at: datetime,
    posting: _Posting,
    note: str = "",
    reference: str = "",
    idempotency_key: str = "",
) -> PointsEntry:
    """Spend points oldest lots first; never below zero, never while in debt."""
    if points <= 0:
        raise InvalidInputError("Points must be positive.")
    if account.available < 0:
        raise BalanceInDebtError(f"The available balance is {account.available}.")
    if account.available < points:
        raise InsufficientPointsError(f"{points} points requested, {account.available} available.")
    account.available -= points
    entry = _next_entry(
        account,
        kind=kind,
        points=-points,
        reason=reason,
        actor=actor,
        at=at,
        note=note,
        reference=reference,
        idempotency_key=idempotency_key,
    )
    posting.entries.append(entry)
    _consume_fifo(account, points, entry, posting, at)
    return entry


def _write(
    accounts: Sequence[PointsAccount], versions: dict[UUID, int], posting: _Posting, at: datetime
) -> None:
    """Persist a posting set-based: entries, lots, lot changes, consumptions, events, then the
    member accounts and the system accounts' shards."""
    require_transaction()
    if posting.entries:
        PointsEntry.objects.bulk_create(posting.entries)
    if posting.lots:
        for lot in posting.lots:
            lot.entry_id = lot.entry.pk
        PointsLot.objects.bulk_create(posting.lots)
    if posting.lot_updates:
        PointsLot.objects.bulk_update(list(posting.lot_updates.values()), ["remaining"])
    if posting.consumptions:
        LotConsumption.objects.bulk_create(
            [
                LotConsumption(entry_id=e.pk, lot_id=lot.pk, points=p)
                for e, lot, p in posting.consumptions
            ]
        )
    if posting.events:
        domain_events_record(events=posting.events, at=at)
    # Last: the system shards are the ledger's most shared rows, locked from here to the commit.
    _balances_save(accounts, versions, _system_postings(posting.entries), at)
    member_reads_changed([account.member_id for account in accounts])


def system_account_shard(member_id: UUID) -> int:
    """The shard of every system account that the member's postings move: fixed per member, and
    even across members (a UUID's low bits are random, v4 or v7)."""
    return member_id.int % settings.LOYALTY_SYSTEM_ACCOUNT_SHARDS


def _system_postings(entries: Sequence[PointsEntry]) -> list[tuple[str, int, int]]:
    """The system side of the entries: (account, shard, change), one per touched shard, sorted.

    Every posting locks shard rows in this (account, shard) order, after its member accounts,
    so two postings can never wait for each other in a cycle.
    """
    changes: defaultdict[tuple[str, int], int] = defaultdict(int)
    for entry in entries:
        changes[entry.counter_account, system_account_shard(entry.member_id)] -= entry.points
    return [
        (account, shard, change) for (account, shard), change in sorted(changes.items()) if change
    ]


_ACCOUNT_FIELDS = ("available", "pending", "lifetime_earned", "version")


def _balances_save(
    accounts: Sequence[PointsAccount],
    versions: dict[UUID, int],
    system: Sequence[tuple[str, int, int]],
    at: datetime,
) -> None:
    """Write changed accounts in one UPDATE, each guarded by the version read under its lock (a
    lost update is impossible even where row locks are not enforced, SQLite), and add ``system``
    to the system shards.

    On PostgreSQL both go in one statement: the shard upsert is a data-modifying CTE, which runs
    to completion whatever the outer UPDATE does, while the row count is the UPDATE's. Elsewhere
    the upsert is a second statement. ``UPDATE ... FROM (VALUES ...)`` (PostgreSQL, SQLite >=
    3.33) is one statement for a batch of any size, built as plain SQL because ORM CASE
    expressions cost seconds at 1,000 rows.
    """
    changed = [account for account in accounts if account.version != versions[account.pk]]
    if not changed:
        return
    sql, params = _accounts_update(changed, versions, at)
    together = bool(system) and is_postgres()
    if together:
        upsert, upsert_params = _system_upsert(system)
        sql, params = f"WITH system_postings AS ({upsert}) {sql}", [*upsert_params, *params]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        updated = cursor.rowcount
        if updated == len(changed) and system and not together:
            cursor.execute(*_system_upsert(system))
    if updated != len(changed):
        raise ConflictError("An account changed concurrently; retry.")


def _accounts_update(
    changed: Sequence[PointsAccount], versions: dict[UUID, int], at: datetime
) -> tuple[str, list[object]]:
    table = PointsAccount._meta.db_table
    pk_field = PointsAccount._meta.pk
    updated_at = connection.ops.adapt_datetimefield_value(at)
    if len(changed) == 1:
        account = changed[0]
        sql = (
            f"UPDATE {table} SET available = %s, pending = %s, lifetime_earned = %s, "  # noqa: S608 - names from the model
            "version = %s, updated_at = %s WHERE member_id = %s AND version = %s"
        )
        return sql, [
            *(getattr(account, name) for name in _ACCOUNT_FIELDS),
            updated_at,
            pk_field.get_db_prep_value(account.pk, connection),
            versions[account.pk],
        ]
    rows = []
    params: list[object] = [updated_at]
    for account in changed:
        rows.append("(%s, %s, %s, %s, %s, %s)")
        params.extend(
            [
                pk_field.get_db_prep_value(account.pk, connection),
                versions[account.pk],
                account.available,
                account.pending,
                account.lifetime_earned,
                account.version,
            ]
        )
    cast = "::uuid" if is_postgres() else ""
    sql = (
        f"UPDATE {table} SET available = v.column3, pending = v.column4, "  # noqa: S608 - names from the model
        "lifetime_earned = v.column5, version = v.column6, updated_at = %s "
        f"FROM (VALUES {', '.join(rows)}) AS v "
        f"WHERE {table}.member_id = v.column1{cast} AND {table}.version = v.column2"
    )
    return sql, params


def _system_upsert(system: Sequence[tuple[str, int, int]]) -> tuple[str, list[object]]:
    """Add the changes to their shards; a shard row that is missing (a new shard count, a test's
    flushed tables) is created. VALUES rows are applied, and locked, in the order given."""
    table = SystemAccountBalance._meta.db_table
    sql = (
        f"INSERT INTO {table} (account, shard, balance) "  # noqa: S608 - names from the model
        f"VALUES {', '.join(['(%s, %s, %s)'] * len(system))} "
        f"ON CONFLICT (account, shard) DO UPDATE SET balance = {table}.balance + excluded.balance"
    )
    return sql, [value for row in system for value in row]


def _lock_one(member_id: UUID, at: datetime) -> tuple[PointsAccount, dict[UUID, int]]:
    account = points_accounts_lock(member_ids=[member_id], at=at)[member_id]
    return account, {account.pk: account.version}


def _raise_duplicate(error: IntegrityError) -> None:
    message = str(error)
    # PostgreSQL names the constraint; SQLite names the columns.
    if "points_entry_one_earn_per_reference" in message or "pointsentry.reference" in message:
        raise DuplicateAwardError() from error
    if "points_entry_idempotency_unique" in message or "pointsentry.idempotency_key" in message:
        raise DuplicateAwardError("An entry with this idempotency key exists.") from error
    raise error


@joins_transaction
def points_award(
    *,
    member: Member | UUID,
    points: int,
    reason: str,
    actor: Actor,
    at: datetime,
    note: str = "",
    expires_at: datetime | None = None,
    pending_until: datetime | None = None,
    reference: str = "",
    kind: str = EntryKind.EARN,
) -> PointsEntry:
    """Credit points to the member as a new lot (pending until ``pending_until`` if given).

    ``member`` may be the member's id when the caller has not read the member (the award
    endpoint): the hot path then reads no member row, and the member is read only when that path
    cannot serve (a reference, no account yet, SQLite), to refuse a missing or erased member.

    :raises InvalidInputError: for a non-positive amount or dates in the past.
    :raises DuplicateAwardError: when the reference was already awarded.
    :raises MemberErasedError: the member is erased (409).
    :raises NotFoundError: no member has this id (only when given an id).
    """
    member_id = member.pk if isinstance(member, Member) else member
    spec = AwardSpec(
        member_id, points, reason, note, expires_at, pending_until, reference, kind=kind
    )
    _validate_award(spec, at)
    # A reference can collide with an earlier award: that needs the savepoint of the general path.
    entry = None if reference or not is_postgres() else _credit_one_postgres(spec, actor, at)
    if entry is None:
        if not isinstance(member, Member):
            member = _member_get(member_id)
        if member.is_erased:
            raise MemberErasedError("An erased member cannot earn points.")
        account, versions = _lock_one(member.pk, at)
        posting = _Posting()
        entry = _credit_locked(account, spec, actor=actor, at=at, posting=posting)
        if not reference:
            # Nothing unique can collide: no savepoint needed.
            _write([account], versions, posting, at)
        else:
            try:
                with transaction.atomic():
                    _write([account], versions, posting, at)
            except IntegrityError as error:
                _raise_duplicate(error)
    threshold = settings.LOYALTY_TIER_REASSESS_AWARD_THRESHOLD
    if threshold and points >= threshold:
        _tier_reassess_after_commit(member_id, "big_award")
    return entry


def _member_get(member_id: UUID) -> Member:
    """The member to credit (what the general path needs of it: the id and the erasure)."""
    member = Member.objects.filter(pk=member_id).only("pk", "erased_at").first()
    if member is None:
        raise NotFoundError("No member with this id.")
    return member


def _credit_one_postgres(spec: AwardSpec, actor: Actor, at: datetime) -> PointsEntry | None:
    """One award in two statements (the award endpoint's hot path, PostgreSQL only).

    The first moves the account forward in an ``UPDATE ... RETURNING``, which takes the row lock
    before anything else (the lock order of every posting) and hands back the state to chain the
    entry on; the second inserts the entry, its lot, a debt repayment, the outbox event and the
    system shard's change, chained by CTEs. ``None`` when the member has no account yet (the
    general path creates it) or is erased (the general path refuses it), so the caller need not
    have read the member.
    """
    pending = spec.pending_until is not None
    available_delta = 0 if pending else spec.points
    pending_delta = spec.points if pending else 0
    earned_delta = spec.points if spec.kind == EntryKind.EARN else 0
    with connection.cursor() as cursor:
        # An account exists only for an existing member (its primary key is the member's).
        cursor.execute(
            f"UPDATE {PointsAccount._meta.db_table} SET available = available + %s, "  # noqa: S608 - names from the model
            "pending = pending + %s, lifetime_earned = lifetime_earned + %s, "
            "version = version + 1, updated_at = %s WHERE member_id = %s "
            f"AND NOT EXISTS (SELECT 1 FROM {Member._meta.db_table} "
            "WHERE id = %s AND erased_at IS NOT NULL) "
            "RETURNING available, pending, lifetime_earned, version",
            [available_delta, pending_delta, earned_delta, at, spec.member_id, spec.member_id],
        )
        row = cursor.fetchone()
        if row is None:
            return None
        member_reads_changed([spec.member_id])
        available, pending_points, earned, version = row
        # The account as it stood just before this posting; the UPDATE's lock holds it there.
        account = PointsAccount(
            member_id=spec.member_id,
            available=available - available_delta,
            pending=pending_points - pending_delta,
            lifetime_earned=earned - earned_delta,
            version=version - 1,
            updated_at=at,
        )
        posting = _Posting()
        entry = _credit_locked(account, spec, actor=actor, at=at, posting=posting)
        cursor.execute(*_credit_insert(posting, at))
        (entry.pk,) = cursor.fetchone()
    lot = posting.lots[0]
    lot.entry_id = entry.pk
    entry._state.adding = lot._state.adding = False
    return entry


def _credit_insert(posting: _Posting, at: datetime) -> tuple[str, list[object]]:
    """The one statement writing a single credit posting (see ``_credit_one_postgres``)."""
    (entry,), (lot,) = posting.entries, posting.lots
    ctes: list[str] = []
    params: list[object] = []
    system = _system_postings(posting.entries)
    if system:
        upsert, upsert_params = _system_upsert(system)
        ctes.append(f"system_postings AS ({upsert})")
        params += upsert_params
    for index, event in enumerate(outbox_rows(events=posting.events, at=at)):
        table, columns, placeholders, values = insert_parts(event)
        ctes.append(
            f"event_{index} AS (INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608 - names from the model
            f"VALUES ({', '.join(placeholders)}) ON CONFLICT DO NOTHING)"
        )
        params += values
    table, columns, placeholders, values = insert_parts(entry)
    ctes.append(
        f"new_entry AS (INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608 - names from the model
        f"VALUES ({', '.join(placeholders)}) RETURNING id)"
    )
    params += values
    table, columns, placeholders, values = insert_parts(lot, skip={"entry"}, cast=True)
    ctes.append(
        f"new_lot AS (INSERT INTO {table} (entry_id, {', '.join(columns)}) "  # noqa: S608 - names from the model
        f"SELECT id, {', '.join(placeholders)} FROM new_entry RETURNING entry_id)"
    )
    params += values
    if posting.consumptions:
        ((_, _, repaid),) = posting.consumptions
        ctes.append(
            f"repayment AS (INSERT INTO {LotConsumption._meta.db_table} (entry_id, lot_id, points) "  # noqa: S608 - names from the model
            "SELECT entry_id, entry_id, %s FROM new_lot)"
        )
        params.append(repaid)
    return f"WITH {', '.join(ctes)} SELECT entry_id FROM new_lot", params  # noqa: S608


def _tier_reassess_after_commit(member_id: UUID, trigger: str) -> None:
    """Qualifying points moved a lot: reassess the member's tier once this commits."""
    from tiers.tasks import reassess_members_task  # the tier engine reads the ledger

    enqueue_on_commit(
        partial(reassess_members_task.delay, member_ids=[str(member_id)], trigger=trigger),
        what="the member's tier reassessment",
    )


@joins_transaction
def points_deduct(
    *,
    member: Member,
    points: int,
    reason: str,
    actor: Actor,
    at: datetime,
    note: str = "",
    kind: str = EntryKind.ADJUST,
    reference: str = "",
) -> PointsEntry:
    """Take points from the member, oldest lots first.

    :raises InsufficientPointsError: when fewer points are available.
    :raises BalanceInDebtError: while the balance is negative after a refund.
    """
    if not 0 < points <= settings.LOYALTY_POINTS_MAX_AWARD:
        raise InvalidInputError(f"Points must be from 1 to {settings.LOYALTY_POINTS_MAX_AWARD}.")
    account, versions = _lock_one(member.pk, at)
    posting = _Posting()
    entry = _debit_locked(
        account,
        points=points,
        kind=kind,
        reason=reason,
        actor=actor,
        at=at,
        posting=posting,
        note=note,
        reference=reference,
    )
    _write([account], versions, posting, at)
    return entry


@joins_transaction
def points_reverse(
    *, entry: PointsEntry, actor: Actor, at: datetime, reason: str = Reason.REFUND, note: str = ""
) -> PointsEntry:
    """Reverse an entry once. An earn (even pending, even already spent) is taken back, into a
    negative balance if need be; a spend is credited back as a new lot.

    :raises NotReversibleError: for expiries, reversals, or points that have all expired.
    :raises AlreadyReversedError: when it was reversed before.
    """
    if entry.kind in (EntryKind.EXPIRE, EntryKind.REVERSE):
        raise NotReversibleError(f"A {entry.kind} entry cannot be reversed.")
    account, versions = _lock_one(entry.member_id, at)
    if PointsEntry.objects.filter(reverses=entry).exists():
        raise AlreadyReversedError()
    posting = _Posting()
    if entry.points > 0:
        reversal = _reverse_credit_locked(
            account, entry, actor=actor, at=at, reason=reason, note=note, posting=posting
        )
    else:
        restored_expiry = LotConsumption.objects.filter(entry=entry).aggregate(
            latest=Max("lot__expires_at")
        )["latest"]
        spec = AwardSpec(
            account.pk,
            -entry.points,
            reason,
            note,
            expires_at=max(restored_expiry, at + timedelta(days=1)) if restored_expiry else None,
            kind=EntryKind.REVERSE,
        )
        reversal = _credit_locked(
            account, spec, actor=actor, at=at, posting=posting, reverses=entry
        )
    try:
        with transaction.atomic():
            _write([account], versions, posting, at)
    except IntegrityError as error:
        if "reverses_id" in str(error) or "reversed" in str(error):
            raise AlreadyReversedError() from error
        raise
    if entry.kind == EntryKind.EARN:
        # A refund takes qualifying points back: the tier is recomputed (SPEC §2 "Points").
        _tier_reassess_after_commit(entry.member_id, "refund")
    return reversal


def _reverse_credit_locked(
    account: PointsAccount,
    entry: PointsEntry,
    *,
    actor: Actor,
    at: datetime,
    reason: str,
    note: str,
    posting: _Posting,
) -> PointsEntry:
    lot = PointsLot.objects.get(entry=entry)
    expired = (
        LotConsumption.objects.filter(lot=lot, entry__kind=EntryKind.EXPIRE).aggregate(
            total=Sum("points")
        )["total"]
        or 0
    )
    amount = entry.points - expired  # expired points have left already; take back the rest
    if amount <= 0:
        raise NotReversibleError("All of these points have expired; nothing is left to reverse.")
    from_lot = lot.remaining
    if lot.is_pending:
        account.pending -= from_lot
    else:
        account.available -= amount
    reversal = _next_entry(
        account,
        kind=EntryKind.REVERSE,
        points=-amount,
        reason=reason,
        actor=actor,
        at=at,
        note=note,
        reverses=entry,
        reference=f"reversal:{entry.pk}",
    )
    posting.entries.append(reversal)
    if from_lot:
        lot.remaining = 0
        posting.lot_updates[lot.pk] = lot
        posting.consumptions.append((reversal, lot, from_lot))
    if not lot.is_pending and amount > from_lot:
        # The spent part: cover it from other lots; what they cannot cover stays as debt.
        _consume_fifo(account, amount - from_lot, reversal, posting, at)
    posting.events.append(
        DomainEvent(
            "points.reversed",
            str(account.pk),
            {"member_id": str(account.pk), "entry_id": entry.pk, "points": -amount},
            at,
        )
    )
    return reversal


_deferred_system_postings: ContextVar[defaultdict[tuple[str, int], int] | None] = ContextVar(
    "deferred_system_postings", default=None
)


@contextmanager
def system_postings_deferred() -> Iterator[None]:
    """Within the block, ``credits_post`` (PostgreSQL) adds its system side to the shards only
    when the block ends, in one upsert in (account, shard) order.

    The shard rows are the ledger's most shared rows: every batch over many members locks every
    shard until it commits. An entry point that writes more after posting (event ingestion:
    events, rollups, activity times, lifecycle) wraps that work so the shards are locked last and
    held only for the commit, as they are by a posting alone. An exception leaving the block
    writes nothing more: the caller's transaction must roll back (as it does for any error).
    """
    require_transaction()
    if _deferred_system_postings.get() is not None:  # an enclosing block flushes
        yield
        return
    pending: defaultdict[tuple[str, int], int] = defaultdict(int)
    token = _deferred_system_postings.set(pending)
    try:
        yield
    finally:
        _deferred_system_postings.reset(token)
    system = [(account, shard, change) for (account, shard), change in sorted(pending.items())]
    system = [row for row in system if row[2]]
    if system:
        with connection.cursor() as cursor:
            cursor.execute(*_system_upsert(system))


def credits_post(
    *,
    accounts: Mapping[UUID, PointsAccount],
    specs: Sequence[AwardSpec],
    actor: Actor,
    at: datetime,
) -> list[tuple[int, int]]:
    """Credit each spec, in order, to its member's locked account, set-based; returns each
    credit's (entry id, balance after). ``accounts`` hold every spec's member, locked by
    ``points_accounts_lock`` in the caller's transaction; they are moved forward as posted.

    Writes what ``_credit_locked`` postings write (entry, lot, debt repayment, ``points.awarded``
    event, the account and the system shard): on PostgreSQL in one statement from arrays, with
    no model instances; elsewhere through ``_write``.
    """
    require_transaction()
    if not specs:
        return []
    if is_postgres():
        member_reads_changed(accounts)  # the portable path's _write replaces them itself
        return _credits_post_postgres(accounts, specs, actor, at)
    return _credits_post_portable(accounts, specs, actor, at)


def _credits_post_portable(
    accounts: Mapping[UUID, PointsAccount],
    specs: Sequence[AwardSpec],
    actor: Actor,
    at: datetime,
) -> list[tuple[int, int]]:
    """``credits_post`` through ``_credit_locked`` and ``_write``: any database."""
    versions = {member_id: account.version for member_id, account in accounts.items()}
    posting = _Posting()
    entries = [
        _credit_locked(accounts[spec.member_id], spec, actor=actor, at=at, posting=posting)
        for spec in specs
    ]
    _write(list(accounts.values()), versions, posting, at)
    return [(entry.pk, entry.balance_after) for entry in entries]


# One posting of many credits (see ``_credits_post_postgres``): the rows come in as one array per
# column, in posting order; every insert joins back on (member, version), unique per entry. Arrays
# are bound in binary (``%b``): psycopg's text format quotes every element, several times slower.
_CREDITS_SQL = """
WITH v AS (
    SELECT * FROM unnest(
        %(member_id)b::uuid[], %(version)b::bigint[], %(kind)b::text[], %(points)b::bigint[],
        %(counter_account)b::text[], %(balance_after)b::bigint[], %(reason)b::text[],
        %(note)b::text[], %(reference)b::text[], %(idempotency_key)b::text[],
        %(remaining)b::bigint[], %(repaid)b::bigint[], %(expires_at)b::timestamptz[],
        %(pending_until)b::timestamptz[], %(pending_iso)b::text[], %(event_id)b::uuid[],
        %(dedupe_key)b::text[]
    ) WITH ORDINALITY AS v (
        member_id, version, kind, points, counter_account, balance_after, reason, note,
        reference, idempotency_key, remaining, repaid, expires_at, pending_until, pending_iso,
        event_id, dedupe_key, position
    )
),
new_entries AS (
    INSERT INTO {entry} (member_id, version, kind, points, counter_account, balance_after,
        reason, note, reference, actor, idempotency_key, created_at)
    SELECT member_id, version, kind, points, counter_account, balance_after, reason, note,
        reference, %(actor)s, idempotency_key, %(at)s
    FROM v ORDER BY position
    RETURNING id, member_id, version
),
posted AS (
    SELECT new_entries.id, v.* FROM new_entries
    JOIN v ON v.member_id = new_entries.member_id AND v.version = new_entries.version
),
new_lots AS (
    INSERT INTO {lot} (entry_id, member_id, points, remaining, expires_at, pending_until,
        is_pending, created_at)
    SELECT id, member_id, points, remaining, expires_at, pending_until,
        pending_until IS NOT NULL, %(at)s
    FROM posted ORDER BY position
),
repayments AS (
    INSERT INTO {consumption} (entry_id, lot_id, points)
    SELECT id, id, repaid FROM posted WHERE repaid > 0 ORDER BY position
),
new_events AS (
    INSERT INTO {outbox} (id, event_type, aggregate_id, dedupe_key, payload, occurred_at,
        created_at)
    SELECT event_id, 'points.awarded', member_id::text, dedupe_key,
        jsonb_build_object('member_id', member_id::text, 'points', points, 'kind', kind,
            'reason', reason, 'pending_until', pending_iso),
        %(at)s, %(at)s
    FROM v ORDER BY position
    {skip_duplicate_event}
),
accounts AS (
    UPDATE {account} SET available = a.available, pending = a.pending,
        lifetime_earned = a.lifetime_earned, version = a.version, updated_at = %(at)s
    FROM unnest(
        %(account_id)b::uuid[], %(account_version_before)b::bigint[],
        %(account_available)b::bigint[], %(account_pending)b::bigint[],
        %(account_earned)b::bigint[], %(account_version)b::bigint[]
    ) AS a (member_id, version_before, available, pending, lifetime_earned, version)
    WHERE {account}.member_id = a.member_id AND {account}.version = a.version_before
    RETURNING 1
),
system_postings AS (
    INSERT INTO {system} (account, shard, balance)
    SELECT account, shard, balance FROM unnest(%(system_account)b::text[],
        %(system_shard)b::int[], %(system_change)b::bigint[])
        WITH ORDINALITY AS s (account, shard, balance, position)
    ORDER BY position
    ON CONFLICT (account, shard) DO UPDATE SET balance = {system}.balance + excluded.balance
)
SELECT (SELECT count(*) FROM accounts), array_agg(id ORDER BY position) FROM posted
"""


def _credits_post_postgres(
    accounts: Mapping[UUID, PointsAccount],
    specs: Sequence[AwardSpec],
    actor: Actor,
    at: datetime,
) -> list[tuple[int, int]]:
    """``credits_post`` on PostgreSQL: the chain is computed here as ``_credit_locked`` does,
    on plain values, and everything is written by one statement (``_CREDITS_SQL``)."""
    versions_before = {spec.member_id: accounts[spec.member_id].version for spec in specs}
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "member_id",
            "version",
            "kind",
            "points",
            "counter_account",
            "balance_after",
            "reason",
            "note",
            "reference",
            "idempotency_key",
            "remaining",
            "repaid",
            "expires_at",
            "pending_until",
            "pending_iso",
            "event_id",
            "dedupe_key",
        )
    }
    system: defaultdict[tuple[str, int], int] = defaultdict(int)
    default_expiry = _default_expiry(at)
    for spec in specs:
        account = accounts[spec.member_id]
        points = spec.points
        pending = spec.pending_until is not None
        repaid = 0 if pending else min(max(0, -account.available), points)
        if pending:
            account.pending += points
        else:
            account.available += points
        if spec.kind == EntryKind.EARN:
            account.lifetime_earned += points
        account.version += 1
        counter_account = COUNTER_ACCOUNT_OF_KIND[spec.kind]
        system[counter_account, system_account_shard(spec.member_id)] -= points
        columns["member_id"].append(spec.member_id)
        columns["version"].append(account.version)
        columns["kind"].append(str(spec.kind))
        columns["points"].append(points)
        columns["counter_account"].append(str(counter_account))
        columns["balance_after"].append(account.available + account.pending)
        columns["reason"].append(str(spec.reason))
        columns["note"].append(spec.note)
        columns["reference"].append(spec.reference)
        columns["idempotency_key"].append(spec.idempotency_key)
        columns["remaining"].append(points - repaid)
        columns["repaid"].append(repaid)
        columns["expires_at"].append(spec.expires_at or default_expiry)
        columns["pending_until"].append(spec.pending_until)
        columns["pending_iso"].append(spec.pending_until.isoformat() if pending else None)
        columns["event_id"].append(uuid6.uuid7())
        columns["dedupe_key"].append(str(uuid6.uuid7()))
    changed = [accounts[member_id] for member_id in sorted(versions_before)]
    deferred = _deferred_system_postings.get()
    if deferred is not None:
        for key, change in system.items():
            deferred[key] += change
        system.clear()
    postings = [(key, change) for key, change in sorted(system.items()) if change]
    params: dict[str, Any] = {
        **columns,
        "actor": actor.label,
        "at": at,
        "account_id": [account.pk for account in changed],
        "account_version_before": [versions_before[account.pk] for account in changed],
        "account_available": [account.available for account in changed],
        "account_pending": [account.pending for account in changed],
        "account_earned": [account.lifetime_earned for account in changed],
        "account_version": [account.version for account in changed],
        "system_account": [str(account) for (account, _), _ in postings],
        "system_shard": [shard for (_, shard), _ in postings],
        "system_change": [change for _, change in postings],
    }
    with connection.cursor() as cursor:
        cursor.execute(_credits_sql(), params)
        updated, entry_ids = cursor.fetchone()
    if updated != len(changed):
        raise ConflictError("An account changed concurrently; retry.")
    return list(zip(entry_ids, columns["balance_after"], strict=True))


def _credits_sql() -> str:
    return _CREDITS_SQL.format(
        entry=PointsEntry._meta.db_table,
        lot=PointsLot._meta.db_table,
        consumption=LotConsumption._meta.db_table,
        outbox=OutboxEvent._meta.db_table,
        account=PointsAccount._meta.db_table,
        system=SystemAccountBalance._meta.db_table,
        skip_duplicate_event=OUTBOX_SKIP_DUPLICATE,
    )


@dataclass(frozen=True, slots=True)
class BatchAwardResult:
    position: int
    status: str  # accepted, duplicate, rejected
    # The accepted item's entry: its id and the balance it chained to.
    entry_id: int | None = None
    balance_after: int | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)


def points_award_batch(
    *, items: Sequence[AwardSpec], actor: Actor, at: datetime
) -> list[BatchAwardResult]:
    """Award many members in one transaction, set-based: a fixed number of queries per batch.

    Items with an idempotency key this actor used before are reported ``duplicate`` and skip.
    The caller owns the transaction (one per batch: all accepted items land together).
    """
    require_transaction()
    results: dict[int, BatchAwardResult] = {}
    keys = [spec.idempotency_key for spec in items if spec.idempotency_key]
    used = (
        set(
            PointsEntry.objects.filter(
                InArray(F("idempotency_key"), keys), actor=actor.label
            ).values_list("idempotency_key", flat=True)
        )
        if keys
        else set()
    )
    valid: list[tuple[int, AwardSpec]] = []
    seen_keys: set[str] = set()
    for position, spec in enumerate(items):
        try:
            _validate_award(spec, at)
        except InvalidInputError as error:
            results[position] = BatchAwardResult(position, "rejected", errors=error.errors)
            continue
        if spec.idempotency_key and (
            spec.idempotency_key in used or spec.idempotency_key in seen_keys
        ):
            results[position] = BatchAwardResult(position, "duplicate")
            continue
        seen_keys.add(spec.idempotency_key)
        valid.append((position, spec))

    accounts = points_accounts_lock(member_ids=[spec.member_id for _, spec in valid], at=at)
    posted = credits_post(accounts=accounts, specs=[spec for _, spec in valid], actor=actor, at=at)
    for (position, _), (entry_id, balance_after) in zip(valid, posted, strict=True):
        results[position] = BatchAwardResult(position, "accepted", entry_id, balance_after)
    return [results[position] for position in range(len(items))]


@dataclass(frozen=True, slots=True)
class ExternalAward:
    """One batch item as partners send it: the member named by external id."""

    external_id: str
    points: int
    reason: str
    note: str = ""
    expires_at: datetime | None = None
    pending_until: datetime | None = None
    idempotency_key: str = ""


UNKNOWN_MEMBER_ERROR = {"code": "unknown_member", "detail": "No member with this external_id."}


def points_award_batch_by_external_id(
    *, items: Sequence[ExternalAward], actor: Actor, at: datetime
) -> list[BatchAwardResult]:
    """``points_award_batch`` for items naming members by external id; an unknown (or erased)
    member's item is ``rejected``, the others are awarded set-based. Results follow the items."""
    # Imported here: members.selectors reads the ledger for its metrics (an import cycle).
    from members.selectors import member_ids_by_external_id

    member_ids = member_ids_by_external_id(external_ids=[item.external_id for item in items])
    known = [item for item in items if item.external_id in member_ids]
    awarded = iter(
        points_award_batch(
            items=[
                AwardSpec(
                    member_id=member_ids[item.external_id],
                    points=item.points,
                    reason=item.reason,
                    note=item.note,
                    expires_at=item.expires_at,
                    pending_until=item.pending_until,
                    idempotency_key=item.idempotency_key,
                )
                for item in known
            ],
            actor=actor,
            at=at,
        )
    )
    results = []
    for position, item in enumerate(items):
        if item.external_id in member_ids:
            result = next(awarded)
            results.append(
                BatchAwardResult(
                    position, result.status, result.entry_id, result.balance_after, result.errors
                )
            )
        else:
            results.append(BatchAwardResult(position, "rejected", errors=[UNKNOWN_MEMBER_ERROR]))
    return results
