"""The rewards app's tables, one module per part of the domain (re-exported here)."""

from rewards.models.certifications import Certification, CertificationGrant
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
    "Certification",
    "CertificationGrant",
    "CheckIn",
    "DailyEarning",
    "EarningRule",
    "EntryKind",
    "LotConsumption",
    "PointsAccount",
    "PointsEntry",
    "PointsLot",
    "Reason",
    "SystemAccount",
    "SystemAccountBalance",
]
