"""Population reassessments and simulations over HTTP. Celery runs eagerly in tests: a POST's
job runs when its transaction commits (the captured on-commit callbacks), before the test reads
the job back."""

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.actors import Actor, ActorKind, system_actor
from core.models import Job, JobStatus
from members.models import Member
from rewards.models import Reason
from rewards.services.ledger import points_award
from tests.helpers import assert_problem
from tiers.models import TierChange
from tiers.selectors import REASSESSMENT_JOB
from tiers.services.reassessment import reassessment_start

pytestmark = pytest.mark.django_db

URL = "/api/v1/tier-reassessments/"
SIMULATIONS = "/api/v1/tier-simulations/"
OPERATOR = Actor(kind=ActorKind.OPERATOR, user_id=1)


@pytest.fixture
def population(make_member: Callable[..., Member], add_activity, certify) -> dict[str, Member]:
    """Members the default rules move: two to active, one to koc, two who stay basic, one koc
    promoted by hand who meets nothing (grace starts, no move)."""
    joined = timezone.now() - timedelta(days=60)
    members = {name: make_member(name, at=joined) for name in ("a1", "a2", "k1", "b1", "b2", "p1")}
    for name in ("a1", "a2", "k1"):
        certify(members[name], "onboarding")
        add_activity(members[name], days=5, interactions=3)
    certify(members["k1"], "content-creator")
    add_activity(members["k1"], days=6, ending=timezone.now().date() - timedelta(days=10), posts=1)
    points_award(
        member=members["k1"],
        points=700,
        reason=Reason.MANUAL,
        actor=OPERATOR,
        at=timezone.now() - timedelta(days=2),
    )
    add_activity(members["b1"], days=2, interactions=1)
    from tiers.services.promotions import tier_promote

    tier_promote(member=members["p1"], tier="koc", reason="hand", actor=OPERATOR, at=timezone.now())
    return members


def _start(client, capture, **headers):
    with capture(execute=True):
        return client.post(URL, {}, **headers)


def test_a_reassessment_runs_as_a_job_and_reports_the_matrix(
    make_operator_client, population, django_capture_on_commit_callbacks
) -> None:
    client = make_operator_client("tiers.run_reassessment", "tiers.view_tierchange")

    response = _start(client, django_capture_on_commit_callbacks)

    assert response.status_code == 202
    started = response.json()
    # The 202 describes the job as created; the eager task ran it on commit.
    assert (started["status"], started["progress"], started["report"]) == ("pending", 0.0, None)
    assert started["rule_version"] == 1
    assert started["requested_by"].startswith("operator:")
    assert response["Location"].endswith(f"{URL}{started['id']}/")
    detail = client.get(response["Location"])
    assert detail.status_code == 200
    body = detail.json()
    assert (body["status"], body["progress"], body["error"]) == ("done", 1.0, "")
    assert (body["chunks_total"], body["chunks_done"]) == (1, 1)
    assert (body["items_total"], body["items_done"], body["items_changed"]) == (6, 6, 3)
    assert body["report"]["matrix"] == {
        "basic": {"active": 2, "koc": 1, "basic": 2},
        "koc": {"koc": 1},
    }
    assert body["report"]["counts"] == {
        "assessed": 6,
        "changed": 3,
        "grace_started": 1,
        "confirmed": 0,
        "rolled_back": 0,
        "skipped_concurrent": 0,
    }
    assert body["as_of"] == started["as_of"]
    assert body["finished_at"] is not None
    tiers = dict(Member.objects.values_list("external_id", "tier_id"))
    assert tiers == {
        "a1": "active",
        "a2": "active",
        "k1": "koc",
        "b1": "basic",
        "b2": "basic",
        "p1": "koc",
    }


def test_the_job_is_split_into_chunks(
    operator_client, population, django_capture_on_commit_callbacks, settings
) -> None:
    settings.LOYALTY_TIER_CHUNK_SIZE = 2

    job_id = _start(operator_client, django_capture_on_commit_callbacks).json()["id"]

    body = operator_client.get(f"{URL}{job_id}/").json()
    assert (body["chunks_total"], body["chunks_done"], body["items_done"]) == (3, 3, 6)
    assert sum(sum(row.values()) for row in body["report"]["matrix"].values()) == 6


def test_a_second_start_while_one_runs_is_409(
    operator_client, member, django_capture_on_commit_callbacks
) -> None:
    running, _ = reassessment_start(actor=system_actor("tests"), at=timezone.now())

    response = _start(operator_client, django_capture_on_commit_callbacks)

    problem = assert_problem(response, 409, "reassessment_running")
    assert str(running.pk) in problem["detail"]
    assert Job.objects.filter(kind=REASSESSMENT_JOB).count() == 1


def test_a_replayed_start_starts_one_job(
    operator_client, member, django_capture_on_commit_callbacks
) -> None:
    first = _start(operator_client, django_capture_on_commit_callbacks, HTTP_IDEMPOTENCY_KEY="r-1")

    replay = _start(operator_client, django_capture_on_commit_callbacks, HTTP_IDEMPOTENCY_KEY="r-1")

    assert (first.status_code, replay.status_code) == (202, 202)
    assert replay.json() == first.json()
    assert replay["Location"] == first["Location"]
    assert Job.objects.filter(kind=REASSESSMENT_JOB).count() == 1


def test_a_start_takes_no_options(operator_client, member) -> None:
    response = operator_client.post(URL, {"chunk_size": 5})

    assert_problem(response, 400)
    assert not Job.objects.exists()


def test_reassessments_are_listed_newest_first_in_constant_queries(operator_client, member) -> None:
    def listed() -> tuple[list[str], int]:
        with CaptureQueriesContext(connection) as queries:
            response = operator_client.get(URL)
        assert response.status_code == 200
        return [item["id"] for item in response.json()["results"]], len(queries)

    first = Job.objects.create(
        kind=REASSESSMENT_JOB, requested_by="t", status=JobStatus.DONE, created_at=timezone.now()
    )
    listed()  # warm-up: the operator's lookup gets cached
    ids_one, one = listed()
    for day in range(1, 20):
        Job.objects.create(
            kind=REASSESSMENT_JOB,
            requested_by="t",
            status=JobStatus.DONE,
            created_at=timezone.now() + timedelta(seconds=day),
        )
    Job.objects.create(kind="other", requested_by="t", created_at=timezone.now())
    ids_many, many = listed()

    assert ids_one == [str(first.pk)]
    assert len(ids_many) == 20
    assert ids_many[-1] == str(first.pk)
    assert all(item["report"] is None for item in operator_client.get(URL).json()["results"])
    assert many == one


def test_an_unknown_reassessment_is_404(operator_client) -> None:
    assert_problem(operator_client.get(f"{URL}01900000-0000-7000-8000-000000000000/"), 404)


@pytest.mark.parametrize(
    ("role", "method"),
    [
        ("member", "post"),
        ("member", "get"),
        ("partner", "post"),
        ("operator who may view rules", "post"),
        ("operator who may read reports", "post"),
        ("operator who may run", "get"),
    ],
)
def test_function_level_access_to_reassessments(
    role, method, member_client, make_partner, make_operator_client
) -> None:
    client = {
        "member": lambda: member_client,
        "partner": lambda: make_partner("Shop")[1],
        "operator who may view rules": lambda: make_operator_client("tiers.view_ruleset"),
        "operator who may read reports": lambda: make_operator_client("tiers.view_tierchange"),
        "operator who may run": lambda: make_operator_client("tiers.run_reassessment"),
    }[role]()

    response = client.post(URL, {}) if method == "post" else client.get(URL)

    assert_problem(response, 403)
    assert not Job.objects.exists()


# --- Simulation -------------------------------------------------------------------------------

LOOSER_TIERS = [
    {
        "tier": "active",
        "entry": [{"metric": "interactions", "window_days": 30, "minimum": 2}],
        "maintenance": [{"metric": "interactions", "window_days": 30, "minimum": 1}],
    },
    {
        "tier": "koc",
        "entry": [
            {"metric": "certification", "certification": "content-creator"},
            {"metric": "posts", "window_days": 90, "minimum": 6},
        ],
        "maintenance": [{"metric": "posts", "window_days": 90, "minimum": 1}],
    },
    {"tier": "kol", "nomination_only": True},
]


def _tier_state() -> list[tuple]:
    return list(
        Member.objects.order_by("pk").values_list(
            "pk", "tier_id", "tier_since", "tier_grace_until", "tier_version"
        )
    )


def test_a_simulation_changes_nothing_and_matches_the_real_run_after_publishing(
    operator_client, population, django_capture_on_commit_callbacks
) -> None:
    draft = operator_client.post("/api/v1/tier-rule-sets/", {"tiers": LOOSER_TIERS}).json()
    before = _tier_state()

    response = operator_client.post(SIMULATIONS, {"rule_set": draft["id"], "sample_size": 1})

    assert response.status_code == 200
    simulated = response.json()
    assert (simulated["rule_set"], simulated["rule_version"]) == (draft["id"], 2)
    # a1, a2 and b1 (2 interactions) reach active, k1 (6 posts, no points needed now) koc; p1
    # (koc by hand) keeps koc in grace.
    assert simulated["matrix"] == {
        "basic": {"active": 3, "koc": 1, "basic": 1},
        "koc": {"koc": 1},
    }
    assert (simulated["members"], simulated["changed"]) == (6, 4)
    assert [len(cell) for cell in simulated["samples"]["basic"].values()] == [1, 1, 1]
    assert simulated["samples"]["basic"]["basic"] == [
        {"id": str(population["b2"].pk), "external_id": "b2"}
    ]
    assert _tier_state() == before
    assert not TierChange.objects.exclude(reason="promotion").exists()
    assert not Job.objects.exists()

    publication = operator_client.post(f"/api/v1/tier-rule-sets/{draft['id']}/publication/", {})
    assert publication.status_code == 200
    job_id = _start(operator_client, django_capture_on_commit_callbacks).json()["id"]

    report = operator_client.get(f"{URL}{job_id}/").json()
    assert report["rule_version"] == 2
    assert report["report"]["matrix"] == simulated["matrix"]
    assert report["items_changed"] == simulated["changed"]


def test_a_simulation_of_the_rules_in_force_matches_a_run(
    operator_client, population, django_capture_on_commit_callbacks
) -> None:
    simulated = operator_client.post(SIMULATIONS, {"rule_set": 1}).json()

    job_id = _start(operator_client, django_capture_on_commit_callbacks).json()["id"]

    assert operator_client.get(f"{URL}{job_id}/").json()["report"]["matrix"] == simulated["matrix"]


@pytest.mark.parametrize(
    ("body", "attr"),
    [
        ({"rule_set": 999}, "rule_set"),
        ({"rule_set": "v1"}, "rule_set"),
        ({}, "rule_set"),
        ({"rule_set": 1, "sample_size": 0}, "sample_size"),
        ({"rule_set": 1, "sample_size": 51}, "sample_size"),
        ({"rule_set": 1, "apply": True}, "apply"),
    ],
)
def test_bad_simulations_are_400(operator_client, member, body, attr) -> None:
    response = operator_client.post(SIMULATIONS, body)

    problem = assert_problem(response, 400)
    assert [error["attr"] for error in problem["errors"]] == [attr]


@pytest.mark.parametrize("role", ["member", "partner", "operator who may run reassessments"])
def test_simulations_need_the_rule_view_permission(
    role, member_client, make_partner, make_operator_client
) -> None:
    client = {
        "member": lambda: member_client,
        "partner": lambda: make_partner("Shop")[1],
        "operator who may run reassessments": lambda: make_operator_client(
            "tiers.run_reassessment"
        ),
    }[role]()

    assert_problem(client.post(SIMULATIONS, {"rule_set": 1}), 403)


def test_an_operator_who_may_view_rules_simulates(make_operator_client, member) -> None:
    client = make_operator_client("tiers.view_ruleset")

    response = client.post(SIMULATIONS, {"rule_set": 1})

    assert response.status_code == 200
    assert response.json()["matrix"] == {"basic": {"basic": 1}}
