"""The points ledger: awards, spending, pending, reversals into debt, expiry, the audit."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from core.actors import system_actor
from core.models import OutboxEvent
from rewards.models import EntryKind, LotConsumption, PointsAccount, PointsEntry, PointsLot
from rewards.selectors import ledger_violations, points_balance_get
from rewards.services.jobs import points_expire, points_expiring_notify, points_release_pending
from rewards.services.ledger import (
    AlreadyReversedError,
    BalanceInDebtError,
    InsufficientPointsError,
    NotReversibleError,
    points_award,
    points_deduct,
    points_reverse,
)

ACTOR = system_actor("tests")


def _balance(member):
    account = PointsAccount.objects.get(pk=member.pk)
    return account.available, account.pending


def test_award_creates_a_lot_and_chains_the_balance(member, audited):
    now = timezone.now()

    first = points_award(member=member, points=30, reason="manual", actor=ACTOR, at=now)
    second = points_award(member=member, points=20, reason="manual", actor=ACTOR, at=now)

    assert (first.version, first.balance_after) == (1, 30)
    assert (second.version, second.balance_after) == (2, 50)
    assert PointsLot.objects.get(entry=second).expires_at == now + timedelta(days=365)
    assert _balance(member) == (50, 0)
    assert PointsAccount.objects.get(pk=member.pk).lifetime_earned == 50


def test_spending_takes_the_oldest_expiring_lots_first(member, audited):
    now = timezone.now()
    late = points_award(
        member=member,
        points=50,
        reason="manual",
        actor=ACTOR,
        at=now,
        expires_at=now + timedelta(days=300),
    )
    early = points_award(
        member=member,
        points=50,
        reason="manual",
        actor=ACTOR,
        at=now,
        expires_at=now + timedelta(days=10),
    )

    spend = points_deduct(member=member, points=60, reason="manual", actor=ACTOR, at=now)

    assert spend.points == -60
    assert (spend.kind, spend.balance_after) == (EntryKind.ADJUST, 40)
    assert PointsLot.objects.get(entry=early).remaining == 0
    assert PointsLot.objects.get(entry=late).remaining == 40
    assert sorted(LotConsumption.objects.filter(entry=spend).values_list("points", flat=True)) == [
        10,
        50,
    ]


def test_insufficient_points_changes_nothing(member, audited):
    now = timezone.now()
    points_award(member=member, points=10, reason="manual", actor=ACTOR, at=now)

    with pytest.raises(InsufficientPointsError):
        points_deduct(member=member, points=11, reason="manual", actor=ACTOR, at=now)

    assert _balance(member) == (10, 0)
    assert PointsEntry.objects.count() == 1


def test_pending_points_cannot_be_spent_until_released(member, audited):
    now = timezone.now()
    points_award(
        member=member,
        points=100,
        reason="purchase",
        actor=ACTOR,
        at=now,
        pending_until=now + timedelta(days=14),
    )

    with pytest.raises(InsufficientPointsError):
        points_deduct(member=member, points=1, reason="manual", actor=ACTOR, at=now)
    early = points_release_pending(at=now + timedelta(days=13))
    released = points_release_pending(at=now + timedelta(days=14))

    assert (early, released) == (0, 1)
    assert _balance(member) == (100, 0)
    assert points_balance_get(member_id=member.pk, at=now).pending == 0


def test_refund_of_spent_purchase_goes_into_debt_that_blocks_spending_and_is_repaid(
    member, audited
):
    now = timezone.now()
    purchase = points_award(member=member, points=100, reason="purchase", actor=ACTOR, at=now)
    points_deduct(member=member, points=80, reason="manual", actor=ACTOR, at=now)

    reversal = points_reverse(entry=purchase, actor=ACTOR, at=now)

    assert (reversal.kind, reversal.points, reversal.balance_after) == ("reverse", -100, -80)
    assert _balance(member) == (-80, 0)
    with pytest.raises(BalanceInDebtError):
        points_deduct(member=member, points=1, reason="manual", actor=ACTOR, at=now)
    repay = points_award(member=member, points=100, reason="manual", actor=ACTOR, at=now)
    assert repay.balance_after == 20
    assert PointsLot.objects.get(entry=repay).remaining == 20
    with pytest.raises(AlreadyReversedError):
        points_reverse(entry=purchase, actor=ACTOR, at=now)


def test_refund_takes_spent_part_from_other_lots_before_going_into_debt(member, audited):
    now = timezone.now()
    purchase = points_award(member=member, points=100, reason="purchase", actor=ACTOR, at=now)
    other = points_award(
        member=member,
        points=50,
        reason="manual",
        actor=ACTOR,
        at=now,
        expires_at=now + timedelta(days=500),
    )
    points_deduct(member=member, points=80, reason="manual", actor=ACTOR, at=now)

    points_reverse(entry=purchase, actor=ACTOR, at=now)

    assert _balance(member) == (-30, 0)
    assert PointsLot.objects.get(entry=other).remaining == 0


def test_refund_of_a_pending_purchase_removes_the_pending_points(member, audited):
    now = timezone.now()
    purchase = points_award(
        member=member,
        points=70,
        reason="purchase",
        actor=ACTOR,
        at=now,
        pending_until=now + timedelta(days=14),
    )

    points_reverse(entry=purchase, actor=ACTOR, at=now)

    assert _balance(member) == (0, 0)


def test_reversing_a_spend_credits_it_back(member, audited):
    now = timezone.now()
    points_award(member=member, points=40, reason="manual", actor=ACTOR, at=now)
    spend = points_deduct(member=member, points=25, reason="manual", actor=ACTOR, at=now)

    back = points_reverse(entry=spend, actor=ACTOR, at=now, reason="correction")

    assert (back.points, back.balance_after) == (25, 40)
    assert PointsAccount.objects.get(pk=member.pk).lifetime_earned == 40


def test_expiry_and_reversal_entries_cannot_be_reversed(member, audited):
    now = timezone.now()
    earn = points_award(member=member, points=5, reason="manual", actor=ACTOR, at=now)
    reversal = points_reverse(entry=earn, actor=ACTOR, at=now)

    with pytest.raises(NotReversibleError):
        points_reverse(entry=reversal, actor=ACTOR, at=now)


def test_expiry_posts_once_per_lot_and_a_rerun_changes_nothing(member, other_member, audited):
    now = timezone.now()
    soon = points_award(
        member=member,
        points=30,
        reason="manual",
        actor=ACTOR,
        at=now,
        expires_at=now + timedelta(days=1),
    )
    points_award(member=member, points=20, reason="manual", actor=ACTOR, at=now)
    points_award(
        member=other_member,
        points=5,
        reason="manual",
        actor=ACTOR,
        at=now,
        expires_at=now + timedelta(days=1),
    )
    later = now + timedelta(days=2)

    first = points_expire(at=later, chunk_size=1)
    snapshot = list(
        PointsEntry.objects.order_by("id").values_list("member_id", "version", "kind", "points")
    )
    second = points_expire(at=later)

    assert (first, second) == (2, 0)
    assert (
        list(
            PointsEntry.objects.order_by("id").values_list("member_id", "version", "kind", "points")
        )
        == snapshot
    )
    expiry = PointsEntry.objects.get(member=member, kind=EntryKind.EXPIRE)
    assert (expiry.points, expiry.balance_after, expiry.expired_lot_id) == (-30, 20, soon.pk)
    assert _balance(member) == (20, 0)
    assert OutboxEvent.objects.filter(event_type="points.expired").count() == 2


def test_refund_after_partial_expiry_takes_back_only_what_did_not_expire(member, audited):
    now = timezone.now()
    purchase = points_award(
        member=member,
        points=50,
        reason="purchase",
        actor=ACTOR,
        at=now,
        expires_at=now + timedelta(days=1),
    )
    points_expire(at=now + timedelta(days=2))

    with pytest.raises(NotReversibleError):
        points_reverse(entry=purchase, actor=ACTOR, at=now + timedelta(days=2))

    assert _balance(member) == (0, 0)


def test_expiring_warning_is_emitted_once_per_member_and_day(member, audited):
    now = timezone.now()
    points_award(
        member=member,
        points=30,
        reason="manual",
        actor=ACTOR,
        at=now,
        expires_at=now + timedelta(days=5),
    )
    points_award(
        member=member,
        points=30,
        reason="manual",
        actor=ACTOR,
        at=now,
        expires_at=now + timedelta(days=90),
    )

    points_expiring_notify(at=now, days=30)
    points_expiring_notify(at=now, days=30)

    events = list(OutboxEvent.objects.filter(event_type="points.expiring"))
    assert len(events) == 1
    assert events[0].payload["points"] == 30


def test_balance_view_groups_expiring_points_and_counts_qualifying(member, audited):
    now = timezone.now()
    points_award(
        member=member,
        points=10,
        reason="manual",
        actor=ACTOR,
        at=now,
        expires_at=now + timedelta(days=3),
    )
    earn = points_award(member=member, points=40, reason="purchase", actor=ACTOR, at=now)
    points_award(
        member=member,
        points=7,
        reason="purchase",
        actor=ACTOR,
        at=now,
        pending_until=now + timedelta(days=14),
    )
    points_deduct(member=member, points=5, reason="manual", actor=ACTOR, at=now)
    points_reverse(entry=earn, actor=ACTOR, at=now)

    balance = points_balance_get(member_id=member.pk, at=now)

    assert (balance.available, balance.pending, balance.lifetime_earned) == (5, 7, 57)
    assert balance.qualifying_points_90d == 17
    assert [(e.points, e.expires_on) for e in balance.expiring] == [
        (5, (now + timedelta(days=3)).date())
    ]


def test_audit_finds_a_tampered_balance(member):
    points_award(member=member, points=10, reason="manual", actor=ACTOR, at=timezone.now())

    PointsAccount.objects.filter(pk=member.pk).update(available=11)

    invariants = {violation["invariant"] for violation in ledger_violations()}
    assert "I1 balance = sum of entries" in invariants
    assert "I3 lots match the balance" in invariants


@time_machine.travel("2026-03-01 12:00:00+00:00", tick=False)
def test_award_validation_rejects_past_dates(member, audited):
    from core.exceptions import InvalidInputError

    now = timezone.now()
    with pytest.raises(InvalidInputError):
        points_award(
            member=member,
            points=1,
            reason="manual",
            actor=ACTOR,
            at=now,
            expires_at=now - timedelta(seconds=1),
        )

    assert not PointsEntry.objects.exists()


@pytest.mark.postgres
@pytest.mark.parametrize("pending", [False, True])
def test_an_award_to_an_open_account_is_two_statements_on_postgresql(
    member, audited, django_assert_num_queries, pending
):
    """The hot path: the account's UPDATE ... RETURNING, then entry, lot, outbox event and
    system shard in one statement; the result is the same posting as the general path's."""
    now = timezone.now()
    points_award(member=member, points=5, reason="manual", actor=ACTOR, at=now)  # opens it

    with django_assert_num_queries(2):
        entry = points_award(
            member=member,
            points=7,
            reason="manual",
            actor=ACTOR,
            at=now,
            pending_until=now + timedelta(days=14) if pending else None,
        )

    assert (entry.version, entry.balance_after) == (2, 12)
    stored = PointsEntry.objects.select_related("lot").get(pk=entry.pk)
    assert (stored.version, stored.balance_after, stored.points) == (2, 12, 7)
    assert (stored.lot.remaining, stored.lot.is_pending) == (7, pending)
    assert _balance(member) == ((5, 7) if pending else (12, 0))
    assert OutboxEvent.objects.filter(event_type="points.awarded").count() == 2
