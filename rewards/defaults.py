"""Default earning rules (SPEC §2), shared by the seeding data migration and test set-up."""

from datetime import datetime
from typing import Any

DEFAULT_EARNING_RULES = (
    # event_type, points, per_currency_unit, daily_cap, hourly_limit, pending_days
    ("checkin", 5, False, None, None, 0),
    ("post", 20, False, 100, 10, 0),
    ("comment", 2, False, 20, 30, 0),
    ("like", 1, False, 10, 60, 0),
    ("share", 5, False, 25, 10, 0),
    ("course_completed", 50, False, 100, 5, 0),
    ("purchase", 1, True, None, None, 14),
)


def earning_rules_seed(rule_model: Any, *, at: datetime) -> None:
    """Create the default rules that are missing; never overwrite an operator's edits."""
    for event_type, points, per_unit, cap, hourly, pending in DEFAULT_EARNING_RULES:
        rule_model.objects.get_or_create(
            event_type=event_type,
            defaults={
                "points": points,
                "per_currency_unit": per_unit,
                "daily_cap": cap,
                "hourly_limit": hourly,
                "pending_days": pending,
                "updated_at": at,
            },
        )


# code, name, level, description, validity_days, prerequisites (SPEC §2: the capability rung)
DEFAULT_CERTIFICATIONS = (
    ("onboarding", "Onboarding", 1, "Finished the new-member guide.", None, ()),
    (
        "content-creator",
        "Content creator",
        2,
        "Trained and certified to create content for the community.",
        365,
        ("onboarding",),
    ),
    (
        "brand-ambassador",
        "Brand ambassador",
        3,
        "Certified to represent the brand.",
        365,
        ("content-creator",),
    ),
)


def certifications_seed(certification_model: Any, *, at: datetime) -> None:
    """Create the default certifications that are missing; never overwrite an operator's edits."""
    for code, name, level, description, validity_days, prerequisites in DEFAULT_CERTIFICATIONS:
        certification, created = certification_model.objects.get_or_create(
            code=code,
            defaults={
                "name": name,
                "level": level,
                "description": description,
                "validity_days": validity_days,
                "created_at": at,
            },
        )
        if created and prerequisites:
            certification.prerequisites.set(prerequisites)


# code, tier, kind, value, name, description, exclusive_to_tier (SPEC §2: the benefit rung).
# The multiplier and the coupon allowance are replaced, not added to, by a higher rung's: they
# are exclusive to their tier. The multiplier's value is the tier's own (tiers.ladder).
DEFAULT_BENEFITS = (
    (
        "active-points-multiplier",
        "active",
        "points_multiplier",
        None,
        "Points multiplier",
        "Every earning rule pays more points.",
        True,
    ),
    (
        "active-monthly-coupon",
        "active",
        "monthly_coupon_allowance",
        "1",
        "Monthly coupon",
        "One coupon each month.",
        True,
    ),
    (
        "koc-points-multiplier",
        "koc",
        "points_multiplier",
        None,
        "Points multiplier",
        "Every earning rule pays more points.",
        True,
    ),
    (
        "koc-monthly-coupons",
        "koc",
        "monthly_coupon_allowance",
        "2",
        "Monthly coupons",
        "Two coupons each month.",
        True,
    ),
    (
        "koc-new-product-trials",
        "koc",
        "new_product_trial",
        None,
        "New-product trials",
        "Try new products before they launch.",
        False,
    ),
    (
        "koc-priority-support",
        "koc",
        "priority_support",
        None,
        "Priority support",
        "Questions answered first.",
        False,
    ),
    (
        "kol-points-multiplier",
        "kol",
        "points_multiplier",
        None,
        "Points multiplier",
        "Every earning rule pays more points.",
        True,
    ),
    (
        "kol-monthly-coupons",
        "kol",
        "monthly_coupon_allowance",
        "4",
        "Monthly coupons",
        "Four coupons each month.",
        True,
    ),
    (
        "kol-exclusive-events",
        "kol",
        "exclusive_events",
        None,
        "Exclusive events",
        "Invitations to members-only brand events.",
        False,
    ),
    (
        "kol-dedicated-advisor",
        "kol",
        "dedicated_advisor",
        None,
        "Dedicated advisor",
        "A brand advisor of your own.",
        False,
    ),
    (
        "kol-cocreation-committee",
        "kol",
        "cocreation_committee_seat",
        None,
        "Co-creation committee seat",
        "A seat on the committee that shapes new products.",
        False,
    ),
)


def benefits_seed(benefit_model: Any, *, at: datetime) -> None:
    """Create the default benefits that are missing; never overwrite an operator's edits."""
    for code, tier, kind, value, name, description, exclusive in DEFAULT_BENEFITS:
        benefit_model.objects.get_or_create(
            code=code,
            defaults={
                "tier_id": tier,
                "kind": kind,
                "value": value,
                "name": name,
                "description": description,
                "exclusive_to_tier": exclusive,
                "created_at": at,
                "updated_at": at,
            },
        )


# code, name, description, rule ("" for a manual badge), is_title, level (SPEC §2: the honor rung)
DEFAULT_BADGES = (
    (
        "first-post",
        "First post",
        "Published a first post in the community.",
        "first_post",
        False,
        1,
    ),
    ("streak-7", "7-day streak", "Checked in 7 days in a row.", "checkin_streak_7", False, 1),
    ("streak-30", "30-day streak", "Checked in 30 days in a row.", "checkin_streak_30", False, 2),
    (
        "title-active",
        "Active member",
        "Reached the Active tier.",
        "reached_tier:active",
        True,
        10,
    ),
    ("title-koc", "KOC", "Reached the KOC tier: creates content.", "reached_tier:koc", True, 20),
    (
        "title-kol",
        "KOL",
        "Reached the KOL tier: represents the brand.",
        "reached_tier:kol",
        True,
        30,
    ),
    (
        "onboarded",
        "Onboarded",
        "Finished the new-member guide.",
        "certification:onboarding",
        False,
        1,
    ),
    (
        "certified-content-creator",
        "Certified content creator",
        "Holds the content-creator certification.",
        "certification:content-creator",
        True,
        15,
    ),
    (
        "certified-brand-ambassador",
        "Certified brand ambassador",
        "Holds the brand-ambassador certification.",
        "certification:brand-ambassador",
        True,
        25,
    ),
    (
        "community-hero",
        "Community hero",
        "Recognised by the team for helping others.",
        "",
        False,
        5,
    ),
)


def badges_seed(badge_model: Any, *, at: datetime) -> None:
    """Create the default badges that are missing; never overwrite an operator's edits."""
    for code, name, description, rule, is_title, level in DEFAULT_BADGES:
        badge_model.objects.get_or_create(
            code=code,
            defaults={
                "name": name,
                "description": description,
                "kind": "automatic" if rule else "manual",
                "rule": rule,
                "is_title": is_title,
                "level": level,
                "created_at": at,
            },
        )
