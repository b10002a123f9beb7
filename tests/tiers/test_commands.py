"""The reassess_tiers command: the population job inline, queued, resumed, and one member."""

import io
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from core.actors import system_actor
from core.models import Job, JobChunk, JobStatus
from core.read_cache import TokensReplace
from members.models import Member
from members.services import member_erase
from tiers.models import TierChange
from tiers.services.reassessment import (
    reassessment_chunk_run,
    reassessment_plan,
    reassessment_start,
)

pytestmark = pytest.mark.django_db


def _call(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("reassess_tiers", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def population(make_member: Callable[..., Member], add_activity, certify) -> dict[str, Member]:
    """Two members who meet active's entry rule, one idle member."""
    members = {}
    for name in ("regular-1", "regular-2"):
        member = make_member(name, at=timezone.now() - timedelta(days=60))
        certify(member, "onboarding")
        add_activity(member, days=5, interactions=3)
        members[name] = member
    members["idle"] = make_member("idle")
    return members


def test_inline_run_assesses_everyone_and_prints_the_matrix(population) -> None:
    out, err = _call("--chunk-size", "2")

    job = Job.objects.get()
    assert (job.status, job.chunks_total, job.items_done, job.items_changed) == (
        JobStatus.DONE,
        2,
        3,
        2,
    )
    lines = out.splitlines()
    assert lines[0].startswith(f"Reassessment {job.pk}: done, rules v1, as of ")
    assert lines[1] == (
        "Members assessed: 3, changed tier: 2 (grace started 0, nominations confirmed 0, "
        "rolled back 0, skipped as changed meanwhile 0)."
    )
    assert lines[2:] == [
        "from \\ to  basic  active  koc  kol",
        "basic          1       2    0    0",
        "active         0       0    0    0",
        "koc            0       0    0    0",
        "kol            0       0    0    0",
    ]
    assert "3member" in err.replace(" ", "")  # the progress bar counted every member
    assert set(Member.objects.values_list("external_id", "tier_id")) == {
        ("regular-1", "active"),
        ("regular-2", "active"),
        ("idle", "basic"),
    }
    assert TierChange.objects.filter(job=job).count() == 2


def test_running_again_changes_nothing_more(population) -> None:
    _call()

    out, _ = _call()

    assert Job.objects.count() == 2
    assert "Members assessed: 3, changed tier: 0 " in out
    assert TierChange.objects.count() == 2


def test_resume_runs_only_the_open_chunks_of_an_interrupted_job(population) -> None:
    at = timezone.now()
    job, _ = reassessment_start(actor=system_actor("tests"), at=at, chunk_size=1)
    assert reassessment_plan(job_id=job.pk, at=at) == [0, 1, 2]
    reassessment_chunk_run(job_id=job.pk, index=0, at=at)  # then the worker "died"

    out, err = _call("--resume", str(job.pk))

    job.refresh_from_db()
    assert f"Resuming reassessment {job.pk} (1 of 3 chunks done)." in err
    assert (job.status, job.chunks_done, job.items_done, job.items_changed) == (
        JobStatus.DONE,
        3,
        3,
        2,
    )
    assert list(JobChunk.objects.filter(job=job).values_list("attempts", flat=True)) == [1, 1, 1]
    assert "Members assessed: 3, changed tier: 2 " in out
    assert TierChange.objects.count() == 2


def test_resume_of_a_done_job_runs_nothing_and_prints_its_summary(population) -> None:
    _call()
    job = Job.objects.get()

    out, err = _call("--resume", str(job.pk))

    assert f"Reassessment {job.pk} is done already; nothing to run." in err
    assert "Members assessed: 3, changed tier: 2 " in out
    assert TierChange.objects.count() == 2


def test_member_option_reassesses_one_member(population) -> None:
    out, _ = _call("--member", "regular-1")

    assert out.strip() == "regular-1: basic -> active."
    assert dict(Member.objects.values_list("external_id", "tier_id")) == {
        "regular-1": "active",
        "regular-2": "basic",
        "idle": "basic",
    }
    assert not Job.objects.exists()
    assert _call("--member", "regular-1")[0].strip() == "regular-1: stays active."


def test_async_creates_the_job_and_queues_its_plan(
    population, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        out, err = _call("--async", "--chunk-size", "2")

    job = Job.objects.get()
    assert out.strip() == str(job.pk)
    assert len([c for c in callbacks if not isinstance(c, TokensReplace)]) == 1
    # Tests run tasks eagerly (no broker), so the queued plan ran its chunks here.
    assert "the job ran inline" in err
    assert (job.status, job.chunks_total, job.items_changed) == (JobStatus.DONE, 2, 2)


def test_a_second_run_while_one_is_running_points_at_resume(population) -> None:
    job, _ = reassessment_start(actor=system_actor("tests"), at=timezone.now())

    with pytest.raises(CommandError, match=rf"--resume {job.pk}"):
        _call()

    assert Job.objects.count() == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--chunk-size", "0"), "--chunk-size must be between 1 and 100000"),
        (("--chunk-size", "many"), "invalid int value"),
        (("--member", "regular-1", "--async"), "--member reassesses one member"),
        (("--resume", "x", "--chunk-size", "5"), "--resume runs an existing job"),
        (("--resume", "not-a-uuid"), "'not-a-uuid' is not a job id"),
        (("--resume", str(uuid.UUID(int=1))), "No tier reassessment with this id."),
        (("--member", "nobody"), "No member with external id 'nobody'"),
    ],
)
def test_bad_arguments_are_command_errors(population, args, message) -> None:
    with pytest.raises(CommandError, match=message):
        _call(*args)

    assert not Job.objects.exists()
    assert not TierChange.objects.exists()


def test_an_erased_member_is_not_addressable(population) -> None:
    member_erase(member=population["idle"], actor=system_actor("tests"), at=timezone.now())

    with pytest.raises(CommandError, match="No member with external id 'idle'"):
        _call("--member", "idle")
