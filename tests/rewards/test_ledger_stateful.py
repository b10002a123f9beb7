"""Hypothesis stateful test: random award / pending award / spend / reverse / clock-advance
sequences against a plain-Python model of lots (FIFO by expiry, pending holds, debt).

After every step the service's account and the system accounts equal the model, and the SQL
audit (conservation included) finds nothing."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from core.actors import system_actor
from members.services import member_create
from rewards.models import PointsAccount
from rewards.selectors import ledger_violations, system_account_balances
from rewards.services.jobs import points_expire, points_release_pending
from rewards.services.ledger import (
    BalanceInDebtError,
    InsufficientPointsError,
    NotReversibleError,
    points_award,
    points_deduct,
    points_reverse,
)
from tests.helpers import vacuum_test_database

ACTOR = system_actor("hypothesis")


@dataclass
class ModelLot:
    entry_id: int
    points: int
    remaining: int
    expires_at: datetime
    pending_until: datetime | None
    expired: int = 0


@dataclass
class Model:
    available: int = 0
    pending: int = 0
    lifetime: int = 0
    lots: list[ModelLot] = field(default_factory=list)
    reversed: set[int] = field(default_factory=set)
    # The system side: what each counter account gave out (negative) or took back.
    system: dict[str, int] = field(
        default_factory=lambda: {"issuance": 0, "redemption": 0, "expiry": 0, "adjustment": 0}
    )

    def open_lots(self) -> list[ModelLot]:
        return sorted(
            (lot for lot in self.lots if lot.remaining > 0 and lot.pending_until is None),
            key=lambda lot: (lot.expires_at, lot.entry_id),
        )

    def consume(self, points: int, skip: ModelLot | None = None) -> int:
        taken = 0
        for lot in self.open_lots():
            if lot is skip or taken == points:
                continue
            share = min(lot.remaining, points - taken)
            lot.remaining -= share
            taken += share
        return taken


class LedgerMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.now = timezone.now()
        self.member = member_create(external_id="hypo", display_name="H", actor=ACTOR, at=self.now)
        self.model = Model()

    def _credit(
        self, entry_id: int, points: int, expires_at: datetime, pending_until: datetime | None
    ) -> None:
        repay = 0 if pending_until else min(max(0, -self.model.available), points)
        if pending_until:
            self.model.pending += points
        else:
            self.model.available += points
        self.model.lots.append(
            ModelLot(entry_id, points, points - repay, expires_at, pending_until)
        )

    @rule(
        points=st.integers(1, 60),
        expires_days=st.integers(1, 40),
        pending_days=st.sampled_from([None, 3, 10]),
    )
    def award(self, points: int, expires_days: int, pending_days: int | None) -> None:
        expires_at = self.now + timedelta(days=expires_days + (pending_days or 0))
        pending_until = self.now + timedelta(days=pending_days) if pending_days else None
        entry = points_award(
            member=self.member,
            points=points,
            reason="purchase",
            actor=ACTOR,
            at=self.now,
            expires_at=expires_at,
            pending_until=pending_until,
        )
        self.model.lifetime += points
        self.model.system["issuance"] -= points
        self._credit(entry.pk, points, expires_at, pending_until)

    @rule(points=st.integers(1, 80))
    def spend(self, points: int) -> None:
        if self.model.available < 0:
            with pytest.raises(BalanceInDebtError):
                points_deduct(
                    member=self.member, points=points, reason="manual", actor=ACTOR, at=self.now
                )
        elif self.model.available < points:
            with pytest.raises(InsufficientPointsError):
                points_deduct(
                    member=self.member, points=points, reason="manual", actor=ACTOR, at=self.now
                )
        else:
            points_deduct(
                member=self.member, points=points, reason="manual", actor=ACTOR, at=self.now
            )
            self.model.available -= points
            self.model.system["adjustment"] += points
            assert self.model.consume(points) == points

    @precondition(
        lambda self: any(lot.entry_id not in self.model.reversed for lot in self.model.lots)
    )
    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        candidates = [lot for lot in self.model.lots if lot.entry_id not in self.model.reversed]
        lot = data.draw(st.sampled_from(candidates))
        from rewards.models import PointsEntry

        entry = PointsEntry.objects.get(pk=lot.entry_id)
        amount = lot.points - lot.expired
        if amount <= 0:
            with pytest.raises(NotReversibleError):
                points_reverse(entry=entry, actor=ACTOR, at=self.now)
            return
        points_reverse(entry=entry, actor=ACTOR, at=self.now)
        self.model.reversed.add(lot.entry_id)
        self.model.system["issuance"] += amount
        if lot.pending_until is not None:
            self.model.pending -= lot.remaining
            lot.remaining = 0
            return
        from_lot, lot.remaining = lot.remaining, 0
        self.model.available -= amount
        if amount > from_lot:
            self.model.consume(amount - from_lot, skip=lot)

    @rule(days=st.integers(1, 15))
    def advance_clock(self, days: int) -> None:
        self.now += timedelta(days=days)
        points_release_pending(at=self.now)
        # Released in order of their hold's end: earlier holds repay debt first.
        due = sorted(
            (lot for lot in self.model.lots if lot.pending_until and lot.pending_until <= self.now),
            key=lambda lot: (lot.pending_until, lot.entry_id),
        )
        for lot in due:
            if lot.pending_until is not None:
                lot.pending_until = None
                self.model.pending -= lot.remaining
                repay = min(max(0, -self.model.available), lot.remaining)
                self.model.available += lot.remaining
                lot.remaining -= repay
        points_expire(at=self.now)
        for lot in self.model.lots:
            if lot.pending_until is None and lot.remaining > 0 and lot.expires_at <= self.now:
                self.model.available -= lot.remaining
                self.model.system["expiry"] += lot.remaining
                lot.expired += lot.remaining
                lot.remaining = 0

    @invariant()
    def matches_model_and_audit(self) -> None:
        if not hasattr(self, "member"):
            return
        account = PointsAccount.objects.filter(pk=self.member.pk).first() or PointsAccount()
        assert (account.available, account.pending, account.lifetime_earned) == (
            self.model.available,
            self.model.pending,
            self.model.lifetime,
        )
        assert system_account_balances() == self.model.system
        assert ledger_violations() == []


SETTINGS = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.django_db
def test_ledger_matches_the_model():
    class Isolated(LedgerMachine):
        """Each example runs in a savepoint rolled back afterwards, so examples are independent."""

        def __init__(self) -> None:
            super().__init__()
            self._atomic = transaction.atomic()
            self._atomic.__enter__()

        def teardown(self) -> None:
            transaction.set_rollback(True)
            self._atomic.__exit__(None, None, None)

    from hypothesis.stateful import run_state_machine_as_test

    vacuum_test_database()  # the audit scans whole tables at every step
    run_state_machine_as_test(Isolated, settings=SETTINGS)
