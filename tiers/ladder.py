"""The default ladder (SPEC §2), shared by the seeding data migration and test set-up."""

from decimal import Decimal
from typing import Any

DEFAULT_LADDER = (
    ("basic", "Basic", 0, "Receives content passively.", Decimal("0.45")),
    ("active", "Active", 1, "Takes part in discussion and interaction.", Decimal("0.28")),
    ("koc", "KOC", 2, "Key opinion consumer: creates content.", Decimal("0.12")),
    ("kol", "KOL", 3, "Key opinion leader: represents the brand.", Decimal("0.05")),
)
DEFAULT_MULTIPLIERS = {
    "basic": Decimal("1.00"),
    "active": Decimal("1.10"),
    "koc": Decimal("1.25"),
    "kol": Decimal("1.50"),
}


def ladder_seed(tier_model: Any, *, with_multipliers: bool = True) -> None:
    """Create or refresh the four default tiers with the given Tier model (historical or real).

    The first data migration predates the multiplier column, so it seeds without it.
    """
    for code, name, rank, description, share in DEFAULT_LADDER:
        defaults: dict[str, Any] = {
            "name": name,
            "rank": rank,
            "description": description,
            "expected_share": share,
        }
        if with_multipliers:
            defaults["points_multiplier"] = DEFAULT_MULTIPLIERS[code]
        tier_model.objects.update_or_create(code=code, defaults=defaults)
