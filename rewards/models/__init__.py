"""The rewards app's tables, one module per part of the domain (re-exported here)."""

from rewards.models.catalog import Redemption, RedemptionStatus, Reward
from rewards.models.certifications import Certification, CertificationGrant
from rewards.models.honors import Badge, BadgeKind, Benefit, BenefitKind, MemberBadge
from rewards.models.ledger import (
    COUNTER_ACCOUNT_OF_KIND,
    CheckIn,
    DailyEarning,
    EarningRule,
    EntryKind,
    LotConsumption,
    PointsAccount,
    PointsEntry,
    PointsLot,
    Reason,
    SystemAccount,
    SystemAccountBalance,
)

__all__ = [
    "COUNTER_ACCOUNT_OF_KIND",
    "Badge",
    "BadgeKind",
    "Benefit",
    "BenefitKind",
    "Certification",
    "CertificationGrant",
    "CheckIn",
    "DailyEarning",
    "EarningRule",
    "EntryKind",
    "LotConsumption",
    "MemberBadge",
    "PointsAccount",
    "PointsEntry",
    "PointsLot",
    "Reason",
    "Redemption",
    "RedemptionStatus",
    "Reward",
    "SystemAccount",
    "SystemAccountBalance",
]
