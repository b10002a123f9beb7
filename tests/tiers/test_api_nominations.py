"""Nominations over HTTP: nominate with evidence, review (approve -> probation, reject),
withdraw; partners see and act on their own only; filters; bad input changes nothing."""

from collections.abc import Callable

import pytest

from members.models import Member
from tests.helpers import assert_problem
from tiers.models import Nomination, TierChange

pytestmark = pytest.mark.django_db

URL = "/api/v1/nominations/"


def _nominate(client, nominee: Member, **fields):
    body = {"member": str(nominee.pk), "tier": "kol", "evidence": "Ran three meetups", **fields}
    return client.post(URL, body)


@pytest.fixture
def koc_member(make_member: Callable[..., Member], operator_client) -> Member:
    member = make_member("koc-1")
    operator_client.post(
        f"/api/v1/members/{member.pk}/promotions/", {"tier": "koc", "reason": "Creator"}
    )
    return member


def test_nominate_then_approve_puts_the_member_in_kol_on_probation(
    operator_client, koc_member: Member
) -> None:
    created = _nominate(operator_client, koc_member, evidence_urls=["https://example.com/meetup-1"])
    assert created.status_code == 201
    nomination = created.json()
    assert created["Location"].endswith(f"/api/v1/nominations/{nomination['id']}/")
    assert {key: nomination[key] for key in ("member", "member_external_id", "tier", "status")} == {
        "member": str(koc_member.pk),
        "member_external_id": "koc-1",
        "tier": "kol",
        "status": "pending",
    }
    assert nomination["evidence_urls"] == ["https://example.com/meetup-1"]

    reviewed = operator_client.post(
        f"{URL}{nomination['id']}/review/",
        {"decision": "approve", "note": "Well deserved", "probation_days": 20},
    )

    assert reviewed.status_code == 200
    body = reviewed.json()
    assert (body["status"], body["from_tier"], body["review_note"]) == (
        "probation",
        "koc",
        "Well deserved",
    )
    assert body["reviewed_by"].startswith("operator:")
    standing = operator_client.get(f"/api/v1/members/{koc_member.pk}/tier/").json()
    assert standing["tier"] == "kol"
    assert standing["probation_until"] == body["probation_until"]
    assert standing["probation_until"] is not None
    latest = operator_client.get(f"/api/v1/members/{koc_member.pk}/tier-history/").json()
    assert (latest["results"][0]["reason"], latest["results"][0]["to_tier"]) == (
        "nomination_approved",
        "kol",
    )


def test_reject_keeps_the_tier(operator_client, koc_member: Member) -> None:
    nomination = _nominate(operator_client, koc_member).json()

    response = operator_client.post(
        f"{URL}{nomination['id']}/review/", {"decision": "reject", "note": "Not yet"}
    )

    assert response.status_code == 200
    assert response.json()["status"] == "rejected"
    koc_member.refresh_from_db()
    assert (koc_member.tier_id, koc_member.tier_probation_until) == ("koc", None)
    assert TierChange.objects.filter(member=koc_member).count() == 1  # the promotion only


def test_a_second_review_is_409(operator_client, koc_member: Member) -> None:
    nomination = _nominate(operator_client, koc_member).json()
    operator_client.post(f"{URL}{nomination['id']}/review/", {"decision": "reject"})

    again = operator_client.post(f"{URL}{nomination['id']}/review/", {"decision": "approve"})

    assert_problem(again, 409, "nomination_not_pending")
    koc_member.refresh_from_db()
    assert koc_member.tier_id == "koc"


@pytest.mark.parametrize(
    ("body", "attr"),
    [
        ({"decision": "maybe"}, "decision"),
        ({"decision": "approve", "probation_days": -1}, "probation_days"),
        ({"decision": "approve", "probation_days": 400}, "probation_days"),
        ({"decision": "reject", "probation_days": 10}, "probation_days"),
        ({"decision": "approve", "tier": "kol"}, "tier"),
    ],
)
def test_bad_reviews_are_400(operator_client, koc_member: Member, body, attr) -> None:
    nomination = _nominate(operator_client, koc_member).json()

    response = operator_client.post(f"{URL}{nomination['id']}/review/", body)

    problem = assert_problem(response, 400)
    assert [error["attr"] for error in problem["errors"]] == [attr]
    assert Nomination.objects.get().status == "pending"


@pytest.mark.parametrize(
    ("fields", "status", "attr"),
    [
        ({"tier": "koc"}, 400, "tier"),  # reached by the rules, not by nomination
        ({"tier": "legend"}, 400, "tier"),
        ({"evidence": ""}, 400, "evidence"),
        ({"evidence_urls": ["not a url"]}, 400, "evidence_urls.0"),
        ({"member": "01900000-0000-7000-8000-000000000000"}, 400, "member"),
        ({"member": "nope"}, 400, "member"),
        ({"status": "confirmed"}, 400, "status"),
    ],
)
def test_bad_nominations_change_nothing(
    operator_client, koc_member: Member, fields, status, attr
) -> None:
    response = _nominate(operator_client, koc_member, **fields)

    problem = assert_problem(response, status)
    assert [error["attr"] for error in problem["errors"]] == [attr]
    assert not Nomination.objects.exists()


def test_one_open_nomination_per_member(operator_client, koc_member: Member) -> None:
    _nominate(operator_client, koc_member)

    response = _nominate(operator_client, koc_member)

    assert_problem(response, 409, "nomination_open")
    assert Nomination.objects.count() == 1


def test_partners_nominate_and_see_only_their_own(
    make_partner, operator_client, make_member: Callable[..., Member]
) -> None:
    _, shop = make_partner("Shop", scopes=["members:write"])
    _, crm = make_partner("CRM", scopes=["members:write"])
    first, second = make_member("first"), make_member("second")
    mine = _nominate(shop, first).json()
    theirs = _nominate(crm, second).json()

    listed = shop.get(URL).json()["results"]
    own = shop.get(f"{URL}{mine['id']}/")
    foreign = shop.get(f"{URL}{theirs['id']}/")
    foreign_withdrawal = shop.post(f"{URL}{theirs['id']}/withdrawal/", {})
    review = shop.post(f"{URL}{mine['id']}/review/", {"decision": "approve"})

    assert [item["id"] for item in listed] == [mine["id"]]
    assert own.status_code == 200
    assert mine["nominated_by"].startswith("partner:")
    assert_problem(foreign, 404)
    assert_problem(foreign_withdrawal, 404)
    assert_problem(review, 403)
    assert len(operator_client.get(URL).json()["results"]) == 2


def test_the_nominator_withdraws_and_then_it_cannot_be_reviewed(
    make_partner, operator_client, koc_member: Member
) -> None:
    _, shop = make_partner("Shop", scopes=["members:write"])
    nomination = _nominate(shop, koc_member).json()

    withdrawn = shop.post(f"{URL}{nomination['id']}/withdrawal/", {})
    review = operator_client.post(f"{URL}{nomination['id']}/review/", {"decision": "approve"})
    again = operator_client.post(f"{URL}{nomination['id']}/withdrawal/", {})

    assert withdrawn.status_code == 200
    assert withdrawn.json()["status"] == "withdrawn"
    assert_problem(review, 409, "nomination_not_pending")
    assert_problem(again, 409, "nomination_not_pending")
    koc_member.refresh_from_db()
    assert koc_member.tier_id == "koc"


def test_withdrawal_takes_no_body(operator_client, koc_member: Member) -> None:
    nomination = _nominate(operator_client, koc_member).json()

    response = operator_client.post(f"{URL}{nomination['id']}/withdrawal/", {"note": "x"})

    assert_problem(response, 400)
    assert Nomination.objects.get().status == "pending"


def test_the_list_filters_by_status_and_member(
    operator_client, make_member: Callable[..., Member]
) -> None:
    first, second, third = make_member("a"), make_member("b"), make_member("c")
    one = _nominate(operator_client, first).json()
    two = _nominate(operator_client, second).json()
    _nominate(operator_client, third)
    operator_client.post(f"{URL}{one['id']}/review/", {"decision": "reject"})

    rejected = operator_client.get(URL, {"status": "rejected"}).json()["results"]
    pending = operator_client.get(URL, {"status": "pending"}).json()["results"]
    by_member = operator_client.get(URL, {"member": str(second.pk)}).json()["results"]
    bad = operator_client.get(URL, {"status": "sleeping"})

    assert [item["id"] for item in rejected] == [one["id"]]
    assert len(pending) == 2
    assert [item["id"] for item in by_member] == [two["id"]]
    assert_problem(bad, 400)


@pytest.mark.parametrize(
    ("role", "method", "tail"),
    [
        ("member", "get", ""),
        ("member", "post", ""),
        ("partner with members:read only", "get", ""),
        ("partner with members:read only", "post", ""),
        ("operator who may only view", "post", ""),
        ("operator who may only view", "post", "review/"),
    ],
)
def test_function_level_access_to_nominations(
    role, method, tail, member_client, make_partner, make_operator_client, koc_member: Member
) -> None:
    nomination = Nomination.objects.create(
        member=koc_member,
        tier_id="kol",
        evidence="e",
        nominated_by="operator:1",
        created_at=koc_member.created_at,
    )
    client = {
        "member": lambda: member_client,
        "partner with members:read only": lambda: make_partner("Shop", scopes=["members:read"])[1],
        "operator who may only view": lambda: make_operator_client("tiers.view_nomination"),
    }[role]()
    url = f"{URL}{nomination.pk}/{tail}" if tail else URL
    body = {"decision": "approve"} if tail else {"member": str(koc_member.pk), "tier": "kol"}

    response = getattr(client, method)(url, body) if method == "post" else client.get(url)

    assert_problem(response, 403)
    assert Nomination.objects.get().status == "pending"
