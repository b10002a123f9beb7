"""GET tiers/: the whole ladder with the rules of the version in force, in constant queries."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.actors import Actor, ActorKind
from tiers.evaluation import Requirement
from tiers.models import Tier
from tiers.services.rules import TierRuleInput, rule_set_draft_create, rule_set_publish

pytestmark = pytest.mark.django_db

OPERATOR = Actor(kind=ActorKind.OPERATOR, user_id=1)
URL = "/api/v1/tiers/"


def test_the_ladder_lists_every_tier_with_the_rules_in_force(member_client) -> None:
    response = member_client.get(URL)

    assert response.status_code == 200
    body = response.json()
    assert (body["rule_version"], body["rule_set"]) == (1, 1)
    assert body["effective_at"] == "2000-01-01T00:00:00Z"
    assert [tier["code"] for tier in body["tiers"]] == ["basic", "active", "koc", "kol"]
    basic, active, koc, kol = body["tiers"]
    assert basic == {
        "code": "basic",
        "name": "Basic",
        "rank": 0,
        "description": "Receives content passively.",
        "expected_share": "0.4500",
        "points_multiplier": "1.00",
        # The lowest tier: no rule in the version, every member's floor.
        "nomination_only": False,
        "grace_days": 0,
        "required_certifications": [],
        "entry": [],
        "maintenance": [],
        "benefits": [],
        "honors": [],
    }
    assert (active["nomination_only"], active["grace_days"]) == (False, 30)
    assert active["required_certifications"] == ["onboarding"]
    # Requirements in a stable order: by metric, then window.
    assert active["entry"] == [
        {"metric": "active_days", "window_days": 30, "minimum": 4, "certification": None},
        {
            "metric": "certification",
            "window_days": None,
            "minimum": 0,
            "certification": "onboarding",
        },
        {"metric": "interactions", "window_days": 30, "minimum": 12, "certification": None},
    ]
    assert {(r["metric"], r["minimum"]) for r in active["maintenance"]} == {
        ("certification", 0),
        ("interactions", 6),
        ("active_days", 2),
    }
    assert koc["points_multiplier"] == "1.25"
    assert kol["nomination_only"] is True
    assert kol["required_certifications"] == ["brand-ambassador", "content-creator"]
    # Each rung with its benefits and the honors reaching it awards.
    assert {b["kind"]: b["value"] for b in koc["benefits"]}["points_multiplier"] == "1.25"
    assert "new_product_trial" in {b["kind"] for b in koc["benefits"]}
    assert {(h["code"], h["is_title"]) for h in kol["honors"]} >= {("title-kol", True)}


def test_the_ladder_follows_a_newly_published_version(operator_client) -> None:
    tier_rules = [
        TierRuleInput("active", False, 14, (Requirement("posts", 30, Decimal("1.5")),), ()),
        TierRuleInput("koc", True, 30, (), ()),
        TierRuleInput("kol", True, 30, (), ()),
    ]
    draft = rule_set_draft_create(actor=OPERATOR, at=timezone.now(), tier_rules=tier_rules)
    rule_set_publish(rule_set=draft, effective_at=None, actor=OPERATOR, at=timezone.now())

    body = operator_client.get(URL).json()

    assert body["rule_version"] == 2
    active = body["tiers"][1]
    assert (active["grace_days"], active["nomination_only"]) == (14, False)
    assert active["entry"] == [
        {"metric": "posts", "window_days": 30, "minimum": 1.5, "certification": None}
    ]
    assert body["tiers"][2]["nomination_only"] is True


def _ladder_queries(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(URL)
    assert response.status_code == 200
    return len(queries)


def test_the_ladder_takes_the_same_queries_for_few_and_many_tiers(partner_client) -> None:
    _ladder_queries(partner_client)  # warm-up: the partner's key lookup gets cached
    few = _ladder_queries(partner_client)
    for rank in range(4, 14):
        Tier.objects.create(code=f"tier-{rank}", name=f"Tier {rank}", rank=rank)
    tier_rules = [
        TierRuleInput(
            tier.code,
            tier.rank > 1,
            30,
            (Requirement("posts", 30, Decimal(tier.rank)), Requirement("shares", 30, Decimal(1))),
            (Requirement("posts", 30, Decimal(1)),),
        )
        for tier in Tier.objects.filter(rank__gt=0)
    ]
    draft = rule_set_draft_create(actor=OPERATOR, at=timezone.now(), tier_rules=tier_rules)
    rule_set_publish(rule_set=draft, effective_at=None, actor=OPERATOR, at=timezone.now())

    many = _ladder_queries(partner_client)

    assert len(partner_client.get(URL).json()["tiers"]) == 14
    assert many == few
