"""The population reassessment on RabbitMQ: two worker processes against one (issue 9, the
multi-worker deployment).

Workers are real ``celery worker`` processes sharing the machine's RabbitMQ (guest/guest on
127.0.0.1:5672). This run's queues live in a virtual host of their own, created for the test and
deleted after it, so no other run's messages mix in. The same deterministic population is
reassessed by one worker, then (built afresh) by two: both end states must be equal table by
table (member tier state, tier history, outbox events), with no history row or event twice and
every chunk run exactly once.
"""

import ast
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from celery import Celery

from core.actors import system_actor
from core.models import Job, JobChunk, JobStatus
from tests.tiers.population import (
    AT,
    PopulationState,
    history_duplicates,
    members_disagreeing_with_history,
    population_build,
    population_state,
    population_wipe,
)
from tests.workers import Worker, wait_until, worker_environment, workers_killed_after
from tiers.services.reassessment import reassessment_start
from tiers.tasks import reassessment_plan_task

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.faults,
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True),
]

RABBITMQ = ("127.0.0.1", 5672)
SIZE = 2000
CHUNK_SIZE = 50
CHUNKS = 40
JOB_SECONDS = 60
CHUNK_DONE_LINE = re.compile(
    r"Task tiers\.reassessment_chunk\[[^\]]+\] succeeded in [^:]+: (\{.*\})"
)


def _rabbitmqctl(*args: str) -> None:
    executable = shutil.which("rabbitmqctl")
    if executable is None:
        pytest.fail("rabbitmqctl is not installed (RabbitMQ is part of CI: see .ci/run)")
    result = subprocess.run(  # noqa: S603 - a fixed command line
        [executable, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"rabbitmqctl {' '.join(args)}:\n{result.stdout}{result.stderr}"


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """A fresh virtual host on the shared RabbitMQ for this run only; deleted afterwards."""
    try:
        socket.create_connection(RABBITMQ, timeout=2).close()
    except OSError:
        pytest.fail("RabbitMQ at 127.0.0.1:5672 is not reachable; start it (see .ci/run)")
    vhost = f"loyalty-test-{uuid.uuid4().hex}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/{quote(vhost, safe='')}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@dataclass(frozen=True, slots=True)
class Run:
    state: PopulationState
    job: Job
    chunks_ran: dict[str, list[int]]  # worker name -> chunk indexes it ran (not no-op repeats)


def _chunks_ran(worker: Worker) -> list[int]:
    ran = []
    for line in worker.lines:
        match = CHUNK_DONE_LINE.search(line)
        if match:
            outcome = ast.literal_eval(match.group(1))
            if outcome["ran"]:
                ran.append(outcome["index"])
    return ran


def _reassess_on_rabbitmq(amqp_url: str, names: Sequence[str]) -> Run:
    """Build the population, reassess it with ``names`` workers over RabbitMQ, read the end
    state and wipe it."""
    population_build(size=SIZE)
    job, created = reassessment_start(actor=system_actor("tests"), at=AT, chunk_size=CHUNK_SIZE)
    assert created
    # No key prefix: that is Redis's isolation; here the virtual host isolates.
    env = worker_environment("", CELERY_BROKER_URL=amqp_url)
    with workers_killed_after() as workers:
        workers += [Worker(name, env, queues=("bulk",)) for name in names]
        for worker in workers:
            worker.wait_ready()
        producer = Celery("faults-producer", broker=amqp_url, set_as_current=False)
        try:
            producer.send_task(
                reassessment_plan_task.name, kwargs={"job_id": str(job.pk)}, queue="bulk"
            )
        finally:
            producer.close()
        try:
            wait_until(
                lambda: Job.objects.filter(pk=job.pk, status=JobStatus.DONE).exists(),
                JOB_SECONDS,
                f"reassessment {job.pk} on RabbitMQ",
            )
        except AssertionError as error:
            logs = "\n".join(f"--- {worker.name}\n{worker.log()}" for worker in workers)
            raise AssertionError(f"{error}\n{logs}") from None
    job.refresh_from_db()
    assert history_duplicates() == []
    assert members_disagreeing_with_history(job) == []
    assert not JobChunk.objects.filter(job=job).exclude(status=JobStatus.DONE).exists()
    assert set(JobChunk.objects.filter(job=job).values_list("attempts", flat=True)) == {1}
    run = Run(population_state(), job, {worker.name: _chunks_ran(worker) for worker in workers})
    population_wipe()
    return run


def test_two_workers_on_rabbitmq_reach_the_same_state_as_one(amqp_url: str) -> None:
    tag = uuid.uuid4().hex[:8]

    single = _reassess_on_rabbitmq(amqp_url, [f"single-{tag}"])
    double = _reassess_on_rabbitmq(amqp_url, [f"left-{tag}", f"right-{tag}"])

    assert double.state.digests() == single.state.digests()
    assert double.state.tier_counts() == single.state.tier_counts()
    assert len(double.state.history) == len(single.state.history) > 0
    assert len(double.state.outbox) == len(single.state.outbox) > 0
    for run in (single, double):
        assert (run.job.status, run.job.progress) == (JobStatus.DONE, 1.0)
        assert (run.job.chunks_done, run.job.chunks_total) == (CHUNKS, CHUNKS)
    assert (double.job.items_done, double.job.items_changed) == (
        single.job.items_done,
        single.job.items_changed,
    )
    # The single worker ran every chunk; the two shared them, each chunk on exactly one.
    [alone] = single.chunks_ran.values()
    assert sorted(alone) == list(range(CHUNKS))
    left, right = double.chunks_ran.values()
    assert left, "the left worker ran no chunk"
    assert right, "the right worker ran no chunk"
    assert sorted(left + right) == list(range(CHUNKS))
