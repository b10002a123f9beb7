"""10,000 members: each operation runs in a number of queries set by its chunks, not its members."""

from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bulk.models import BulkItem, BulkOperation
from bulk.services import Selection, bulk_operation_request
from core.actors import system_actor
from core.models import Job, JobStatus
from members.models import Member
from rewards.models import CertificationGrant, PointsAccount, PointsEntry

pytestmark = pytest.mark.django_db
MEMBERS = 10_000
CHUNK_SIZE = 1_000
CHUNKS = MEMBERS // CHUNK_SIZE
# Starting (job, items, chunks), planning, and per chunk: the claim, the lock, the items, the
# operation's own set-based queries (a certification grant reassesses its members after commit,
# run inline here), the outcomes and the counters. Measured: about 24 (points), 38
# (certification) and 26 (reassessment) per chunk on PostgreSQL; SQLite splits each multi-row
# INSERT to stay under its 999 parameters, a few more statements per chunk.
START_QUERIES = 15
PER_CHUNK_QUERIES = 45 if settings.IS_POSTGRES else 60


def _run(operation: str, params: dict[str, Any], capture: Any) -> BulkOperation:
    with capture(execute=True):
        started = bulk_operation_request(
            operation=operation,
            params=params,
            selection=Selection(members=Member.objects.filter(tags__key="vip")),
            actor=system_actor("scale-test"),
            at=timezone.now(),
            chunk_size=CHUNK_SIZE,
        )
    return BulkOperation.objects.select_related("job").get(pk=started.pk)


@pytest.mark.parametrize(
    ("operation", "params"),
    [
        ("points_award", {"points": 15, "note": "scale"}),
        ("certification_grant", {"certification": "onboarding"}),
        ("tier_reassessment", {}),
    ],
)
def test_ten_thousand_members_in_bounded_queries(
    operation: str,
    params: dict[str, Any],
    bulk_members: Callable[..., list[Member]],
    django_assert_max_num_queries: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    bulk_members(MEMBERS, tag="shop:vip")
    bulk_members(50, prefix="other")

    with django_assert_max_num_queries(START_QUERIES + CHUNKS * PER_CHUNK_QUERIES):
        done = _run(operation, params, django_capture_on_commit_callbacks)

    assert (done.job.status, done.job.chunks_done, done.job.items_done) == (
        JobStatus.DONE,
        CHUNKS,
        MEMBERS,
    )
    assert done.succeeded_count == MEMBERS
    assert BulkItem.objects.filter(job=done.job, status="succeeded").count() == MEMBERS
    if operation == "points_award":
        assert PointsEntry.objects.count() == MEMBERS
        assert set(PointsAccount.objects.values_list("available", flat=True)) == {15}
    if operation == "certification_grant":
        assert CertificationGrant.objects.filter(certification_id="onboarding").count() == MEMBERS


@pytest.mark.postgres
def test_a_chunk_costs_the_same_queries_for_100_or_1000_members(
    bulk_members: Callable[..., list[Member]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    counts = []
    for size in (100, 1000):
        members = bulk_members(size, prefix=f"c{size}")
        with (
            CaptureQueriesContext(connection) as captured,
            django_capture_on_commit_callbacks(execute=True),
        ):
            bulk_operation_request(
                operation="points_award",
                params={"points": 5},
                selection=Selection(members=Member.objects.filter(pk__in=[m.pk for m in members])),
                actor=system_actor("scale-test"),
                at=timezone.now(),
                chunk_size=size,
            )
        counts.append(len(captured.captured_queries))

    assert counts[0] == counts[1]
    assert Job.objects.filter(status=JobStatus.DONE).count() == 2
