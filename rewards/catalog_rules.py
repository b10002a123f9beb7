"""Whether a member may redeem a reward, and why not: one pure function shared by the catalog's
list (``redeemable`` and ``reasons``) and the redemption service (which raises the first reason
as its error), so what members are told and what is enforced cannot drift apart."""

from dataclasses import dataclass
from datetime import datetime

# Reason codes, in the order the service checks them (the first one is the error it raises).
INACTIVE = "inactive"
WINDOW = "window"
TIER = "tier"
BENEFIT = "benefit"
LIMIT = "limit"
STOCK = "stock"
POINTS = "points"


@dataclass(frozen=True, slots=True)
class RewardTerms:
    points_cost: int
    stock: int | None
    min_tier_rank: int | None
    required_benefit: str
    per_member_limit: int | None
    available_from: datetime | None
    available_until: datetime | None
    is_active: bool


@dataclass(frozen=True, slots=True)
class RedeemerState:
    available_points: int
    tier_rank: int
    benefits: frozenset[str]
    # Non-cancelled redemptions of this reward by the member.
    active_redemptions: int


def redeem_blockers(terms: RewardTerms, redeemer: RedeemerState, at: datetime) -> list[str]:
    """Every reason the member cannot redeem the reward at ``at``; empty when they can."""
    reasons = []
    if not terms.is_active:
        reasons.append(INACTIVE)
    if (terms.available_from is not None and at < terms.available_from) or (
        terms.available_until is not None and at >= terms.available_until
    ):
        reasons.append(WINDOW)
    if terms.min_tier_rank is not None and redeemer.tier_rank < terms.min_tier_rank:
        reasons.append(TIER)
    if terms.required_benefit and terms.required_benefit not in redeemer.benefits:
        reasons.append(BENEFIT)
    if terms.per_member_limit is not None and (
        redeemer.active_redemptions >= terms.per_member_limit
    ):
        reasons.append(LIMIT)
    if terms.stock == 0:
        reasons.append(STOCK)
    if redeemer.available_points < terms.points_cost:
        reasons.append(POINTS)
    return reasons
