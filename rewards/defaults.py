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
