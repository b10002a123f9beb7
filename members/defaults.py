"""Built-in activity event types (SPEC §2), shared by the seeding data migration and tests."""

from datetime import datetime
from typing import Any

BUILTIN_EVENT_TYPES = (
    # code, name, counts_as_interaction, members_may_post
    ("login", "Login", False, True),
    ("checkin", "Check-in", True, False),  # members check in through me/check-ins/
    ("post", "Post", True, True),
    ("comment", "Comment", True, True),
    ("like", "Like", True, True),
    ("share", "Share", True, True),
    ("purchase", "Purchase", False, False),  # only the shop (a partner) reports purchases
    ("support_inquiry", "Support inquiry", True, False),
    ("course_completed", "Course completed", True, False),  # the learning platform reports it
)


def event_types_seed(event_type_model: Any, *, at: datetime) -> None:
    """Create the built-in types that are missing; an existing row is left as it is."""
    for code, name, interaction, members_may_post in BUILTIN_EVENT_TYPES:
        event_type_model.objects.get_or_create(
            code=code,
            defaults={
                "name": name,
                "counts_as_interaction": interaction,
                "members_may_post": members_may_post,
                "is_builtin": True,
                "created_at": at,
            },
        )
