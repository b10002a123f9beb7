"""The default ladder (SPEC §2), shared by the seeding data migration and test set-up."""

from datetime import UTC, datetime
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


# The default rules (SPEC §2): tier -> (nomination_only, grace_days, entry, maintenance), each
# requirement (metric, window_days, minimum, certification). Maintenance is the entry rule
# loosened to half the activity, so a member is not demoted for one quiet month.
_KOC_ENTRY = (
    ("certification", None, 0, "content-creator"),
    ("posts", 90, 6, ""),
    ("qualifying_points", 90, 600, ""),
)
_KOC_MAINTENANCE = (
    ("certification", None, 0, "content-creator"),
    ("posts", 90, 3, ""),
    ("qualifying_points", 90, 300, ""),
)
DEFAULT_RULES: dict[str, tuple[bool, int, tuple[Any, ...], tuple[Any, ...]]] = {
    "active": (
        False,
        30,
        (
            ("certification", None, 0, "onboarding"),
            ("interactions", 30, 12, ""),
            ("active_days", 30, 4, ""),
        ),
        (
            ("certification", None, 0, "onboarding"),
            ("interactions", 30, 6, ""),
            ("active_days", 30, 2, ""),
        ),
    ),
    "koc": (False, 30, _KOC_ENTRY, _KOC_MAINTENANCE),
    "kol": (
        True,
        30,
        (("certification", None, 0, "brand-ambassador"), *_KOC_ENTRY),
        (("certification", None, 0, "brand-ambassador"), *_KOC_MAINTENANCE),
    ),
}


def rules_seed(
    rule_set_model: Any, tier_rule_model: Any, requirement_model: Any, *, at: Any
) -> None:
    """Publish the default rules as version 1, effective from the start of time, unless a rule
    set exists already (operators' versions are never touched)."""
    if rule_set_model.objects.exists():
        return
    rule_set = rule_set_model.objects.create(
        version=1,
        name="Default ladder",
        note="Seeded with the default ladder of the product specification.",
        status="published",
        effective_at=datetime(2000, 1, 1, tzinfo=UTC),
        published_at=at,
        published_by="system:seed",
        created_by="system:seed",
        created_at=at,
    )
    for code, (nomination_only, grace_days, entry, maintenance) in DEFAULT_RULES.items():
        tier_rule_model.objects.create(
            rule_set=rule_set, tier_id=code, nomination_only=nomination_only, grace_days=grace_days
        )
        requirement_model.objects.bulk_create(
            requirement_model(
                rule_set=rule_set,
                tier_id=code,
                purpose=purpose,
                metric=metric,
                window_days=window,
                minimum=minimum,
                certification=certification,
            )
            for purpose, requirements in (("entry", entry), ("maintenance", maintenance))
            for metric, window, minimum, certification in requirements
        )
