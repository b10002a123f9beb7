"""Double entry (I5): every posting moves a system account by minus the member's points, the
system accounts keep real (sharded) balances, and the audit finds any drift."""

import io
from datetime import timedelta
from uuid import UUID

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.models import F, Sum
from django.utils import timezone

from core.actors import system_actor
from rewards.models import EntryKind, PointsAccount, PointsEntry, SystemAccountBalance
from rewards.selectors import ledger_violations, system_account_balances
from rewards.services.earning import EventForAward, checkin_create, events_award_batch
from rewards.services.jobs import points_expire, points_release_pending
from rewards.services.ledger import (
    AwardSpec,
    _system_postings,
    points_award,
    points_award_batch,
    points_deduct,
    points_reverse,
    system_account_shard,
)

ACTOR = system_actor("tests")


def _balances(**nonzero: int) -> dict[str, int]:
    return {"issuance": 0, "redemption": 0, "expiry": 0, "adjustment": 0, **nonzero}


def _members_total() -> int:
    totals = PointsAccount.objects.aggregate(available=Sum("available"), pending=Sum("pending"))
    return (totals["available"] or 0) + (totals["pending"] or 0)


def _i5_violations() -> list[tuple[str, list]]:
    return sorted(
        (violation["invariant"], violation["row"])
        for violation in ledger_violations()
        if violation["invariant"].startswith("I5")
    )


def test_each_kind_posts_against_its_system_account_and_reversals_against_their_targets(
    member, audited
):
    now = timezone.now()
    earn = points_award(member=member, points=100, reason="manual", actor=ACTOR, at=now)
    spend = points_deduct(member=member, points=30, reason="manual", actor=ACTOR, at=now)
    points_deduct(
        member=member,
        points=20,
        reason="redemption",
        kind=EntryKind.REDEEM,
        actor=ACTOR,
        at=now,
    )
    points_award(
        member=member,
        points=10,
        reason="manual",
        actor=ACTOR,
        at=now,
        expires_at=now + timedelta(days=1),
    )
    later = now + timedelta(days=2)
    points_expire(at=later)

    points_reverse(entry=spend, actor=ACTOR, at=later, reason="correction")
    points_reverse(entry=earn, actor=ACTOR, at=later)

    assert list(
        PointsEntry.objects.filter(member=member)
        .order_by("version")
        .values_list("kind", "points", "counter_account")
    ) == [
        ("earn", 100, "issuance"),
        ("adjust", -30, "adjustment"),
        ("redeem", -20, "redemption"),
        ("earn", 10, "issuance"),
        ("expire", -10, "expiry"),
        ("reverse", 30, "adjustment"),
        ("reverse", -100, "issuance"),
    ]
    # The refund left a debt of 20: the program is owed what it holds in excess.
    assert _members_total() == -20
    assert system_account_balances() == _balances(issuance=-10, redemption=20, expiry=10)


def test_pending_points_are_issued_at_the_award_and_their_release_moves_nothing(member, audited):
    now = timezone.now()
    purchase = points_award(
        member=member,
        points=40,
        reason="purchase",
        actor=ACTOR,
        at=now,
        pending_until=now + timedelta(days=14),
    )
    held = system_account_balances()

    points_release_pending(at=now + timedelta(days=14))
    released = system_account_balances()
    points_reverse(entry=purchase, actor=ACTOR, at=now + timedelta(days=15))

    assert held == released == _balances(issuance=-40)
    assert system_account_balances() == _balances()
    assert _members_total() == 0


def test_batch_awards_move_each_members_shard_of_the_issuance_account(
    make_member, settings, audited
):
    settings.LOYALTY_SYSTEM_ACCOUNT_SHARDS = 3
    members = [make_member(f"batch-{n}") for n in range(7)]
    now = timezone.now()
    expected: dict[int, int] = {}
    for points, member in enumerate(members, start=1):
        shard = system_account_shard(member.pk)
        expected[shard] = expected.get(shard, 0) - points

    with transaction.atomic():
        results = points_award_batch(
            items=[
                AwardSpec(member_id=member.pk, points=points, reason="manual")
                for points, member in enumerate(members, start=1)
            ],
            actor=ACTOR,
            at=now,
        )

    assert {result.status for result in results} == {"accepted"}
    assert (
        dict(
            SystemAccountBalance.objects.filter(account="issuance", shard__in=expected)
            .values_list("shard", "balance")
            .order_by("shard")
        )
        == expected
    )
    assert system_account_balances() == _balances(issuance=-28)


def test_check_ins_and_event_batches_are_issued(make_member, audited):
    ann, bob = make_member("ann"), make_member("bob")
    now = timezone.now()

    checkin_create(member=ann, actor=ACTOR, at=now)
    with transaction.atomic():
        events_award_batch(
            items=[
                EventForAward(member.pk, "post", f"post:{member.pk}:{n}", now)
                for member in (ann, bob)
                for n in range(2)
            ],
            actor=ACTOR,
            at=now,
        )

    # A check-in earns 5, a post 20.
    assert system_account_balances() == _balances(issuance=-85)
    assert _members_total() == 85


def test_a_members_postings_always_use_the_same_shard(member, audited):
    now = timezone.now()
    shard = system_account_shard(member.pk)

    points_award(member=member, points=9, reason="manual", actor=ACTOR, at=now)
    points_award(member=member, points=4, reason="manual", actor=ACTOR, at=now)
    points_deduct(member=member, points=6, reason="manual", actor=ACTOR, at=now)

    assert sorted(
        SystemAccountBalance.objects.exclude(balance=0).values_list("account", "shard", "balance")
    ) == [("adjustment", shard, 6), ("issuance", shard, -13)]


def test_a_missing_shard_row_is_created_by_the_posting(member, settings, audited):
    # A new shard count, or tables flushed by a test: the posting's upsert adds the row.
    SystemAccountBalance.objects.all().delete()
    settings.LOYALTY_SYSTEM_ACCOUNT_SHARDS = 1000

    points_award(member=member, points=12, reason="manual", actor=ACTOR, at=timezone.now())

    assert list(SystemAccountBalance.objects.values_list("account", "shard", "balance")) == [
        ("issuance", member.pk.int % 1000, -12)
    ]


def test_a_batch_moves_each_touched_shard_once_in_account_then_shard_order(settings):
    settings.LOYALTY_SYSTEM_ACCOUNT_SHARDS = 16
    a, b, c, d = UUID(int=3), UUID(int=19), UUID(int=2), UUID(int=5)  # shards 3, 3, 2, 5

    def entry(member_id: UUID, kind: str, points: int, account: str) -> PointsEntry:
        return PointsEntry(member_id=member_id, kind=kind, points=points, counter_account=account)

    postings = _system_postings(
        [
            entry(a, "earn", 5, "issuance"),
            entry(c, "adjust", -4, "adjustment"),
            entry(b, "earn", 7, "issuance"),
            entry(c, "earn", 1, "issuance"),
            entry(d, "earn", 5, "issuance"),
            entry(d, "reverse", -5, "issuance"),  # nets to nothing: that shard is not touched
        ]
    )

    assert postings == [("adjustment", 2, 4), ("issuance", 2, -1), ("issuance", 3, -12)]


def test_the_audit_finds_a_tampered_system_balance(member):
    points_award(member=member, points=10, reason="manual", actor=ACTOR, at=timezone.now())

    SystemAccountBalance.objects.filter(
        account="issuance", shard=system_account_shard(member.pk)
    ).update(balance=F("balance") + 1)

    assert _i5_violations() == [
        ("I5 members + system accounts = 0", [10, -9]),
        ("I5 system account = -sum of its entries", ["issuance", -9, -10]),
    ]


def test_the_audit_finds_a_reversal_posted_against_another_account(member):
    now = timezone.now()
    earn = points_award(member=member, points=10, reason="manual", actor=ACTOR, at=now)
    reversal = points_reverse(entry=earn, actor=ACTOR, at=now)

    PointsEntry.objects.filter(pk=reversal.pk).update(counter_account="expiry")

    assert _i5_violations() == [
        ("I5 counter account of the kind", [reversal.pk, "reverse", "expiry"]),
        ("I5 system account = -sum of its entries", ["expiry", 0, 10]),
        ("I5 system account = -sum of its entries", ["issuance", 0, -10]),
    ]


def test_an_entry_cannot_name_another_counter_account_than_its_kinds(member):
    earn = points_award(member=member, points=10, reason="manual", actor=ACTOR, at=timezone.now())

    with pytest.raises(IntegrityError), transaction.atomic():
        PointsEntry.objects.filter(pk=earn.pk).update(counter_account="expiry")

    assert PointsEntry.objects.get(pk=earn.pk).counter_account == "issuance"
    assert ledger_violations() == []


def test_the_audit_command_names_the_broken_conservation(member):
    points_award(member=member, points=10, reason="manual", actor=ACTOR, at=timezone.now())
    SystemAccountBalance.objects.update_or_create(
        account="expiry", shard=0, defaults={"balance": 2}
    )
    errors = io.StringIO()

    with pytest.raises(CommandError, match="2 ledger violations"):
        call_command("audit_ledger", stdout=io.StringIO(), stderr=errors)

    assert sorted(errors.getvalue().splitlines()) == [
        "I5 members + system accounts = 0: [10, -8]",
        "I5 system account = -sum of its entries: ['expiry', 2, 0]",
    ]


# --- The migration -----------------------------------------------------------------------------

BEFORE_I5 = ("rewards", "0004_seed_certifications")


@pytest.mark.django_db(transaction=True)
def test_the_migrations_backfill_counter_accounts_and_system_balances(member, settings):
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate([BEFORE_I5])
    try:
        old = executor.loader.project_state([BEFORE_I5]).apps
        entries = _history_before_i5(old, member.pk)
    finally:
        MigrationExecutor(connection).migrate(latest)

    assert dict(
        PointsEntry.objects.filter(pk__in=entries.values()).values_list("id", "counter_account")
    ) == {
        entries["earn"]: "issuance",
        entries["adjust"]: "adjustment",
        entries["expire"]: "expiry",
        entries["adjust back"]: "adjustment",
        entries["redeem"]: "redemption",
        entries["refund"]: "issuance",
    }
    assert SystemAccountBalance.objects.count() == 4 * settings.LOYALTY_SYSTEM_ACCOUNT_SHARDS
    assert system_account_balances() == _balances(issuance=-5, redemption=5, expiry=5)
    assert ledger_violations() == []


def _history_before_i5(apps, member_id: UUID) -> dict[str, int]:
    """A sound ledger written before counter accounts existed, with every kind and reversals of
    an adjustment and of an earn (into debt). Returns the entry ids by name."""
    entry_model = apps.get_model("rewards", "PointsEntry")
    lot_model = apps.get_model("rewards", "PointsLot")
    consumption_model = apps.get_model("rewards", "LotConsumption")
    now = timezone.now()

    def post(version: int, kind: str, points: int, balance: int, **fields: object) -> object:
        return entry_model.objects.create(
            member_id=member_id,
            version=version,
            kind=kind,
            points=points,
            balance_after=balance,
            reason="manual",
            actor="system:tests",
            created_at=now,
            **fields,
        )

    def lot(entry: object, points: int, days: int) -> object:
        # Every lot ends up fully consumed below.
        return lot_model.objects.create(
            entry=entry,
            member_id=member_id,
            points=points,
            remaining=0,
            expires_at=now + timedelta(days=days),
            created_at=now,
        )

    earn = post(1, "earn", 50, 50)
    big = lot(earn, 50, 365)
    small = lot(post(2, "earn", 5, 55), 5, 1)
    adjust = post(3, "adjust", -10, 45)
    expire = post(4, "expire", -5, 40, expired_lot=small)
    adjust_back = post(5, "reverse", 10, 50, reverses=adjust)
    back = lot(adjust_back, 10, 365)
    redeem = post(6, "redeem", -5, 45)
    refund = post(7, "reverse", -50, -5, reverses=earn)
    consumption_model.objects.bulk_create(
        consumption_model(entry=entry, lot=taken, points=points)
        for entry, taken, points in (
            (adjust, big, 10),
            (expire, small, 5),
            (redeem, big, 5),
            (refund, big, 35),
            (refund, back, 10),
        )
    )
    apps.get_model("rewards", "PointsAccount").objects.update_or_create(
        member_id=member_id,
        defaults={"available": -5, "pending": 0, "lifetime_earned": 55, "version": 7},
        create_defaults={"available": -5, "lifetime_earned": 55, "version": 7, "updated_at": now},
    )
    return {
        "earn": earn.pk,
        "adjust": adjust.pk,
        "expire": expire.pk,
        "adjust back": adjust_back.pk,
        "redeem": redeem.pk,
        "refund": refund.pk,
    }
