"""Database routing: every write and migration goes to the primary; analytics may read a replica.

Reads stay on the primary by default (read-your-writes for every request and job). Only code
that asks for ``analytics_database()`` with ``.using(...)`` reads the replica, which is
``DATABASES["replica"]`` when ``DATABASE_REPLICA_URL`` is set (settings:
``LOYALTY_ANALYTICS_DATABASE``). A replica lags the primary a little, which aggregate analytics
tolerate and balances or idempotency checks do not.
"""

from typing import Any

from django.conf import settings
from django.db import models

PRIMARY = "default"
REPLICA = "replica"


def analytics_database() -> str:
    """The database alias analytics selectors read from: the replica when one is configured."""
    return str(settings.LOYALTY_ANALYTICS_DATABASE)


class PrimaryReplicaRouter:
    """Listed in ``DATABASE_ROUTERS``. The replica is a physical copy of the primary (streaming
    replication), so it never receives writes or migrations of its own."""

    def db_for_read(self, model: type[models.Model], **hints: Any) -> str | None:
        # None: the primary, or the database of the instance a related read starts from.
        return None

    def db_for_write(self, model: type[models.Model], **hints: Any) -> str:
        # A row read from the replica and saved again is written to the primary.
        return PRIMARY

    def allow_relation(self, obj1: models.Model, obj2: models.Model, **hints: Any) -> bool | None:
        # Both aliases hold the same data: relations between their rows are fine.
        if {obj1._state.db, obj2._state.db} <= {PRIMARY, REPLICA}:
            return True
        return None

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool:
        return db == PRIMARY
