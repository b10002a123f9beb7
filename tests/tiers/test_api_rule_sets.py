"""Tier rule versions over HTTP: draft (a copy or given rules), edit a draft, publish, delete;
invalid rules are a 400 listing every problem; published versions never change."""

from copy import deepcopy
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.helpers import assert_problem
from tiers.models import RuleSet, TierRequirement

pytestmark = pytest.mark.django_db

URL = "/api/v1/tier-rule-sets/"

VALID_TIERS = [
    {
        "tier": "active",
        "grace_days": 14,
        "entry": [
            {"metric": "certification", "certification": "onboarding"},
            {"metric": "interactions", "window_days": 30, "minimum": 6},
        ],
        "maintenance": [{"metric": "interactions", "window_days": 30, "minimum": 3}],
    },
    {
        "tier": "koc",
        "entry": [{"metric": "posts", "window_days": 90, "minimum": "2.5"}],
        "maintenance": [{"metric": "posts", "window_days": 90, "minimum": 1}],
    },
    {"tier": "kol", "nomination_only": True},
]


def _draft(client, **body):
    response = client.post(URL, body)
    assert response.status_code == 201, response.content[:500]
    return response.json()


def test_a_new_draft_copies_the_version_in_force(operator_client) -> None:
    v1 = operator_client.get(f"{URL}1/").json()

    response = operator_client.post(URL, {"name": "Spring", "note": "Try looser rules"})

    assert response.status_code == 201
    draft = response.json()
    assert response["Location"].endswith(f"{URL}{draft['id']}/")
    assert (draft["version"], draft["status"], draft["name"], draft["effective_at"]) == (
        2,
        "draft",
        "Spring",
        None,
    )
    assert draft["created_by"].startswith("operator:")
    assert draft["tiers"] == v1["tiers"]
    assert [tier["tier"] for tier in v1["tiers"]] == ["active", "koc", "kol"]


def test_a_draft_with_given_rules(operator_client) -> None:
    draft = _draft(operator_client, tiers=VALID_TIERS)

    active, koc, kol = draft["tiers"]
    assert active == {
        "tier": "active",
        "nomination_only": False,
        "grace_days": 14,
        "entry": [
            {
                "metric": "certification",
                "window_days": None,
                "minimum": 0,
                "certification": "onboarding",
            },
            {"metric": "interactions", "window_days": 30, "minimum": 6, "certification": None},
        ],
        "maintenance": [
            {"metric": "interactions", "window_days": 30, "minimum": 3, "certification": None}
        ],
    }
    assert koc["entry"][0]["minimum"] == 2.5
    assert (kol["nomination_only"], kol["grace_days"], kol["entry"]) == (True, 30, [])


def test_a_draft_based_on_another_version(operator_client) -> None:
    given = _draft(operator_client, tiers=VALID_TIERS)

    copy = _draft(operator_client, based_on=given["id"])

    assert copy["version"] == 3
    assert copy["tiers"] == given["tiers"]


@pytest.mark.parametrize(
    ("body", "attr"),
    [
        ({"based_on": 1, "tiers": VALID_TIERS}, "based_on"),
        ({"based_on": 999}, "based_on"),
        ({"version": 7}, "version"),
        ({"tiers": [{"tier": "active", "entry": [{"metric": "posts", "limit": 3}]}]}, None),
    ],
)
def test_bad_draft_bodies_are_400(operator_client, body, attr) -> None:
    response = operator_client.post(URL, body)

    problem = assert_problem(response, 400, "validation_error")
    if attr is not None:
        assert [error["attr"] for error in problem["errors"]] == [attr]
    assert RuleSet.objects.count() == 1


def test_invalid_rules_are_400_listing_every_problem(operator_client) -> None:
    tiers = deepcopy(VALID_TIERS)
    tiers[0]["entry"].append({"metric": "likes", "window_days": 30, "minimum": 5})
    tiers[1]["entry"] = [{"metric": "posts", "window_days": 90, "minimum": -2}]
    tiers[1]["maintenance"] = [{"metric": "posts", "window_days": 90, "minimum": 4}]
    tiers[2]["maintenance"] = [{"metric": "shares", "window_days": 30, "minimum": 1}]
    tiers.append({"tier": "legend"})

    response = operator_client.post(URL, {"tiers": tiers})

    problem = assert_problem(response, 400, "validation_error")
    # An unknown tier stops the check before the rules themselves are read.
    assert [(e["attr"], e["code"], e["detail"]) for e in problem["errors"]] == [
        ("tiers", "invalid_rules", "legend: unknown tier.")
    ]
    tiers.pop()

    response = operator_client.post(URL, {"tiers": tiers})

    problem = assert_problem(response, 400, "validation_error")
    details = [error["detail"] for error in problem["errors"]]
    assert {(e["attr"], e["code"]) for e in problem["errors"]} == {("tiers", "invalid_rules")}
    assert len(details) == 4, details
    assert any("unknown metric 'likes'" in detail for detail in details)
    assert any("koc entry" in d and "minimum cannot be negative" in d for d in details)
    assert "koc maintenance: posts >= 4 in 90 days is stricter than entry" in " ".join(details)
    assert any(d.startswith("kol maintenance: shares >= 1 in 30 days is stricter") for d in details)
    assert RuleSet.objects.count() == 1
    assert not TierRequirement.objects.filter(rule_set__version__gt=1).exists()


def test_maintenance_stricter_than_entry_is_400(operator_client) -> None:
    tiers = deepcopy(VALID_TIERS)
    tiers[1]["maintenance"] = [{"metric": "posts", "window_days": 90, "minimum": 4}]

    response = operator_client.post(URL, {"tiers": tiers})

    problem = assert_problem(response, 400)
    assert [error["detail"] for error in problem["errors"]] == [
        "koc maintenance: posts >= 4 in 90 days is stricter than entry (entry requires 2.50)."
    ]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"window_days": 0}, "window must be between 1 and 366"),
        ({"window_days": None}, "window must be between 1 and 366"),
        ({"metric": "certification", "certification": ""}, "names no certification"),
    ],
)
def test_each_bad_requirement_is_named(operator_client, change, fragment) -> None:
    tiers = deepcopy(VALID_TIERS)
    tiers[0]["maintenance"] = []
    tiers[0]["entry"][1].update(change)

    response = operator_client.post(URL, {"tiers": tiers})

    problem = assert_problem(response, 400)
    assert any(fragment in error["detail"] for error in problem["errors"]), problem["errors"]


def test_a_draft_is_edited_whole_and_a_published_version_never(operator_client) -> None:
    draft = _draft(operator_client)
    tiers = deepcopy(VALID_TIERS)

    edited = operator_client.patch(
        f"{URL}{draft['id']}/", {"name": "Looser", "note": "n", "tiers": tiers}
    )
    renamed = operator_client.patch(f"{URL}{draft['id']}/", {"name": "Looser still"})
    published = operator_client.patch(f"{URL}1/", {"name": "Hacked"})
    bad = operator_client.patch(f"{URL}{draft['id']}/", {"status": "published"})

    assert edited.status_code == 200
    assert (edited.json()["name"], edited.json()["tiers"][0]["grace_days"]) == ("Looser", 14)
    assert renamed.json()["name"] == "Looser still"
    assert renamed.json()["tiers"] == edited.json()["tiers"]
    assert_problem(published, 409, "rule_set_published")
    assert_problem(bad, 400)
    assert RuleSet.objects.get(version=1).name == "Default ladder"
    assert RuleSet.objects.get(pk=draft["id"]).status == "draft"


def test_publishing_puts_a_draft_in_force(operator_client) -> None:
    draft = _draft(operator_client, tiers=VALID_TIERS)

    response = operator_client.post(f"{URL}{draft['id']}/publication/", {})

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "published"
    assert body["effective_at"] == body["published_at"]
    assert body["published_by"].startswith("operator:")
    ladder = operator_client.get("/api/v1/tiers/").json()
    assert ladder["rule_version"] == 2
    assert ladder["tiers"][1]["grace_days"] == 14
    assert_problem(operator_client.post(f"{URL}{draft['id']}/publication/", {}), 409)
    assert_problem(operator_client.delete(f"{URL}{draft['id']}/"), 409, "rule_set_published")


def test_publishing_later_keeps_the_version_in_force_until_then(operator_client) -> None:
    draft = _draft(operator_client, tiers=VALID_TIERS)
    effective_at = (timezone.now() + timedelta(days=7)).replace(microsecond=0)

    response = operator_client.post(
        f"{URL}{draft['id']}/publication/", {"effective_at": effective_at.isoformat()}
    )

    assert response.status_code == 200
    assert response.json()["effective_at"] == effective_at.isoformat().replace("+00:00", "Z")
    assert operator_client.get("/api/v1/tiers/").json()["rule_version"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {"effective_at": "2001-01-01T00:00:00Z"},
        {"effective_at": "soon"},
        {"effective_at": None, "force": True},
    ],
)
def test_bad_publications_are_400(operator_client, body) -> None:
    draft = _draft(operator_client)

    response = operator_client.post(f"{URL}{draft['id']}/publication/", body)

    assert_problem(response, 400)
    assert RuleSet.objects.get(pk=draft["id"]).status == "draft"


def test_a_draft_is_deleted(operator_client) -> None:
    draft = _draft(operator_client)

    response = operator_client.delete(f"{URL}{draft['id']}/")

    assert response.status_code == 204
    assert list(RuleSet.objects.values_list("version", flat=True)) == [1]
    assert_problem(operator_client.get(f"{URL}{draft['id']}/"), 404)


def test_versions_are_listed_newest_first_in_constant_queries(operator_client) -> None:
    def listed() -> tuple[list[int], int]:
        with CaptureQueriesContext(connection) as queries:
            response = operator_client.get(URL)
        return [item["version"] for item in response.json()["results"]], len(queries)

    listed()  # warm-up: the operator's lookup gets cached
    versions_one, one = listed()
    for _ in range(5):
        _draft(operator_client, tiers=VALID_TIERS)
    versions_many, many = listed()

    assert versions_one == [1]
    assert versions_many == [6, 5, 4, 3, 2, 1]
    assert many == one


@pytest.mark.parametrize(
    ("perms", "method", "tail", "body"),
    [
        (["tiers.view_ruleset"], "post", "", {}),
        (["tiers.view_ruleset"], "patch", "2/", {"name": "x"}),
        (["tiers.view_ruleset"], "delete", "2/", None),
        (["tiers.change_ruleset", "tiers.view_ruleset"], "post", "2/publication/", {}),
        (["tiers.add_ruleset"], "get", "", None),
    ],
)
def test_rule_set_writes_need_their_permission(
    make_operator_client, operator_client, perms, method, tail, body
) -> None:
    _draft(operator_client)
    client = make_operator_client(*perms)

    response = (
        getattr(client, method)(f"{URL}{tail}", body)
        if body is not None
        else (getattr(client, method)(f"{URL}{tail}"))
    )

    assert_problem(response, 403)
    assert list(RuleSet.objects.order_by("version").values_list("version", "status", "name")) == [
        (1, "published", "Default ladder"),
        (2, "draft", ""),
    ]


def test_members_and_partners_cannot_touch_rule_sets(member_client, partner_client) -> None:
    for client in (member_client, partner_client):
        assert_problem(client.get(URL), 403)
        assert_problem(client.post(URL, {}), 403)
        assert_problem(client.post(f"{URL}1/publication/", {}), 403)
    assert RuleSet.objects.count() == 1
