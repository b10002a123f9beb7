"""A deterministic member population for the reassessment job tests, and its end state.

``population_build`` writes members, daily rollups and certification grants set-based (bulk
inserts, fixed seed, fixed ids), so building twice gives identical data: a reference run on one
copy and the run under test on the other can be compared table by table. The profiles make a
good share of the members change tier (upgrades, grace starting and ending, demotions, pins).

``population_state`` reads the end state in a form that does not depend on which job produced it
(job ids, rule set ids and row ids left out), and ``digests`` sums it up per table.
"""

import hashlib
import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Count

from core.models import Job, JobChunk, OutboxEvent
from members.models import Member, MemberDailyActivity
from rewards.models import CertificationGrant
from rewards.services.earning import business_date_of
from tiers.models import TierChange

# Noon in the program's time zone (Asia/Shanghai), a Sunday: the job's fixed assessment time.
AT = datetime(2025, 6, 15, 4, 0, tzinfo=UTC)
SEED = 20250615

# Profile -> weight. Roughly 46 % change tier, 20 % more change tier state or get a warning.
PROFILES = {
    "climber": 25,  # basic, certified, busy: -> active
    "almost": 10,  # basic, certified, too quiet: stays
    "uncertified": 8,  # basic, busy, no (or an expired) onboarding certificate: stays
    "steady": 10,  # active, keeps the maintenance rule: nothing changes
    "slipping": 10,  # active, fails maintenance: grace starts (a will_downgrade warning)
    "lapsed": 12,  # active, grace over: -> basic
    "warned": 5,  # active, grace ends within the warning days: the final warning
    "recovering": 5,  # active, in grace but back above maintenance: grace cleared
    "fading_creator": 6,  # koc, grace over, still active enough: -> active
    "pinned_creator": 4,  # koc, grace over but pinned: held
    "pin_ended": 3,  # koc, pin and grace over, idle: -> active (pin expired)
    "erased": 2,  # erased: never assessed
}


def _member(member_id: uuid.UUID, number: int, at: datetime, **state: Any) -> Member:
    """A member row with the fields ``members.services.member_create`` fills, joined 200 days
    before ``at``, plus the tier state of its profile (erased as ``member_erase`` leaves it)."""
    joined = at - timedelta(days=200)
    erased = state.get("erased_at") is not None
    return Member(
        id=member_id,
        external_id=f"erased:{member_id}" if erased else f"pop-{number:05d}",
        display_name=f"Member {number}",
        joined_at=joined,
        tier_since=joined,
        lifecycle_changed_at=joined,
        created_at=joined,
        updated_at=joined,
        **state,
    )


@dataclass(slots=True)
class _Rows:
    """What one member's profile adds to the three bulk inserts."""

    rng: random.Random
    member_id: uuid.UUID
    at: datetime
    state: dict[str, Any] = field(default_factory=dict)
    activity: list[MemberDailyActivity] = field(default_factory=list)
    grants: list[CertificationGrant] = field(default_factory=list)

    def active_on(self, days: int, interactions: tuple[int, int], posts: int = 0) -> None:
        """``days`` distinct business days within the last 30, with that many interactions."""
        today = business_date_of(self.at)
        self.activity += [
            MemberDailyActivity(
                member_id=self.member_id,
                business_date=today - timedelta(days=ago),
                interactions=self.rng.randint(*interactions) + posts,
                posts=posts,
                points_earned=0,
            )
            for ago in sorted(self.rng.sample(range(30), days))
        ]

    def certified(self, code: str, expires_at: datetime | None = None) -> None:
        granted = self.at - timedelta(days=100)
        self.grants.append(
            CertificationGrant(
                member_id=self.member_id,
                certification_id=code,
                granted_at=granted,
                expires_at=expires_at,
                granted_by="tests",
                updated_at=granted,
            )
        )

    def grace(self, days: int, tier: str = "active") -> None:
        self.state |= {"tier_id": tier, "tier_grace_until": self.at + timedelta(days=days)}


def _basic(rows: _Rows, profile: str) -> None:
    if profile == "climber":
        rows.active_on(rows.rng.randint(4, 7), (3, 5))
    elif profile == "almost":
        rows.active_on(rows.rng.randint(1, 3), (1, 3))
    elif profile == "erased":  # would climb, but erased members are left out
        rows.active_on(6, (3, 5))
        rows.state["erased_at"] = rows.at - timedelta(days=5)
    else:  # uncertified: busy, but the onboarding certificate is missing or expired
        rows.active_on(5, (3, 5))
        if rows.rng.random() < 0.5:
            rows.certified("onboarding", expires_at=rows.at - timedelta(days=1))
        return
    rows.certified("onboarding")


def _active(rows: _Rows, profile: str) -> None:
    rows.certified("onboarding")
    rows.state["tier_id"] = "active"
    if profile == "steady":
        rows.active_on(rows.rng.randint(2, 4), (3, 4))
    elif profile == "slipping":
        rows.active_on(1, (1, 3))
    elif profile == "lapsed":
        rows.grace(-rows.rng.randint(1, 20))
    elif profile == "warned":
        rows.grace(rows.rng.randint(1, 6))
    else:  # recovering
        rows.grace(10)
        rows.active_on(3, (2, 4))


def _creator(rows: _Rows, profile: str) -> None:
    rows.certified("onboarding")
    rows.certified("content-creator")
    rows.grace(-rows.rng.randint(1, 9), tier="koc")
    if profile == "pinned_creator":
        rows.state |= {"tier_pin_id": "koc", "tier_pinned_until": rows.at + timedelta(days=15)}
    elif profile == "pin_ended":
        rows.state |= {"tier_pin_id": "koc", "tier_pinned_until": rows.at - timedelta(days=2)}
    else:  # fading creator: no qualifying points for koc, still busy enough for active
        rows.active_on(3, (2, 4), posts=1)


_BUILDERS = {
    "climber": _basic,
    "almost": _basic,
    "uncertified": _basic,
    "erased": _basic,
    "steady": _active,
    "slipping": _active,
    "lapsed": _active,
    "warned": _active,
    "recovering": _active,
    "fading_creator": _creator,
    "pinned_creator": _creator,
    "pin_ended": _creator,
}


def population_build(*, size: int, seed: int = SEED, at: datetime = AT) -> None:
    """Insert ``size`` members (ids, profiles and activity fixed by ``seed``) in three bulk
    inserts. Building again with the same arguments after ``population_wipe`` gives the same
    rows."""
    rng = random.Random(seed)
    names, weights = list(PROFILES), list(PROFILES.values())
    members: list[Member] = []
    activity: list[MemberDailyActivity] = []
    grants: list[CertificationGrant] = []
    for number in range(size):
        rows = _Rows(rng=rng, member_id=uuid.UUID(int=rng.getrandbits(128), version=4), at=at)
        profile = rng.choices(names, weights)[0]
        _BUILDERS[profile](rows, profile)
        members.append(_member(rows.member_id, number, at, **rows.state))
        activity += rows.activity
        grants += rows.grants
    Member.objects.bulk_create(members, batch_size=1000)
    MemberDailyActivity.objects.bulk_create(activity, batch_size=2000)
    CertificationGrant.objects.bulk_create(grants, batch_size=2000)


def population_wipe() -> None:
    """Delete the population and everything the jobs wrote about it."""
    OutboxEvent.objects.all().delete()
    TierChange.objects.all().delete()
    JobChunk.objects.all().delete()
    Job.objects.all().delete()
    CertificationGrant.objects.all().delete()
    MemberDailyActivity.objects.all().delete()
    Member.objects.all().delete()


@dataclass(frozen=True, slots=True)
class PopulationState:
    """The tier tables as sorted tuples, with what differs between two equal runs left out."""

    members: tuple[tuple[Any, ...], ...]
    history: tuple[tuple[Any, ...], ...]
    outbox: tuple[tuple[Any, ...], ...]

    def digests(self) -> dict[str, tuple[int, str]]:
        """Rows and md5 per table: equal digests mean equal tables."""
        return {
            name: (len(rows), hashlib.md5(repr(rows).encode(), usedforsecurity=False).hexdigest())
            for name, rows in (
                ("members", self.members),
                ("history", self.history),
                ("outbox", self.outbox),
            )
        }

    def tier_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.members:
            counts[row[1]] = counts.get(row[1], 0) + 1
        return counts


def _without_jobs(text: str, job_ids: list[str]) -> str:
    for job_id in job_ids:
        text = text.replace(job_id, "<job>")
    return text


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def population_state() -> PopulationState:
    """Member tier state, tier history and outbox events, independent of the producing job."""
    job_ids = [str(pk) for pk in Job.objects.values_list("pk", flat=True)]
    members = tuple(
        sorted(
            (str(pk), tier, *(_iso(value) for value in dates), pin, version)
            for pk, tier, pin, version, *dates in Member.objects.values_list(
                "pk",
                "tier_id",
                "tier_pin_id",
                "tier_version",
                "tier_since",
                "tier_grace_until",
                "tier_pinned_until",
                "tier_probation_until",
                "updated_at",
            )
        )
    )
    history = tuple(
        sorted(
            (
                str(member),
                source,
                target,
                reason,
                _without_jobs(actor, job_ids),
                version,
                _iso(pinned_until),
                json.dumps(details, sort_keys=True),
                _iso(created_at),
            )
            for member, source, target, reason, actor, version, pinned_until, details, created_at in (
                TierChange.objects.values_list(
                    "member_id",
                    "from_tier_id",
                    "to_tier_id",
                    "reason",
                    "actor",
                    "rule_set__version",
                    "pinned_until",
                    "details",
                    "created_at",
                )
            )
        )
    )
    outbox = tuple(
        sorted(
            (
                event_type,
                aggregate_id,
                _without_jobs(dedupe_key, job_ids),
                json.dumps(payload, sort_keys=True),
                _iso(occurred_at),
            )
            for event_type, aggregate_id, dedupe_key, payload, occurred_at in (
                OutboxEvent.objects.values_list(
                    "event_type", "aggregate_id", "dedupe_key", "payload", "occurred_at"
                )
            )
        )
    )
    return PopulationState(members=members, history=history, outbox=outbox)


def history_duplicates() -> list[tuple[Any, ...]]:
    """(job, member) pairs with more than one history row, and members with more than one event
    of a type: what a double write by one job would leave (must be empty)."""
    doubled = list(
        TierChange.objects.filter(job__isnull=False)
        .values("job_id", "member_id")
        .annotate(rows=Count("id"))
        .filter(rows__gt=1)
        .values_list("job_id", "member_id", "rows")
    )
    doubled += list(
        OutboxEvent.objects.values("event_type", "aggregate_id")
        .annotate(rows=Count("id"))
        .filter(rows__gt=1)
        .values_list("event_type", "aggregate_id", "rows")
    )
    return doubled


def members_disagreeing_with_history(job: Job) -> list[tuple[str, str, str]]:
    """Members whose tier is not the ``to_tier`` of their history row in ``job`` (I13)."""
    tiers = dict(Member.objects.values_list("pk", "tier_id"))
    return [
        (str(member_id), tiers[member_id], target)
        for member_id, target in TierChange.objects.filter(job=job).values_list(
            "member_id", "to_tier_id"
        )
        if tiers[member_id] != target
    ]
