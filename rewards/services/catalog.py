"""The rewards catalog's write path: rewards (operators), redemptions, fulfilment, cancellation.

Locks, in the global order of ``rewards.locks``: the member's points account, then (inside the
ledger posting) the system account shard, then the reward's row (its stock). A redemption:

1. locks the member's points account: the member's redemptions run one at a time, so the
   per-member limit counted under it is exact, and the points checked under it are still there;
2. checks the terms (``rewards.catalog_rules.redeem_blockers``: active, window, tier, benefit,
   limit, stock, points) and raises the first refusal before writing anything;
3. in a savepoint: deducts the points through the ledger (``points_deduct``, a ``redeem`` entry
   against the ``redemption`` system account, reference ``redemption:<id>``), then takes one item
   with a conditional ``UPDATE ... WHERE stock > 0`` (unlimited stock stays NULL). No row means
   another redemption took the last item: the savepoint rolls the deduction back -> 409
   ``out_of_stock``. Stock is never read-modify-written, so it cannot be oversold.

A cancellation refunds once: under the member's account lock the status is re-read (a second
cancel waits there and then finds ``cancelled``); the refund is ``points_reverse`` of the redeem
entry (a reversal is unique per entry, so even a path that skipped the lock could not refund
twice); the status moves with a conditional ``UPDATE`` from a live status, and the stock comes
back in the same transaction. A fulfilled redemption may be cancelled by an operator (with
``rewards.cancel_redemption``) with a reason, e.g. the item came back: points and stock are
restored as for a requested one. A member may cancel only their own *requested* redemption.
"""

from datetime import datetime
from typing import Any

import uuid6
from django.db import transaction
from django.db.models import Count, F, Q

from core.actors import Actor
from core.db import joins_transaction
from core.events import domain_event_record
from core.exceptions import ConflictError, ForbiddenError, InvalidInputError
from members.models import Member
from rewards import catalog_rules
from rewards.locks import points_accounts_lock
from rewards.models import EntryKind, Reason, Redemption, RedemptionStatus, Reward
from rewards.selectors import member_benefit_codes, reward_terms
from rewards.services.ledger import AlreadyReversedError, points_deduct, points_reverse
from tiers.models import Tier


class OutOfStockError(ConflictError):
    code = "out_of_stock"
    title = "This reward is out of stock"


class RedemptionInsufficientPointsError(ConflictError):
    code = "insufficient_points"
    title = "Not enough available points"


class LimitReachedError(ConflictError):
    code = "limit_reached"
    title = "The member has redeemed this reward as often as it allows"


class NotAvailableError(ConflictError):
    code = "not_available"
    title = "This reward is not available now"


class TierTooLowError(ConflictError):
    code = "tier_too_low"
    title = "The member's tier is below the reward's minimum tier"


class BenefitRequiredError(ConflictError):
    code = "benefit_required"
    title = "The reward requires a benefit the member's tier does not grant"


class AlreadyCancelledError(ConflictError):
    code = "already_cancelled"
    title = "This redemption has already been cancelled"


class AlreadyFulfilledError(ConflictError):
    code = "already_fulfilled"
    title = "This redemption has already been fulfilled"


class NotCancellableError(ConflictError):
    code = "not_cancellable"
    title = "This redemption can no longer be cancelled by its member"


_ERROR_OF_BLOCKER: dict[str, type[ConflictError]] = {
    catalog_rules.INACTIVE: NotAvailableError,
    catalog_rules.WINDOW: NotAvailableError,
    catalog_rules.TIER: TierTooLowError,
    catalog_rules.BENEFIT: BenefitRequiredError,
    catalog_rules.LIMIT: LimitReachedError,
    catalog_rules.STOCK: OutOfStockError,
    catalog_rules.POINTS: RedemptionInsufficientPointsError,
}

REWARD_FIELDS = (
    "name",
    "description",
    "image_url",
    "points_cost",
    "stock",
    "min_tier",
    "required_benefit",
    "per_member_limit",
    "available_from",
    "available_until",
    "is_active",
)


def _field_error(attr: str, detail: str) -> InvalidInputError:
    return InvalidInputError(
        detail, errors=[{"attr": attr, "pointer": f"#/{attr}", "code": "invalid", "detail": detail}]
    )


def _validate_reward(fields: dict[str, Any]) -> None:
    if fields["points_cost"] is None or fields["points_cost"] <= 0:
        raise _field_error("points_cost", "Must be a positive number of points.")
    if fields["stock"] is not None and fields["stock"] < 0:
        raise _field_error("stock", "Must be zero or more (empty: unlimited).")
    if fields["per_member_limit"] is not None and fields["per_member_limit"] <= 0:
        raise _field_error("per_member_limit", "Must be positive (empty: no limit).")
    start, end = fields["available_from"], fields["available_until"]
    if start is not None and end is not None and end <= start:
        raise _field_error("available_until", "Must be after available_from.")


def _resolve_tier(value: Tier | str | None) -> Tier | None:
    if value is None or isinstance(value, Tier):
        return value
    tier = Tier.objects.filter(pk=value).first()
    if tier is None:
        raise _field_error("min_tier", f"No tier {value!r}.")
    return tier


def reward_create(*, actor: Actor, at: datetime, **fields: Any) -> Reward:
    """Add a reward to the catalog (operators). ``min_tier`` is a tier or its code.

    :raises InvalidInputError: for a non-positive cost, negative stock or a reversed window.
    """
    unknown = set(fields) - set(REWARD_FIELDS)
    if unknown:
        raise InvalidInputError(f"Unknown reward fields: {sorted(unknown)}.")
    values: dict[str, Any] = {
        "description": "",
        "image_url": "",
        "stock": None,
        "min_tier": None,
        "required_benefit": "",
        "per_member_limit": None,
        "available_from": None,
        "available_until": None,
        "is_active": True,
        **fields,
    }
    values["min_tier"] = _resolve_tier(values["min_tier"])
    _validate_reward(values)
    return Reward.objects.create(created_at=at, updated_at=at, **values)


@joins_transaction
def reward_update(*, reward: Reward, actor: Actor, at: datetime, **changes: Any) -> Reward:
    """Change a reward's terms (operators). Setting ``stock`` sets what is left to redeem.

    :raises InvalidInputError: as ``reward_create``, or for a per-member limit below what a
        member already holds (cancel their redemptions first).
    """
    unknown = set(changes) - set(REWARD_FIELDS)
    if unknown:
        raise InvalidInputError(f"Unknown reward fields: {sorted(unknown)}.")
    # The reward's row: an operator's new stock must not overwrite a redemption's decrement
    # taken between our read and our write.
    locked = Reward.objects.select_for_update().get(pk=reward.pk)
    if "min_tier" in changes:
        changes["min_tier"] = _resolve_tier(changes["min_tier"])
    values = {name: getattr(locked, name) for name in REWARD_FIELDS} | changes
    _validate_reward(values)
    limit = changes.get("per_member_limit")
    if limit is not None and (
        Redemption.objects.filter(reward=locked)
        .exclude(status=RedemptionStatus.CANCELLED)
        .values("member_id")
        .annotate(held=Count("id"))
        .filter(held__gt=limit)
        .exists()
    ):
        raise _field_error(
            "per_member_limit", "A member already holds more redemptions than this limit."
        )
    for name, value in changes.items():
        setattr(locked, name, value)
    locked.updated_at = at
    locked.save(update_fields=[*changes, "updated_at"])
    return locked


@joins_transaction
def redemption_create(*, member: Member, reward: Reward, actor: Actor, at: datetime) -> Redemption:
    """Redeem the reward for the member: points and one item of stock leave together, once.

    :raises NotAvailableError: inactive, or outside its availability window.
    :raises TierTooLowError: the member's tier ranks below the reward's minimum tier.
    :raises BenefitRequiredError: the member's tier lacks the benefit the reward requires.
    :raises LimitReachedError: the member holds ``per_member_limit`` live redemptions of it.
    :raises OutOfStockError: no stock left (also when the last item went concurrently).
    :raises RedemptionInsufficientPointsError: fewer available points than the cost.
    :raises BalanceInDebtError: while the member's balance is negative after a refund.
    """
    # The member's points account first: it serializes this member's redemptions (the limit
    # count below is exact) and holds the points we check until they are deducted.
    account = points_accounts_lock(member_ids=[member.pk], at=at)[member.pk]
    reward = Reward.objects.select_related("min_tier").get(pk=reward.pk)
    tier_rank = (
        Member.objects.filter(pk=member.pk).values_list("tier__rank", flat=True).first() or 0
    )
    active = (
        Redemption.objects.filter(member=member, reward=reward)
        .exclude(status=RedemptionStatus.CANCELLED)
        .count()
        if reward.per_member_limit is not None
        else 0
    )
    redeemer = catalog_rules.RedeemerState(
        available_points=account.available,
        tier_rank=tier_rank,
        benefits=member_benefit_codes(member_id=member.pk, at=at)
        if reward.required_benefit
        else frozenset(),
        active_redemptions=active,
    )
    blockers = catalog_rules.redeem_blockers(reward_terms(reward), redeemer, at)
    # A balance in debt is the ledger's own refusal (balance_in_debt), raised by points_deduct.
    if blockers and not (blockers == [catalog_rules.POINTS] and account.available < 0):
        first = blockers[0]
        raise _ERROR_OF_BLOCKER[first](
            f"{reward.points_cost} points needed, {account.available} available."
            if first == catalog_rules.POINTS
            else None
        )
    redemption_id = uuid6.uuid7()
    # A savepoint: if the last item went meanwhile, the deduction is rolled back with it, so the
    # caller's transaction is left as it was (refusals leave nothing behind).
    with transaction.atomic():
        entry = points_deduct(
            member=member,
            points=reward.points_cost,
            reason=Reason.REDEMPTION,
            kind=EntryKind.REDEEM,
            reference=f"redemption:{redemption_id}",
            actor=actor,
            at=at,
        )
        # The reward's row, last (after the ledger's system shard): one item, only if one is left.
        # NULL stock (unlimited) stays NULL; the counter moves in the same statement.
        taken = Reward.objects.filter(Q(stock__isnull=True) | Q(stock__gt=0), pk=reward.pk).update(
            stock=F("stock") - 1, redeemed_count=F("redeemed_count") + 1
        )
        if taken != 1:
            raise OutOfStockError()
    redemption = Redemption.objects.create(
        id=redemption_id,
        member=member,
        reward=reward,
        points=reward.points_cost,
        redeem_entry=entry,
        actor=actor.label,
        created_at=at,
    )
    _event("redemption.created", redemption, at)
    return redemption


def _event(event_type: str, redemption: Redemption, at: datetime) -> None:
    domain_event_record(
        event_type=event_type,
        aggregate_id=str(redemption.member_id),
        payload={
            "redemption_id": str(redemption.pk),
            "member_id": str(redemption.member_id),
            "reward_id": redemption.reward_id,
            "points": redemption.points,
            "status": redemption.status,
        },
        at=at,
        dedupe_key=f"{event_type}:{redemption.pk}",
    )


def _refusal_for(redemption_id: Any) -> ConflictError:
    status = Redemption.objects.filter(pk=redemption_id).values_list("status", flat=True).first()
    if status == RedemptionStatus.CANCELLED:
        return AlreadyCancelledError()
    if status == RedemptionStatus.FULFILLED:
        return AlreadyFulfilledError()
    return ConflictError("The redemption changed concurrently; retry.")


@joins_transaction
def redemption_fulfil(*, redemption: Redemption, actor: Actor, at: datetime) -> Redemption:
    """Mark a requested redemption fulfilled (the item went out). Operators only.

    :raises AlreadyFulfilledError: it was fulfilled before.
    :raises AlreadyCancelledError: it was cancelled.
    """
    # A claim by conditional UPDATE: of a fulfilment and a cancellation racing, one wins.
    moved = Redemption.objects.filter(pk=redemption.pk, status=RedemptionStatus.REQUESTED).update(
        status=RedemptionStatus.FULFILLED, fulfilled_at=at, fulfilled_by=actor.label
    )
    if moved != 1:
        raise _refusal_for(redemption.pk)
    fulfilled = Redemption.objects.get(pk=redemption.pk)
    _event("redemption.fulfilled", fulfilled, at)
    return fulfilled


@joins_transaction
def redemption_cancel(
    *, redemption: Redemption, reason: str, actor: Actor, at: datetime
) -> Redemption:
    """Cancel a redemption: refund its points and restore its stock, exactly once.

    A member may cancel only their own requested redemption; an operator also a fulfilled one
    (the item came back), with a reason.

    :raises AlreadyCancelledError: it was cancelled before (nothing is refunded again).
    :raises NotCancellableError: a member cancelling a fulfilled redemption.
    :raises ForbiddenError: a member cancelling someone else's redemption.
    """
    if actor.is_member and actor.member_id != redemption.member_id:
        raise ForbiddenError("A member may cancel only their own redemptions.")
    if actor.is_operator and not reason.strip():
        raise _field_error("reason", "An operator's cancellation needs a reason.")
    cancellable = (
        (RedemptionStatus.REQUESTED,)
        if actor.is_member
        else (RedemptionStatus.REQUESTED, RedemptionStatus.FULFILLED)
    )
    # The member's account first (as every ledger write): a concurrent second cancel waits here
    # and then reads the status the first one committed.
    points_accounts_lock(member_ids=[redemption.member_id], at=at)
    current = Redemption.objects.select_related("redeem_entry").get(pk=redemption.pk)
    if current.status == RedemptionStatus.CANCELLED:
        raise AlreadyCancelledError()
    if current.status not in cancellable:
        raise NotCancellableError()
    with transaction.atomic():
        try:
            refund = points_reverse(
                entry=current.redeem_entry,
                actor=actor,
                at=at,
                reason=Reason.REFUND,
                note=f"Cancelled redemption {current.pk}",
            )
        except AlreadyReversedError as error:
            raise AlreadyCancelledError() from error
        # The status moves only from a live status: a fulfilment that won meanwhile undoes this.
        moved = Redemption.objects.filter(pk=current.pk, status__in=cancellable).update(
            status=RedemptionStatus.CANCELLED,
            refund_entry=refund,
            cancelled_at=at,
            cancelled_by=actor.label,
            cancel_reason=reason,
        )
        if moved != 1:
            refusal = _refusal_for(current.pk)
            raise (NotCancellableError() if isinstance(refusal, AlreadyFulfilledError) else refusal)
    # The reward's row, last: its item is back (unlimited stock stays NULL).
    Reward.objects.filter(pk=current.reward_id).update(
        stock=F("stock") + 1, redeemed_count=F("redeemed_count") - 1
    )
    cancelled = Redemption.objects.get(pk=current.pk)
    _event("redemption.cancelled", cancelled, at)
    return cancelled
