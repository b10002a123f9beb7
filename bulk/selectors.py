"""Reads of bulk operations: an operator's operations, one operation, its items."""

from uuid import UUID

from django.db.models import QuerySet

from bulk.models import BulkItem, BulkOperation
from core.actors import Actor
from core.exceptions import NotFoundError

BULK_JOB = "bulk_operation"
# Operators holding it see everyone's operations; others see only their own.
VIEW_ALL_PERMISSION = "bulk.view_bulkoperation"


def bulk_operation_list_for_actor(*, actor: Actor, sees_all: bool) -> QuerySet[BulkOperation]:
    """The operations the actor may see (``sees_all``: every operator's), with their jobs."""
    queryset = BulkOperation.objects.select_related("job")
    if sees_all:
        return queryset
    return queryset.filter(requested_by_user_id=actor.user_id)


def bulk_operation_get_for_actor(
    *, actor: Actor, job_id: UUID | str, sees_all: bool
) -> BulkOperation:
    """One operation the actor may see.

    :raises NotFoundError: when it does not exist or the actor may not see it.
    """
    try:
        return bulk_operation_list_for_actor(actor=actor, sees_all=sees_all).get(pk=job_id)
    except (BulkOperation.DoesNotExist, ValueError):
        raise NotFoundError("No bulk operation with this id.") from None


def bulk_item_list(*, bulk_operation: BulkOperation) -> QuerySet[BulkItem]:
    """The operation's items (callers order and filter them)."""
    return BulkItem.objects.filter(job_id=bulk_operation.pk)
