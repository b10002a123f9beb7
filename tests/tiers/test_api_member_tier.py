"""GET members/{id}/tier/, me/tier/ and members/{id}/tier-history/: the standing with progress,
the tier held on a past date, the history newest first; object-level access, constant queries,
and no way for a member to set their own tier."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.actors import Actor, ActorKind
from core.read_cache import member_reads_changed
from members.models import Member
from rewards.services.earning import business_date_of
from tests.helpers import assert_problem
from tiers.models import TierChange
from tiers.services.promotions import tier_promote

pytestmark = pytest.mark.django_db

OPERATOR = Actor(kind=ActorKind.OPERATOR, user_id=1)


def _tier_url(member: Member, tail: str = "tier/") -> str:
    return f"/api/v1/members/{member.pk}/{tail}"


def _check(metric, required, current, *, window=30, certification=None):
    return {
        "metric": metric,
        "window_days": window,
        "certification": certification,
        "required": required,
        "current": current,
        "met": current >= required,
    }


def test_standing_shows_progress_to_the_next_tier(
    operator_client, member: Member, add_activity, certify
) -> None:
    certify(member, "onboarding")
    add_activity(member, days=3, interactions=2)

    response = operator_client.get(_tier_url(member))

    assert response.status_code == 200
    body = response.json()
    requirements = sorted(body.pop("requirements"), key=lambda check: check["metric"])
    assert requirements == [
        _check("active_days", 4, 3),
        _check("certification", 1, 1, window=None, certification="onboarding"),
        _check("interactions", 12, 6),
    ]
    assert body == {
        "member_id": str(member.pk),
        "as_of": None,
        "tier": "basic",
        "since": body["since"],
        "pin_tier": None,
        "pinned_until": None,
        "grace_until": None,
        "probation_until": None,
        "next_tier": "active",
        "next_tier_nomination_only": False,
        "keep_requirements": [],
        "at_risk": False,
        "rule_version": 1,
    }
    assert body["since"] is not None


def test_standing_shows_what_it_takes_to_keep_the_tier_and_the_pin(
    member_client, member: Member, certify
) -> None:
    certify(member, "onboarding")
    tier_promote(
        member=member,
        tier="koc",
        reason="Top creator",
        pin_days=10,
        actor=OPERATOR,
        at=timezone.now(),
    )

    body = member_client.get("/api/v1/me/tier/").json()

    assert (body["tier"], body["pin_tier"], body["next_tier"]) == ("koc", "koc", "kol")
    assert body["next_tier_nomination_only"] is True
    assert body["pinned_until"] is not None
    keep = {check["metric"]: check for check in body["keep_requirements"]}
    assert keep["posts"] == _check("posts", 3, 0, window=90)
    assert keep["qualifying_points"] == _check("qualifying_points", 300, 0, window=90)
    assert keep["certification"]["met"] is False
    # Failing maintenance: the next assessment starts a grace period.
    assert body["at_risk"] is True


def test_at_gives_the_tier_held_at_the_end_of_a_past_day(
    operator_client, make_member: Callable[..., Member]
) -> None:
    start = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
    member = make_member(at=start - timedelta(days=10))
    tier_promote(member=member, tier="active", reason="r", actor=OPERATOR, at=start)
    tier_promote(
        member=member, tier="koc", reason="r", actor=OPERATOR, at=start + timedelta(days=5)
    )
    day = business_date_of(start)

    before = operator_client.get(_tier_url(member), {"at": str(day - timedelta(days=1))})
    on = operator_client.get(_tier_url(member), {"at": str(day)})
    later = operator_client.get(_tier_url(member), {"at": str(day + timedelta(days=30))})

    assert before.status_code == on.status_code == later.status_code == 200
    assert (before.json()["tier"], before.json()["since"]) == ("basic", "2026-02-20T04:00:00Z")
    assert (on.json()["tier"], on.json()["since"]) == ("active", "2026-03-02T04:00:00Z")
    assert on.json()["as_of"] == str(day)
    assert on.json()["requirements"] == on.json()["keep_requirements"] == []
    assert later.json()["tier"] == "koc"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"at": "2026-13-01"}, "invalid"),
        ({"at": "yesterday"}, "invalid"),
        ({"at": "2999-01-01"}, "in_future"),
        ({"at": "2000-01-01"}, "before_joined"),
        ({"on": "2026-01-01"}, "unknown_field"),
    ],
)
def test_bad_dates_are_400(operator_client, member: Member, query, code) -> None:
    response = operator_client.get(_tier_url(member), query)

    body = assert_problem(response, 400, "validation_error")
    assert [(error["attr"], error["code"]) for error in body["errors"]] == [
        (next(iter(query)), code)
    ]


def test_a_member_reads_only_their_own_tier_and_history(
    member_client, member: Member, other_member: Member
) -> None:
    own = member_client.get(_tier_url(member))
    own_history = member_client.get(_tier_url(member, "tier-history/"))

    other = member_client.get(_tier_url(other_member))
    other_history = member_client.get(_tier_url(other_member, "tier-history/"))
    other_promotions = member_client.post(
        _tier_url(other_member, "promotions/"), {"tier": "kol", "reason": "me"}
    )

    assert (own.status_code, own_history.status_code) == (200, 200)
    assert_problem(other, 404)
    assert_problem(other_history, 404)
    assert_problem(other_promotions, 403)


def test_operators_and_partners_have_no_me_tier(operator_client, partner_client) -> None:
    assert_problem(operator_client.get("/api/v1/me/tier/"), 403)
    assert_problem(partner_client.get("/api/v1/me/tier/"), 403)


def test_history_is_newest_first_with_why(
    member_client, member: Member, make_operator_client
) -> None:
    start = timezone.now() - timedelta(days=3)
    tier_promote(member=member, tier="active", reason="Helpful", actor=OPERATOR, at=start)
    tier_promote(
        member=member,
        tier="koc",
        reason="Great posts",
        pin_days=30,
        actor=OPERATOR,
        at=start + timedelta(days=1),
    )
    tier_promote(
        member=member, tier="basic", reason="Spam", actor=OPERATOR, at=start + timedelta(days=2)
    )

    response = member_client.get(_tier_url(member, "tier-history/"))

    assert response.status_code == 200
    rows = response.json()["results"]
    assert [(r["from_tier"], r["to_tier"], r["reason"], r["note"]) for r in rows] == [
        ("koc", "basic", "demotion", "Spam"),
        ("active", "koc", "promotion", "Great posts"),
        ("basic", "active", "promotion", "Helpful"),
    ]
    assert rows[1]["pinned_until"] is not None
    assert rows[1]["details"] == {"reason": "Great posts", "pin_days": 30}
    assert {r["actor"] for r in rows} == {"operator:1"}
    assert rows[0]["rule_version"] is None
    assert rows[0]["checks"] == []
    assert rows[0]["member"] == str(member.pk)


def test_history_pages_with_a_cursor(operator_client, member: Member) -> None:
    start = timezone.now() - timedelta(days=10)
    for day in range(5):
        tier_promote(
            member=member,
            tier="active" if day % 2 == 0 else "basic",
            reason=f"step {day}",
            actor=OPERATOR,
            at=start + timedelta(days=day),
        )

    first = operator_client.get(_tier_url(member, "tier-history/"), {"page_size": 2}).json()
    second = operator_client.get(first["next"]).json()

    assert [row["note"] for row in first["results"]] == ["step 4", "step 3"]
    assert [row["note"] for row in second["results"]] == ["step 2", "step 1"]


def test_history_shows_the_checks_of_a_reassessment(
    operator_client, member: Member, add_activity, certify
) -> None:
    from core.actors import system_actor
    from tiers.services.reassessment import member_tier_reassess

    certify(member, "onboarding")
    add_activity(member, days=5, interactions=3)
    member_tier_reassess(member_id=member.pk, actor=system_actor("tests"), at=timezone.now())

    row = operator_client.get(_tier_url(member, "tier-history/")).json()["results"][0]

    assert (row["reason"], row["to_tier"], row["rule_version"]) == ("reassessment", "active", 1)
    checks = {check["metric"]: check for check in row["checks"]}
    assert checks["interactions"] == _check("interactions", 12, 15)
    assert checks["active_days"] == _check("active_days", 4, 5)


# --- Constant queries -------------------------------------------------------------------------


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, response.content[:300]
    return len(queries)


def test_standing_takes_the_same_queries_with_little_and_much_data(
    operator_client, make_member: Callable[..., Member], add_activity, certify
) -> None:
    quiet = make_member()
    busy = make_member()
    for code in ("onboarding", "content-creator", "brand-ambassador"):
        certify(busy, code)
    add_activity(busy, days=80, interactions=3, posts=1, shares=2)
    for day in range(30):
        tier_promote(
            member=busy,
            tier="active" if day % 2 == 0 else "koc",
            reason="r",
            actor=OPERATOR,
            at=timezone.now() - timedelta(days=40 - day),
        )

    _queries(operator_client, _tier_url(quiet))  # warm-up: the rules in force get cached
    member_reads_changed([quiet.pk])  # and the quiet member's document is built again
    assert _queries(operator_client, _tier_url(busy)) == _queries(operator_client, _tier_url(quiet))


def test_history_takes_the_same_queries_for_one_and_fifty_rows(
    member_client, member: Member, add_activity, certify
) -> None:
    from core.actors import system_actor
    from tiers.services.reassessment import member_tier_reassess

    # A reassessment row carries its rule version (a join), promotions none: mix both.
    certify(member, "onboarding")
    add_activity(member, days=5, interactions=3)
    member_tier_reassess(member_id=member.pk, actor=system_actor("tests"), at=timezone.now())
    one = _queries(member_client, _tier_url(member, "tier-history/"))
    for step in range(49):
        tier_promote(
            member=member,
            tier="active" if step % 2 else "koc",
            reason="r",
            actor=OPERATOR,
            at=timezone.now() + timedelta(seconds=step + 1),
        )
    assert TierChange.objects.filter(member=member).count() == 50
    assert TierChange.objects.filter(member=member, rule_set__isnull=False).exists()

    fifty = _queries(member_client, _tier_url(member, "tier-history/") + "?page_size=50")

    assert fifty == one


# --- Mass assignment ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"tier": "kol"},
        {"tier_pin": "kol", "tier_pinned_until": "2999-01-01T00:00:00Z"},
        {"tier_since": "2000-01-01T00:00:00Z"},
        {"display_name": "Me", "tier": "kol"},
    ],
)
def test_a_member_cannot_set_their_tier(
    member_client, operator_client, member: Member, body
) -> None:
    mine = member_client.patch("/api/v1/me/", body)
    through_members = member_client.patch(f"/api/v1/members/{member.pk}/", body)
    by_operator = operator_client.patch(f"/api/v1/members/{member.pk}/", body)

    assert_problem(mine, 400, "validation_error")
    assert_problem(through_members, 403)
    assert_problem(by_operator, 400, "validation_error")
    member.refresh_from_db()
    assert (member.tier_id, member.tier_pin_id, member.display_name) == ("basic", None, "Self")
    assert not TierChange.objects.exists()
