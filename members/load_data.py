"""Synthetic members and activity at benchmark scale (``manage.py generate_load_data``).

Each member gets a uuid7-layout id that sorts by joining time, an identity (provider ``load``),
``system`` tags (``value`` always, ``lifecycle`` once the stage has moved past ``new``),
certification grants, daily activity rollups over the last ``days`` business days, a points
account and the earn entries and lots behind it. Members fall into segments, in fixed shares per
block of 100, so that the default ladder gives about the SPEC's expected shares:

=============== ===== ================================================================= ========
segment         share over the window (``--days 90``)                                    tier
=============== ===== ================================================================= ========
``passive``      46 % 0-3 active days, a like or two; 30% did the onboarding guide       basic
``fading``        4 % regular earlier, 0-3 active days in the last 30                    basic
``regular``      25 % 4-9 active days and >= 12 interactions in the last 30, few posts   active
``creator``       6 % as regular plus 6-8 posts, under 600 qualifying points             active
``key_creator``  13 % 8-16 posts and >= 600 qualifying points (purchases, check-ins)     koc
``star``          6 % very active: 25-60 posts, most days; brand ambassadors             koc
=============== ===== ================================================================= ========

KOL is nomination-only, so reassessment leaves stars at ``koc``: they are the nomination pool
(SPEC's 5%). Certifications follow the segments: ``onboarding`` for every engaged member,
``content-creator`` for creators, ``brand-ambassador`` for stars. About 10 rollup rows per member
at 90 days.

Everything is consistent with what ingestion would have written: each rollup row's
``interactions`` is the sum of its interaction columns and ``points_earned`` what the active
earning rules (daily caps, the basic tier's multiplier) give for its counts. The ledger holds one
earn entry per member, 30-day period and kind (activity, purchases) summing those points, dated at
the period's latest earning day, each with its lot (purchase points pending for the rule's return
window): the ledger audit holds and ``qualifying_points`` over the window equals the rollups' sum.
Activity times and the lifecycle stage follow from the rollups as ``members.lifecycle`` defines
them. The tier stays ``basic``: the reassessment assigns tiers. Not written: activity events
(about ten per rollup row), check-in rows, daily-earning counters, tag changes, outbox events.

Deterministic: the same ``members``, ``days``, ``seed`` and ``at`` give the same rows (apart from
auto-numbered ids). Members are written in batches, one transaction each, with ``COPY`` on
PostgreSQL and ``bulk_create`` elsewhere, so memory is bounded by the batch size.
"""

import bisect
import hashlib
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from queue import SimpleQueue
from threading import Barrier
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, models
from django.db.models import QuerySet, Sum
from django.db.models.fields import AutoFieldMixin

from core.actors import system_actor
from core.db import durable_atomic, is_postgres
from core.exceptions import ConflictError, InvalidInputError
from core.models import SYSTEM_NAMESPACE
from core.read_cache import all_reads_changed
from members.lifecycle import LIFECYCLE_ACTOR, LIFECYCLE_TAG_KEY
from members.models import (
    Identity,
    LifecycleStage,
    Member,
    MemberDailyActivity,
    MemberTag,
    TagCategory,
    TagSource,
)
from rewards.models import (
    COUNTER_ACCOUNT_OF_KIND,
    Certification,
    CertificationGrant,
    EarningRule,
    EntryKind,
    PointsAccount,
    PointsEntry,
    PointsLot,
    Reason,
    SystemAccountBalance,
)
from rewards.services.earning import PURCHASE_EVENT, earning_decide
from tiers.models import DEFAULT_TIER, Tier

Progress = Callable[[int], None]

LOAD_ACTOR = system_actor("load_data")
IDENTITY_PROVIDER = "load"
VALUE_TAG_KEY = "value"
DEFAULT_PREFIX = "load-"
DEFAULT_SEED = 20261123
DEFAULT_BATCH_SIZE = 10_000
DEFAULT_WRITERS = 2
# Joining times are spread evenly (with jitter) over this many days before ``at``.
JOIN_SPREAD_DAYS = 400
# Members whose purchases in the window reach this many currency units are tagged value:high.
HIGH_VALUE_AMOUNT = 500
# The default ladder's KOC entry rule asks for 600 qualifying points in 90 days: key creators
# and stars are topped up to at least this, plus a random margin.
KEY_CREATOR_MIN_POINTS = 650
# The default ladder's active entry rule asks for 12 interactions in 30 days.
ACTIVE_MIN_INTERACTIONS = 12
RECENT_DAYS = 30
LEDGER_PERIOD_DAYS = 30

_MS_PER_DAY = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_POINTS_TABLE_SIZE = 256
_ZERO_AMOUNT = "0.00"
_EARN = EntryKind.EARN.value
_ISSUANCE = COUNTER_ACCOUNT_OF_KIND[EntryKind.EARN]
_REASON_EVENT = Reason.EVENT.value
_REASON_PURCHASE = Reason.PURCHASE.value
_ENTRY_NOTE = "Synthetic load data"
_SOCIAL = TagCategory.SOCIAL.value
_SHOPPING = TagCategory.SHOPPING.value
_SYSTEM_SOURCE = TagSource.SYSTEM.value
_LIFECYCLE_BY = LIFECYCLE_ACTOR.label
_LOAD_BY = LOAD_ACTOR.label


class Segment(StrEnum):
    PASSIVE = "passive"
    FADING = "fading"
    REGULAR = "regular"
    CREATOR = "creator"
    KEY_CREATOR = "key_creator"
    STAR = "star"


# Members per block of 100; each block is shuffled, so the shares hold at any member count.
SEGMENT_MIX: tuple[tuple[Segment, int], ...] = (
    (Segment.PASSIVE, 46),
    (Segment.FADING, 4),
    (Segment.REGULAR, 25),
    (Segment.CREATOR, 6),
    (Segment.KEY_CREATOR, 13),
    (Segment.STAR, 6),
)
_BLOCK_PATTERN = tuple(segment for segment, share in SEGMENT_MIX for _ in range(share))


@dataclass(frozen=True, slots=True)
class Profile:
    """How a segment behaves. Ranges are inclusive ``(low, high)`` integers."""

    recent_days: tuple[int, int]  # interaction days in the last 30 days of the window
    earlier_days: tuple[int, int]  # interaction days per 60 days before those
    login_only_days: tuple[int, int]  # visits without an interaction
    posts: tuple[int, int]  # over the window, spread over the interaction days
    purchases: tuple[int, int]  # interaction days with one purchase
    purchase_units: tuple[int, int]  # currency units per purchase
    likes: tuple[int, int]  # per interaction day
    comment_chance: float  # per interaction day (one comment, sometimes two)
    share_chance: float
    checkin_chance: float
    course_chance: float
    support_chance: float
    login_chance: float
    onboarding_chance: float  # finished the new-member guide
    creator_certified: bool = False
    ambassador: bool = False
    min_recent_interactions: int = 0  # topped up with likes on the latest day
    min_points: int = 0  # topped up with a larger purchase


PROFILES: dict[Segment, Profile] = {
    Segment.PASSIVE: Profile(
        recent_days=(0, 1),
        earlier_days=(0, 2),
        login_only_days=(0, 1),
        posts=(0, 0),
        purchases=(0, 1),
        purchase_units=(10, 120),
        likes=(1, 2),
        comment_chance=0.2,
        share_chance=0.0,
        checkin_chance=0.1,
        course_chance=0.0,
        support_chance=0.05,
        login_chance=0.6,
        onboarding_chance=0.3,
    ),
    Segment.FADING: Profile(
        recent_days=(0, 3),
        earlier_days=(6, 14),
        login_only_days=(0, 1),
        posts=(0, 2),
        purchases=(0, 2),
        purchase_units=(10, 150),
        likes=(1, 4),
        comment_chance=0.4,
        share_chance=0.1,
        checkin_chance=0.3,
        course_chance=0.01,
        support_chance=0.03,
        login_chance=0.7,
        onboarding_chance=0.9,
    ),
    Segment.REGULAR: Profile(
        recent_days=(4, 9),
        earlier_days=(3, 8),
        login_only_days=(0, 3),
        posts=(0, 3),
        purchases=(0, 2),
        purchase_units=(10, 150),
        likes=(1, 4),
        comment_chance=0.4,
        share_chance=0.15,
        checkin_chance=0.35,
        course_chance=0.01,
        support_chance=0.03,
        login_chance=0.7,
        onboarding_chance=1.0,
        min_recent_interactions=ACTIVE_MIN_INTERACTIONS,
    ),
    # Under 600 points by construction with the default rules: at most 20 days of likes,
    # comments and a share (13 points a day) plus 8 posts (160), no check-ins or purchases.
    Segment.CREATOR: Profile(
        recent_days=(5, 10),
        earlier_days=(4, 10),
        login_only_days=(0, 2),
        posts=(6, 8),
        purchases=(0, 0),
        purchase_units=(0, 0),
        likes=(1, 4),
        comment_chance=0.5,
        share_chance=0.15,
        checkin_chance=0.0,
        course_chance=0.0,
        support_chance=0.0,
        login_chance=0.8,
        onboarding_chance=1.0,
        creator_certified=True,
        min_recent_interactions=ACTIVE_MIN_INTERACTIONS,
    ),
    Segment.KEY_CREATOR: Profile(
        recent_days=(6, 12),
        earlier_days=(6, 12),
        login_only_days=(0, 2),
        posts=(8, 16),
        purchases=(1, 4),
        purchase_units=(80, 400),
        likes=(2, 6),
        comment_chance=0.6,
        share_chance=0.3,
        checkin_chance=0.5,
        course_chance=0.03,
        support_chance=0.02,
        login_chance=0.8,
        onboarding_chance=1.0,
        creator_certified=True,
        min_recent_interactions=ACTIVE_MIN_INTERACTIONS,
        min_points=KEY_CREATOR_MIN_POINTS,
    ),
    Segment.STAR: Profile(
        recent_days=(16, 26),
        earlier_days=(18, 34),
        login_only_days=(0, 2),
        posts=(25, 60),
        purchases=(3, 8),
        purchase_units=(100, 600),
        likes=(3, 10),
        comment_chance=0.8,
        share_chance=0.5,
        checkin_chance=0.7,
        course_chance=0.06,
        support_chance=0.02,
        login_chance=0.9,
        onboarding_chance=1.0,
        creator_certified=True,
        ambassador=True,
        min_recent_interactions=ACTIVE_MIN_INTERACTIONS,
        min_points=KEY_CREATOR_MIN_POINTS,
    ),
}


class LoadDataExistsError(ConflictError):
    code = "load_data_exists"
    title = "Members with this external id prefix exist already"


class LoadDataOptionError(InvalidInputError):
    code = "load_data_option"
    title = "This option cannot be used here"


@dataclass(frozen=True, slots=True)
class LoadDataResult:
    members: int
    identities: int
    tags: int
    certification_grants: int
    rollup_rows: int
    points_entries: int
    deleted_members: int
    segments: dict[str, int]

    @property
    def rows(self) -> int:
        """Every row written: members, identities, tags, grants, rollups, points accounts,
        entries and their lots."""
        return (
            2 * self.members
            + self.identities
            + self.tags
            + self.certification_grants
            + self.rollup_rows
            + 2 * self.points_entries
        )


# --- Entry points --------------------------------------------------------------------------------


def load_data_generate(
    *,
    members: int,
    days: int,
    at: datetime,
    seed: int = DEFAULT_SEED,
    prefix: str = DEFAULT_PREFIX,
    replace: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    writers: int = DEFAULT_WRITERS,
    foreign_key_checks: bool = True,
    progress: Progress | None = None,
) -> LoadDataResult:
    """Write ``members`` synthetic members (external ids ``<prefix>000001`` ...) with ``days``
    business days of activity ending on the day of ``at``, one transaction per ``batch_size``
    members; with ``replace`` the members of an earlier run with this prefix, and every row
    referring to them, are deleted first.

    On PostgreSQL, outside a transaction, batches are generated here while ``writers`` threads
    copy earlier ones, each on its own connection: PostgreSQL's side of the work (indexes,
    constraints) is most of it, and one connection uses one core. ``foreign_key_checks=False``
    skips PostgreSQL's foreign key triggers while copying, as ``pg_restore --disable-triggers``
    does (the rows are consistent by construction): superusers only.

    :raises LoadDataExistsError: members with this prefix exist and ``replace`` is off.
    :raises LoadDataOptionError: foreign key checks cannot be skipped here.
    """
    if members < 0 or days < 1 or batch_size < 1 or writers < 1 or not prefix:
        raise ValueError(
            "members >= 0, days >= 1, batch_size >= 1, writers >= 1 and a prefix are required."
        )
    if not foreign_key_checks and not _is_postgres_superuser():
        raise LoadDataOptionError(
            "Skipping foreign key checks needs PostgreSQL and a superuser connection."
        )
    deleted = 0
    if replace:
        deleted = load_data_delete(prefix=prefix, foreign_key_checks=foreign_key_checks)
    elif Member.objects.filter(external_id__startswith=prefix).exists():
        raise LoadDataExistsError(
            f"Members with external ids starting {prefix!r} exist: replace them or choose "
            "another prefix."
        )
    context = _Context.build(members=members, days=days, at=at, seed=seed, prefix=prefix)
    batches = (
        _batch_generate(context, start=start, stop=min(members, start + batch_size))
        for start in range(0, members, batch_size)
    )
    totals: Counter[str] = Counter()
    # Other connections cannot join a caller's transaction (a test's, say): then write in line.
    if is_postgres() and not connection.in_atomic_block:
        pool = [
            _Writer(foreign_key_checks=foreign_key_checks, shard=shard) for shard in range(writers)
        ]
        written = _pipelined_write(batches, pool)
    else:
        written = _serial_write(batches, _Writer(foreign_key_checks=foreign_key_checks, shard=0))
    for counts in written:
        totals.update(counts)
        if progress is not None:
            progress(counts["members"])
    _analyze()
    all_reads_changed()  # written around the services: no cached document stays current
    return LoadDataResult(
        members=totals["members"],
        identities=totals["identities"],
        tags=totals["tags"],
        certification_grants=totals["grants"],
        rollup_rows=totals["rollups"],
        points_entries=totals["entries"],
        deleted_members=deleted,
        segments={segment.value: totals[segment.value] for segment, _ in SEGMENT_MIX},
    )


def _serial_write(batches: Iterable["_Batch"], writer: "_Writer") -> Iterator[Counter[str]]:
    for batch in batches:
        yield _batch_write(writer, batch)


def _pipelined_write(
    batches: Iterable["_Batch"], writers: list["_Writer"]
) -> Iterator[Counter[str]]:
    """Write batches in threads, one per writer, while the next is generated here; at most one
    batch per writer is waiting or being written. A writer is used by one thread at a time."""
    idle: SimpleQueue[_Writer] = SimpleQueue()
    for writer in writers:
        idle.put(writer)

    def write(batch: _Batch) -> Counter[str]:
        writer = idle.get()
        try:
            return _batch_write(writer, batch)
        finally:
            idle.put(writer)

    with ThreadPoolExecutor(len(writers), thread_name_prefix="load-data-writer") as pool:
        pending: set[Future[Counter[str]]] = set()
        try:
            for batch in batches:
                if len(pending) >= len(writers):
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from (future.result() for future in done)
                pending.add(pool.submit(write, batch))
            for future in as_completed(pending):
                yield future.result()
        finally:
            for future in pending:
                future.cancel()
            # Each thread closes its own connection; the barrier keeps every thread busy
            # until all have taken a task, so no thread takes two.
            barrier = Barrier(len(writers))
            closing = [pool.submit(_connection_close, barrier) for _ in writers]
            for future in closing:
                future.result()


def _batch_write(writer: "_Writer", batch: "_Batch") -> Counter[str]:
    with durable_atomic():
        writer.write(batch)
    return batch.counts()


def _connection_close(barrier: Barrier) -> None:
    """Close the calling thread's database connection (a writer thread's own)."""
    barrier.wait()
    connection.close()


def _is_postgres_superuser() -> bool:
    if not is_postgres():
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('is_superuser')")
        (value,) = cursor.fetchone()
    return bool(value == "on")


def load_data_delete(*, prefix: str, foreign_key_checks: bool = True) -> int:
    """Delete the members whose external id starts with ``prefix`` and every row referring to
    them (ledger, rollups, tags, tier history, ...), set-based, in one transaction; returns the
    number of members deleted. ``foreign_key_checks`` as for ``load_data_generate``.

    :raises LoadDataOptionError: foreign key checks cannot be skipped here.
    """
    if not prefix:
        raise ValueError("A prefix is required.")
    if not foreign_key_checks and not _is_postgres_superuser():
        raise LoadDataOptionError(
            "Skipping foreign key checks needs PostgreSQL and a superuser connection."
        )
    members = Member.objects.filter(external_id__startswith=prefix)
    with durable_atomic():
        if is_postgres():
            with connection.cursor() as cursor:
                # The deletes are semi-joins against millions of ids: hash them in memory.
                cursor.execute("SET LOCAL work_mem = '256MB'")
                if not foreign_key_checks:
                    cursor.execute("SET LOCAL session_replication_role = replica")
        # The system side of the entries about to go: posted back so the ledger still sums to
        # zero. Shard 0 takes it all; only an account's sum over its shards has a meaning.
        posted = (
            PointsEntry.objects.filter(member__in=members)
            .values("counter_account")
            .annotate(total=Sum("points"))
            .order_by("counter_account")
        )
        _system_balances_add({(row["counter_account"], 0): row["total"] for row in posted})
        return _delete_with_dependents(members)


def _system_balances_add(changes: dict[tuple[str, int], int]) -> None:
    """Add to system account shards ``{(account, shard): change}``, creating missing shards, in
    (account, shard) order as every ledger posting locks them."""
    rows = [
        (account, shard, change) for (account, shard), change in sorted(changes.items()) if change
    ]
    if not rows:
        return
    table = connection.ops.quote_name(SystemAccountBalance._meta.db_table)
    with connection.cursor() as cursor:
        # An upsert that adds, on PostgreSQL and SQLite alike; names come from the model.
        cursor.execute(
            f"INSERT INTO {table} (account, shard, balance) "  # noqa: S608
            f"VALUES {', '.join(['(%s, %s, %s)'] * len(rows))} "
            "ON CONFLICT (account, shard) "
            f"DO UPDATE SET balance = {table}.balance + excluded.balance",
            [value for row in rows for value in row],
        )


def _delete_with_dependents(members: QuerySet[Member]) -> int:
    """Delete ``members`` and, before them, every row reachable through reverse relations.

    The ORM's collector would load every row (and refuses PROTECT relations such as the
    ledger's): here each table gets one ``DELETE FROM child WHERE fk IN (parent subquery)``.
    Relations are read from the models, so tables that other apps add later are covered too.
    """
    plan: list[QuerySet[Any]] = [members]
    seen: set[type[models.Model]] = {Member}
    position = 0
    while position < len(plan):
        rows = plan[position]
        position += 1
        for relation in rows.model._meta.related_objects:
            child = relation.related_model
            if relation.many_to_many or child in seen:
                continue
            seen.add(child)
            child_rows = child._base_manager.filter(**{f"{relation.field.name}__in": rows})
            if relation.on_delete is models.SET_NULL:
                child_rows.update(**{relation.field.name: None})
            else:
                plan.append(child_rows)
    deleted = 0
    # Dependents first, while the subqueries selecting them still find their parents.
    # ``_raw_delete`` is the collector's own fast path: one DELETE, no signals, no fetching.
    for rows in reversed(plan):
        deleted = rows._raw_delete(rows.db)
    return deleted


# --- Generation ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Context:
    """What generation needs that is the same for every member, computed once per run."""

    seed: int
    rng: random.Random  # drawn member after member, so the batch size does not matter
    members: int
    days: int
    at_ms: int
    at: datetime
    prefix: str
    id_width: int
    id_tag: int
    join_base_ms: int
    join_spacing_ms: int
    recent_first: int  # the first day index of the last 30 days
    period_of: list[int]  # day index -> 30-day ledger period, counted back from the last day
    day_start_ms: list[int]
    day_labels: list[str]  # ISO dates, as the rollup rows store them
    # Points for 0, 1, 2, ... events of a type on one day, daily caps applied.
    checkin_points: list[int]
    post_points: list[int]
    comment_points: list[int]
    like_points: list[int]
    share_points: list[int]
    support_points: list[int]
    course_points: list[int]
    purchase_points: Callable[[int], int]  # cents of one purchase -> points
    cents_per_point: float  # 0 when purchases earn nothing
    purchase_pending_ms: int
    purchase_expiry_ms: int
    activity_expiry_ms: int
    certification_validity_ms: dict[str, int | None]
    silent_ms: int
    dormant_ms: int
    churned_ms: int
    regular_days: int

    @classmethod
    def build(cls, *, members: int, days: int, at: datetime, seed: int, prefix: str) -> "_Context":
        zone = ZoneInfo(settings.LOYALTY_BUSINESS_TIME_ZONE)
        at_ms = _ms(at)
        first_day = at.astimezone(zone).date() - timedelta(days=days - 1)
        dates = [first_day + timedelta(days=offset) for offset in range(days)]
        spread_ms = JOIN_SPREAD_DAYS * _MS_PER_DAY
        basic = Tier.objects.get(code=DEFAULT_TIER)
        rules = {
            rule.event_type: rule
            for rule in EarningRule.objects.filter(is_active=True).select_related("min_tier")
        }

        def decide(event_type: str, amount: Decimal | None = None, earned_today: int = 0) -> int:
            rule = rules.get(event_type)
            return earning_decide(
                rule=rule,
                tier_rank=basic.rank,
                min_tier_rank=rule.min_tier.rank if rule and rule.min_tier else None,
                multiplier=basic.points_multiplier,
                amount=amount,
                max_points=settings.LOYALTY_POINTS_MAX_AWARD,
                earned_today=earned_today,
            ).points

        def daily(event_type: str) -> list[int]:
            # Each event is clamped to what is left of the daily cap, as ingestion does.
            table = [0]
            for _ in range(_POINTS_TABLE_SIZE - 1):
                table.append(table[-1] + decide(event_type, earned_today=table[-1]))
            return table

        by_units: dict[int, int] = {}

        def purchase_points(cents: int) -> int:
            # Points depend on the whole currency units only (floored): memoised per unit count.
            units = cents // 100
            if units not in by_units:
                by_units[units] = decide(PURCHASE_EVENT, Decimal(cents) / 100)
            return by_units[units]

        purchase_rule = rules.get(PURCHASE_EVENT)
        points_per_10000_units = purchase_points(1_000_000)
        default_expiry_ms = settings.LOYALTY_POINTS_EXPIRY_DAYS * _MS_PER_DAY
        return cls(
            seed=seed,
            rng=random.Random(seed),  # noqa: S311 - reproducible synthetic data, not a secret
            members=members,
            days=days,
            at_ms=at_ms,
            at=_datetime(at_ms),
            prefix=prefix,
            id_width=max(6, len(str(members))),
            id_tag=int.from_bytes(hashlib.blake2b(prefix.encode(), digest_size=8).digest()),
            join_base_ms=at_ms - spread_ms,
            join_spacing_ms=max(1, spread_ms // max(1, members)),
            recent_first=max(0, days - RECENT_DAYS),
            period_of=[(days - 1 - day) // LEDGER_PERIOD_DAYS for day in range(days)],
            day_start_ms=[_ms(datetime.combine(day, time.min, tzinfo=zone)) for day in dates],
            day_labels=[day.isoformat() for day in dates],
            checkin_points=daily("checkin"),
            post_points=daily("post"),
            comment_points=daily("comment"),
            like_points=daily("like"),
            share_points=daily("share"),
            support_points=daily("support_inquiry"),
            course_points=daily("course_completed"),
            purchase_points=purchase_points,
            cents_per_point=(1_000_000 / points_per_10000_units if points_per_10000_units else 0.0),
            purchase_pending_ms=(purchase_rule.pending_days if purchase_rule else 0) * _MS_PER_DAY,
            purchase_expiry_ms=(
                purchase_rule.expiry_days * _MS_PER_DAY
                if purchase_rule and purchase_rule.expiry_days
                else default_expiry_ms
            ),
            activity_expiry_ms=default_expiry_ms,
            certification_validity_ms={
                code: validity * _MS_PER_DAY if validity else None
                for code, validity in Certification.objects.filter(is_active=True).values_list(
                    "code", "validity_days"
                )
            },
            silent_ms=settings.LOYALTY_SILENT_DAYS * _MS_PER_DAY,
            dormant_ms=settings.LOYALTY_DORMANT_DAYS * _MS_PER_DAY,
            churned_ms=settings.LOYALTY_CHURNED_DAYS * _MS_PER_DAY,
            regular_days=settings.LOYALTY_REGULAR_PARTICIPATION_DAYS,
        )


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def _datetime(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _optional_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else _EPOCH + timedelta(milliseconds=ms)


def member_uuid(*, created_ms: int, tag: int, number: int) -> str:
    """A version-7 UUID (RFC 9562): 48-bit Unix milliseconds, then 42 bits of the prefix's hash
    and the member's number (32 bits), so ids sort by joining time and runs with different
    prefixes do not collide."""
    value = (
        (created_ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | (tag >> 52 & 0xFFF) << 64
        | 0b10 << 62
        | (tag & 0x3FFF_FFFF) << 32
        | number & 0xFFFF_FFFF
    )
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _segments(seed: int, start: int, stop: int) -> list[Segment]:
    """Segments of members ``start`` to ``stop`` (0-based): each block of 100 members holds
    ``SEGMENT_MIX`` in its own shuffled order, so a member's segment depends on its number and
    the seed only, not on the batch size."""
    segments: list[Segment] = []
    for block in range(start // 100, (stop + 99) // 100):
        order = list(_BLOCK_PATTERN)
        random.Random(f"{seed}:{block}").shuffle(order)  # noqa: S311 - synthetic data
        segments.extend(order)
    offset = start // 100 * 100
    return segments[start - offset : stop - offset]


def _pick(picked: set[int], rand: Callable[[], float], low: int, high: int, count: int) -> None:
    """Add ``count`` distinct random integers of ``low..high`` to ``picked`` (which holds none
    of that range yet). Rejection sampling: far cheaper than ``random.sample`` for a few days."""
    span = high + 1 - low
    if count >= span:
        picked.update(range(low, high + 1))
    elif count * 2 <= span:
        wanted = len(picked) + count
        while len(picked) < wanted:
            picked.add(low + int(rand() * span))
    else:
        skipped: set[int] = set()
        while len(skipped) < span - count:
            skipped.add(low + int(rand() * span))
        picked.update(day for day in range(low, high + 1) if day not in skipped)


@dataclass(slots=True)
class _Entry:
    """A ledger credit to write; its id, version and balance are given when written."""

    member_id: str
    created_ms: int
    points: int
    reason: str
    expires_ms: int
    pending_until_ms: int | None


@dataclass(slots=True)
class _Batch:
    members: list[tuple[Any, ...]] = field(default_factory=list)
    identities: list[tuple[Any, ...]] = field(default_factory=list)
    tags: list[tuple[Any, ...]] = field(default_factory=list)
    grants: list[tuple[Any, ...]] = field(default_factory=list)
    rollups: list[tuple[Any, ...]] = field(default_factory=list)
    entries: list[_Entry] = field(default_factory=list)
    segments: Counter[str] = field(default_factory=Counter)

    def counts(self) -> Counter[str]:
        counts = Counter(
            members=len(self.members),
            identities=len(self.identities),
            tags=len(self.tags),
            grants=len(self.grants),
            rollups=len(self.rollups),
            entries=len(self.entries),
        )
        counts.update(self.segments)
        return counts


def _batch_generate(context: _Context, *, start: int, stop: int) -> _Batch:
    """The rows of members ``start`` to ``stop`` (0-based numbers)."""
    batch = _Batch()
    for index, segment in zip(
        range(start, stop), _segments(context.seed, start, stop), strict=True
    ):
        _member_generate(context, batch, index=index, segment=segment)
        batch.segments[segment.value] += 1
    return batch


@dataclass(slots=True)
class _Activity:
    """A member's activity: rollup rows plus the facts the member row and the ledger need."""

    rows: list[tuple[Any, ...]]
    interaction_days: int = 0
    first_interaction: int = -1  # day indexes, -1 for none
    last_interaction: int = -1
    last_activity: int = -1
    last_login: int = -1
    first_purchase: int = -1
    last_purchase: int = -1
    regular_day: int = -1  # the day interactions reached LOYALTY_REGULAR_PARTICIPATION_DAYS
    spent_cents: int = 0
    # Points per 30-day period (counted back from the last day) and kind: (points, latest
    # earning day, from a purchase).
    earnings: list[tuple[int, int, bool]] = field(default_factory=list)


def _member_generate(context: _Context, batch: _Batch, *, index: int, segment: Segment) -> None:
    rand = context.rng.random
    profile = PROFILES[segment]
    number = index + 1
    external_id = f"{context.prefix}{number:0{context.id_width}d}"
    spacing = context.join_spacing_ms
    joined_ms = context.join_base_ms + index * spacing + int(rand() * spacing)
    member_id = member_uuid(created_ms=joined_ms, tag=context.id_tag, number=number)
    # One time of day per member (8:00 to 22:00), so event times need no date arithmetic.
    offset = 28_800_000 + int(rand() * 50_400_000)
    day_start = context.day_start_ms
    last = context.days - 1
    # The window's days this member can be active on: after joining, not after ``at``.
    first = bisect.bisect_right(day_start, joined_ms) - 1
    if first < 0:
        first = 0
    elif day_start[first] + offset < joined_ms:
        first += 1
    final = last if day_start[last] + offset <= context.at_ms else last - 1

    activity = _activity(context, profile, member_id, first=first, final=final)
    batch.rollups.extend(activity.rows)

    def moment(day: int) -> datetime | None:
        return None if day < 0 else _EPOCH + timedelta(milliseconds=day_start[day] + offset)

    stage, previous, changed_ms = _lifecycle(
        context,
        joined_ms=joined_ms,
        last_activity_ms=day_start[activity.last_activity] + offset
        if activity.last_activity >= 0
        else None,
        last_interaction_ms=day_start[activity.last_interaction] + offset
        if activity.last_interaction >= 0
        else None,
        regular_ms=day_start[activity.regular_day] + offset if activity.regular_day >= 0 else None,
    )
    joined_at = _datetime(joined_ms)
    changed_at = _datetime(changed_ms)
    last_activity_at = moment(activity.last_activity)
    batch.members.append(
        (
            member_id,
            external_id,
            f"Load member {number}",
            f"{external_id}@example.com",
            joined_at,
            DEFAULT_TIER,
            joined_at,
            stage,
            changed_at,
            previous,
            moment(activity.first_interaction),
            moment(activity.last_interaction),
            moment(activity.first_purchase),
            moment(activity.last_purchase),
            last_activity_at,
            moment(activity.last_login),
            joined_at,
            last_activity_at or joined_at,
        )
    )
    batch.identities.append((member_id, IDENTITY_PROVIDER, external_id, joined_at))
    # The lifecycle job tags every stage change; a member still ``new`` has had none.
    if stage != LifecycleStage.NEW:
        batch.tags.append(
            (
                member_id,
                SYSTEM_NAMESPACE,
                LIFECYCLE_TAG_KEY,
                stage,
                _SOCIAL,
                _SYSTEM_SOURCE,
                _LIFECYCLE_BY,
                changed_at,
                changed_at,
            )
        )
    batch.tags.append(
        (
            member_id,
            SYSTEM_NAMESPACE,
            VALUE_TAG_KEY,
            "high" if activity.spent_cents >= HIGH_VALUE_AMOUNT * 100 else "low",
            _SHOPPING,
            _SYSTEM_SOURCE,
            _LOAD_BY,
            context.at,
            context.at,
        )
    )
    _grants_add(context, batch, member_id, profile, joined_ms=joined_ms)
    _entries_add(context, batch, member_id, activity, offset=offset)


def _activity(  # noqa: PLR0912, PLR0915 - one tight loop: it runs 10 million times for 1M members
    context: _Context, profile: Profile, member_id: str, *, first: int, final: int
) -> _Activity:
    """The member's rollup rows over days ``first`` to ``final`` (indexes into the window), in
    one pass over the days; the top-ups for the tier rules land on the latest day."""
    activity = _Activity(rows=[])
    if first > final:
        return activity
    rand = context.rng.random
    recent_first = context.recent_first

    # Interaction days: so many in the last 30 days, so many per 60 days before.
    picked: set[int] = set()
    recent_lo = max(first, recent_first)
    if recent_lo <= final:
        low, high = profile.recent_days
        _pick(picked, rand, recent_lo, final, low + int(rand() * (high - low + 1)))
    earlier_hi = min(final, recent_lo - 1)
    if first <= earlier_hi:
        low, high = profile.earlier_days
        wanted = round((low + int(rand() * (high - low + 1))) * (earlier_hi + 1 - first) / 60)
        _pick(picked, rand, first, earlier_hi, wanted)
    days = sorted(picked)
    count = len(days)

    rows = activity.rows
    labels = context.day_labels
    if count:
        # Posts and purchases go to random interaction days.
        posts = [0] * count
        cents = [0] * count
        low, high = profile.posts
        for _ in range(low + int(rand() * (high - low + 1))):
            posts[int(rand() * count)] += 1
        low, high = profile.purchases
        buying: set[int] = set()
        _pick(buying, rand, 0, count - 1, low + int(rand() * (high - low + 1)))
        low, high = profile.purchase_units
        for position in sorted(buying):
            cents[position] = (low + int(rand() * (high - low + 1))) * 100 + int(rand() * 100)

        like_low = profile.likes[0]
        like_span = profile.likes[1] + 1 - like_low
        comment_chance = profile.comment_chance
        share_chance = profile.share_chance
        checkin_chance = profile.checkin_chance
        course_chance = profile.course_chance
        support_chance = profile.support_chance
        login_chance = profile.login_chance
        checkin_points = context.checkin_points
        post_points = context.post_points
        comment_points = context.comment_points
        like_points = context.like_points
        share_points = context.share_points
        support_points = context.support_points
        course_points = context.course_points
        purchase_points = context.purchase_points
        period_of = context.period_of
        # Per 30-day ledger period: points and latest earning day, from activity and purchases.
        periods = period_of[0] + 1
        earned_sum = [0] * periods
        earned_day = [0] * periods
        bought_sum = [0] * periods
        bought_day = [0] * periods
        recent_interactions = 0
        points_total = 0
        last_login = first_purchase = last_purchase = -1
        spent = 0
        latest = count - 1
        for position in range(count):
            day = days[position]
            like = like_low + int(rand() * like_span)
            comment = (2 if rand() < 0.3 else 1) if rand() < comment_chance else 0
            share = 1 if share_chance and rand() < share_chance else 0
            checkin = 1 if checkin_chance and rand() < checkin_chance else 0
            course = 1 if course_chance and rand() < course_chance else 0
            support = 1 if support_chance and rand() < support_chance else 0
            login = 1 if rand() < login_chance else 0
            post = posts[position]
            paid = cents[position]
            interactions = like + comment + share + checkin + course + support + post
            if position == latest and day >= recent_first:
                # Top the 30-day interactions up to the active rule with likes.
                missing = profile.min_recent_interactions - recent_interactions - interactions
                if missing > 0:
                    like += missing
                    interactions += missing
            earned = (
                checkin_points[checkin]
                + post_points[post]
                + comment_points[comment]
                + like_points[like]
                + share_points[share]
                + support_points[support]
                + course_points[course]
            )
            bought = purchase_points(paid) if paid else 0
            if position == latest and profile.min_points and context.cents_per_point:
                # A larger purchase on the latest day lifts the points to the KOC rule.
                target = profile.min_points + int(rand() * 300)
                while points_total + earned + bought < target:
                    missing = target - points_total - earned - bought
                    paid += math.ceil(missing * context.cents_per_point / 100) * 100
                    bought = purchase_points(paid)
            if day >= recent_first:
                recent_interactions += interactions
            points_total += earned + bought
            rows.append(
                (
                    member_id,
                    labels[day],
                    interactions,
                    login,
                    checkin,
                    post,
                    comment,
                    like,
                    share,
                    1 if paid else 0,
                    f"{paid // 100}.{paid % 100:02d}" if paid else _ZERO_AMOUNT,
                    support,
                    course,
                    0,
                    earned + bought,
                )
            )
            if earned:
                period = period_of[day]
                earned_sum[period] += earned
                earned_day[period] = day
            if bought:
                period = period_of[day]
                bought_sum[period] += bought
                bought_day[period] = day
            if login:
                last_login = day
            if paid:
                if first_purchase < 0:
                    first_purchase = day
                last_purchase = day
                spent += paid
        activity.interaction_days = count
        activity.first_interaction = days[0]
        activity.last_interaction = activity.last_activity = days[-1]
        if count >= context.regular_days:
            activity.regular_day = days[context.regular_days - 1]
        activity.last_login = last_login
        activity.first_purchase = first_purchase
        activity.last_purchase = last_purchase
        activity.spent_cents = spent
        activity.earnings = [
            (points, day, is_purchase)
            for sums, latest_days, is_purchase in (
                (earned_sum, earned_day, False),
                (bought_sum, bought_day, True),
            )
            for points, day in zip(sums, latest_days, strict=True)
            if points
        ]

    # Visits with a login only, on days without an interaction.
    low, high = profile.login_only_days
    span = final + 1 - first
    for _ in range(low + int(rand() * (high - low + 1))):
        day = first + int(rand() * span)
        if day not in picked:
            picked.add(day)
            rows.append((member_id, labels[day], 0, 1, 0, 0, 0, 0, 0, 0, _ZERO_AMOUNT, 0, 0, 0, 0))
            activity.last_login = max(activity.last_login, day)
            activity.last_activity = max(activity.last_activity, day)
    return activity


def _entry_order(earning: tuple[int, int, bool]) -> tuple[int, bool]:
    return earning[1], earning[2]


def _lifecycle(
    context: _Context,
    *,
    joined_ms: int,
    last_activity_ms: int | None,
    last_interaction_ms: int | None,
    regular_ms: int | None,
) -> tuple[str, str, int]:
    """The stage ``members.lifecycle`` computes at ``at`` from these times, the stage before it
    and when it was reached: (stage, previous stage, changed at)."""
    at_ms = context.at_ms
    last_visit = joined_ms if last_activity_ms is None else last_activity_ms
    last_touch = joined_ms if last_interaction_ms is None else last_interaction_ms
    if last_visit <= at_ms - context.churned_ms:
        return LifecycleStage.CHURNED, LifecycleStage.DORMANT, last_visit + context.churned_ms
    if last_visit <= at_ms - context.dormant_ms:
        return LifecycleStage.DORMANT, LifecycleStage.SILENT, last_visit + context.dormant_ms
    if last_touch <= at_ms - context.silent_ms:
        previous = LifecycleStage.ACTIVE if regular_ms is not None else LifecycleStage.NEW
        return LifecycleStage.SILENT, previous, last_touch + context.silent_ms
    if regular_ms is not None:
        return LifecycleStage.ACTIVE, LifecycleStage.NEW, regular_ms
    return LifecycleStage.NEW, "", joined_ms


def _grants_add(
    context: _Context, batch: _Batch, member_id: str, profile: Profile, *, joined_ms: int
) -> None:
    """The guide soon after joining, then the creator and ambassador certifications, each
    granted recently enough to be valid at ``at``."""
    rand = context.rng.random
    at_ms = context.at_ms
    granted_ms = joined_ms
    for code, wanted in (
        ("onboarding", rand() < profile.onboarding_chance),
        ("content-creator", profile.creator_certified),
        ("brand-ambassador", profile.ambassador),
    ):
        if not wanted or code not in context.certification_validity_ms:
            continue
        validity = context.certification_validity_ms[code]
        if validity is not None:
            granted_ms = max(granted_ms, at_ms - validity + _MS_PER_DAY)
        granted_ms += int(rand() * min(30 * _MS_PER_DAY, at_ms - granted_ms))
        granted_at = _datetime(granted_ms)
        expires_at = None if validity is None else _datetime(granted_ms + validity)
        batch.grants.append((member_id, code, granted_at, expires_at, _LOAD_BY, granted_at))


def _entries_add(
    context: _Context, batch: _Batch, member_id: str, activity: _Activity, *, offset: int
) -> None:
    """One earn entry per 30-day period and kind (activity, purchases) for the points the
    period's rollups earned, dated at its latest earning day, oldest first."""
    for points, day, is_purchase in sorted(activity.earnings, key=_entry_order):
        created_ms = context.day_start_ms[day] + offset
        pending = is_purchase and created_ms + context.purchase_pending_ms > context.at_ms
        batch.entries.append(
            _Entry(
                member_id=member_id,
                created_ms=created_ms,
                points=points,
                reason=_REASON_PURCHASE if is_purchase else _REASON_EVENT,
                expires_ms=created_ms
                + (context.purchase_expiry_ms if is_purchase else context.activity_expiry_ms),
                pending_until_ms=created_ms + context.purchase_pending_ms if pending else None,
            )
        )


# --- Writing -------------------------------------------------------------------------------------

_MEMBER_FIELDS = (
    "id",
    "external_id",
    "display_name",
    "email",
    "joined_at",
    "tier",
    "tier_since",
    "lifecycle_stage",
    "lifecycle_changed_at",
    "previous_lifecycle_stage",
    "first_interaction_at",
    "last_interaction_at",
    "first_purchase_at",
    "last_purchase_at",
    "last_activity_at",
    "last_login_at",
    "created_at",
    "updated_at",
)
_IDENTITY_FIELDS = ("member", "provider", "value", "created_at")
_TAG_FIELDS = (
    "member",
    "namespace",
    "key",
    "value",
    "category",
    "source",
    "written_by",
    "synced_at",
    "created_at",
)
_GRANT_FIELDS = ("member", "certification", "granted_at", "expires_at", "granted_by", "updated_at")
_ROLLUP_FIELDS = (
    "member",
    "business_date",
    "interactions",
    "logins",
    "checkins",
    "posts",
    "comments",
    "likes",
    "shares",
    "purchases",
    "purchase_amount",
    "support_inquiries",
    "courses_completed",
    "other_events",
    "points_earned",
)
_ENTRY_FIELDS = (
    "id",
    "member",
    "version",
    "kind",
    "points",
    "counter_account",
    "balance_after",
    "reason",
    "note",
    "actor",
    "created_at",
)
_LOT_FIELDS = (
    "entry",
    "member",
    "points",
    "remaining",
    "expires_at",
    "pending_until",
    "is_pending",
    "created_at",
)
_ACCOUNT_FIELDS = ("member", "available", "pending", "lifetime_earned", "version", "updated_at")
_WRITTEN_MODELS: tuple[type[models.Model], ...] = (
    Member,
    Identity,
    MemberTag,
    CertificationGrant,
    MemberDailyActivity,
    PointsEntry,
    PointsLot,
    PointsAccount,
)


class _Writer:
    """Writes batches: ``COPY`` on PostgreSQL, ``bulk_create`` elsewhere."""

    def __init__(self, *, foreign_key_checks: bool, shard: int) -> None:
        self.postgres = is_postgres()
        self.foreign_key_checks = foreign_key_checks
        # The system accounts' side of this writer's entries goes to its own shard, so that
        # concurrent writers never wait for each other's row locks (only an account's sum over
        # its shards has a meaning; the live path's per-member shard is a spreading choice).
        self.shard = shard % settings.LOYALTY_SYSTEM_ACCOUNT_SHARDS
        self._columns: dict[type[models.Model], tuple[str, tuple[Any, ...]]] = {}

    def write(self, batch: _Batch) -> None:
        if self.postgres:
            with connection.cursor() as cursor:
                # Losing the last batches in a crash is acceptable for generated data; waiting
                # for the WAL flush at every commit is not needed.
                cursor.execute("SET LOCAL synchronous_commit = off")
                if not self.foreign_key_checks:
                    # Foreign keys are triggers: "replica" mode does not fire them. The rows
                    # refer only to this batch's members and to existing tiers and
                    # certifications, by construction.
                    cursor.execute("SET LOCAL session_replication_role = replica")
        self._copy(Member, _MEMBER_FIELDS, batch.members)
        self._copy(Identity, _IDENTITY_FIELDS, batch.identities)
        self._copy(MemberTag, _TAG_FIELDS, batch.tags)
        self._copy(CertificationGrant, _GRANT_FIELDS, batch.grants)
        self._copy(MemberDailyActivity, _ROLLUP_FIELDS, batch.rollups, plain=True)

        # The ledger: entries chained per member (version, balance after), a lot per entry,
        # and the account at the chain's end.
        entries: list[tuple[Any, ...]] = []
        lots: list[tuple[Any, ...]] = []
        # member id -> [available, pending, lifetime earned, version, updated at (ms)]
        accounts: dict[str, list[int]] = {}
        for entry_id, entry in zip(self._entry_ids(len(batch.entries)), batch.entries, strict=True):
            account = accounts.setdefault(entry.member_id, [0, 0, 0, 0, 0])
            account[0 if entry.pending_until_ms is None else 1] += entry.points
            account[2] += entry.points
            account[3] += 1
            account[4] = entry.created_ms
            created_at = _datetime(entry.created_ms)
            entries.append(
                (
                    entry_id,
                    entry.member_id,
                    account[3],
                    _EARN,
                    entry.points,
                    _ISSUANCE,
                    account[0] + account[1],
                    entry.reason,
                    _ENTRY_NOTE,
                    LOAD_ACTOR.label,
                    created_at,
                )
            )
            lots.append(
                (
                    entry_id,
                    entry.member_id,
                    entry.points,
                    entry.points,
                    _datetime(entry.expires_ms),
                    _optional_datetime(entry.pending_until_ms),
                    entry.pending_until_ms is not None,
                    created_at,
                )
            )
        self._copy(PointsEntry, _ENTRY_FIELDS, entries)
        self._copy(PointsLot, _LOT_FIELDS, lots)
        self._copy(
            PointsAccount,
            _ACCOUNT_FIELDS,
            [
                _account_row(member[0], accounts.get(member[0]), created_at=member[-2])
                for member in batch.members
            ],
        )
        # Double entry: the issuance account moves by minus the points issued. Last, so the
        # shard row stays locked only until the commit.
        issued = sum(account[2] for account in accounts.values())
        _system_balances_add({(_ISSUANCE, self.shard): -issued})

    def _entry_ids(self, count: int) -> list[int]:
        """Ids for ``count`` new ledger entries (their lots refer to them before insertion)."""
        if not count:
            return []
        table = PointsEntry._meta.db_table
        column = PointsEntry._meta.pk.column
        with connection.cursor() as cursor:
            if self.postgres:
                cursor.execute(
                    "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                    [table, column, count],
                )
                return [row[0] for row in cursor.fetchall()]
            # SQLite: this transaction has written already, so it holds the database's write
            # lock and nobody else can take these ids.
            cursor.execute(
                f"SELECT COALESCE(MAX({connection.ops.quote_name(column)}), 0) "  # noqa: S608
                f"FROM {connection.ops.quote_name(table)}"
            )
            (highest,) = cursor.fetchone()
            return list(range(highest + 1, highest + 1 + count))

    def _copy(
        self,
        model: type[models.Model],
        fields: tuple[str, ...],
        rows: Sequence[tuple[Any, ...]],
        *,
        plain: bool = False,
    ) -> None:
        """Insert ``rows`` (values of ``fields``). ``plain`` rows hold only numbers and strings
        without tabs, newlines or backslashes: on PostgreSQL their COPY text lines are formatted
        here, at half the cost of psycopg's per-value adaptation."""
        if not rows:
            return
        if not self.postgres:
            names = [model._meta.get_field(name).attname for name in fields]
            model._base_manager.bulk_create(
                [model(**dict(zip(names, row, strict=True))) for row in rows], batch_size=500
            )
            return
        columns, defaults = self._copy_columns(model, fields)
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(
                f"COPY {connection.ops.quote_name(model._meta.db_table)} ({columns}) FROM STDIN"
            ) as copy,
        ):
            if plain and not defaults:
                line = "\t".join(["%s"] * len(fields)) + "\n"
                copy.write("".join([line % row for row in rows]))
                return
            write = copy.write_row
            if defaults:
                for row in rows:
                    write(row + defaults)
            else:
                for row in rows:
                    write(row)

    def _copy_columns(
        self, model: type[models.Model], fields: tuple[str, ...]
    ) -> tuple[str, tuple[Any, ...]]:
        """The columns to copy: ``fields``, then every other concrete column with its default,
        so columns added later by other apps are filled as the ORM would fill them."""
        if model not in self._columns:
            quote = connection.ops.quote_name
            columns = [quote(model._meta.get_field(name).column) for name in fields]
            defaults: list[Any] = []
            for model_field in model._meta.concrete_fields:
                if model_field.name in fields or isinstance(model_field, AutoFieldMixin):
                    continue
                # What the ORM would write for an unset field: its default, "" for text.
                value = model_field.get_db_prep_save(model_field.get_default(), connection)
                if value is None and not model_field.null:
                    raise ImproperlyConfigured(
                        f"{model._meta.label}.{model_field.name} has no default: teach the load "
                        "data generator to fill it."
                    )
                columns.append(quote(model_field.column))
                defaults.append(value)
            self._columns[model] = (", ".join(columns), tuple(defaults))
        return self._columns[model]


def _analyze() -> None:
    """Fresh planner statistics: the benchmarks query these tables right after loading."""
    if not is_postgres():
        return
    tables = ", ".join(connection.ops.quote_name(m._meta.db_table) for m in _WRITTEN_MODELS)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {tables}")


def _account_row(
    member_id: str, account: list[int] | None, *, created_at: datetime
) -> tuple[Any, ...]:
    if account is None:
        return (member_id, 0, 0, 0, 0, created_at)
    available, pending, lifetime_earned, version, updated_ms = account
    return (member_id, available, pending, lifetime_earned, version, _datetime(updated_ms))
