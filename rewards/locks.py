"""Named row locks of the rewards app. Global order: idempotency record -> member tier state ->
points account -> system account shard -> reward stock; accounts among themselves by primary key.

The system accounts' shard rows are not locked here: a posting's last write (``rewards.services
.ledger``) takes them, after all its member accounts, in (account, shard) order. So a transaction
that posts more than once locks all its members' accounts before its first posting."""

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from django.db import connection

from core.db import is_postgres, require_transaction
from rewards.models import PointsAccount


def points_accounts_lock(*, member_ids: Sequence[UUID], at: datetime) -> dict[UUID, PointsAccount]:
    """Lock the members' points accounts (creating missing ones), in primary-key order.

    Locks are taken at once (the queryset is evaluated here), ordered by member id so that two
    batches over the same members can never deadlock.
    """
    require_transaction()
    wanted = sorted(set(member_ids))
    if is_postgres():
        return _locked_postgres(wanted, at)
    accounts = _locked(wanted)
    missing = [member_id for member_id in wanted if member_id not in accounts]
    if missing:
        PointsAccount.objects.bulk_create(
            [PointsAccount(member_id=member_id, updated_at=at) for member_id in missing],
            ignore_conflicts=True,
        )
        accounts = _locked(wanted)
    return accounts


def _locked(member_ids: list[UUID]) -> dict[UUID, PointsAccount]:
    # Row locks on the accounts: every read-modify-write of a balance or its lots holds them.
    rows = PointsAccount.objects.select_for_update().filter(pk__in=member_ids).order_by("pk")
    return {account.pk: account for account in rows}


_FIELDS = [field.attname for field in PointsAccount._meta.concrete_fields]
_TABLE = PointsAccount._meta.db_table
_LOCK_SQL = (
    f"SELECT {', '.join(_FIELDS)} FROM {_TABLE} WHERE member_id = ANY(%b::uuid[]) "  # noqa: S608 - names from the model
    "ORDER BY member_id FOR UPDATE"
)


def _locked_postgres(wanted: list[UUID], at: datetime) -> dict[UUID, PointsAccount]:
    """``points_accounts_lock`` on PostgreSQL: the ids go as one array, not one parameter each,
    and missing accounts are created by one ``INSERT ... SELECT FROM unnest``. The same locks,
    in the same order."""
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_SQL, [wanted])
        rows = cursor.fetchall()
        if len(rows) < len(wanted):
            found = {row[0] for row in rows}
            cursor.execute(
                f"INSERT INTO {_TABLE} (member_id, available, pending, lifetime_earned, version, "  # noqa: S608 - names from the model
                "updated_at) SELECT member_id, 0, 0, 0, 0, %s FROM unnest(%b::uuid[]) AS member_id "
                "ORDER BY member_id ON CONFLICT DO NOTHING",
                [at, [member_id for member_id in wanted if member_id not in found]],
            )
            cursor.execute(_LOCK_SQL, [wanted])
            rows = cursor.fetchall()
    return {row[0]: PointsAccount.from_db(connection.alias, _FIELDS, row) for row in rows}
