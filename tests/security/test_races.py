"""Races on PostgreSQL for the effectful endpoints the other race files do not cover: promotions,
nominations (create and review), certification grants, badge awards, tag writes (one namespace
and the bulk sync), webhook subscriptions. Each is raced with one Idempotency-Key, with
different keys, and on one member; the invariants are checked after every run: one effect per
key, one history row per change, the stored tier equal to the last history row, no duplicate
rows, the ledger audit clean. Threads are released together by a barrier, each request on its
own connection (``tests.rewards.test_concurrency._race``)."""

from collections import Counter

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from core.actors import system_actor
from core.api.tokens import operator_token_pair
from core.models import IdempotencyRecord, OutboxEvent, WebhookSubscription
from members.models import Member, MemberTag
from rewards.models import CertificationGrant, MemberBadge
from rewards.selectors import ledger_violations
from tests.rewards.test_concurrency import _race
from tiers.models import Nomination, TierChange
from tiers.services.promotions import nomination_create

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ACTOR = system_actor("tests")


def _client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def token(superuser) -> str:
    return operator_token_pair(superuser)["access"]


@pytest.fixture
def audited():
    yield
    assert ledger_violations() == []
    # The stored tier of every member is where their history last took them (in commit order:
    # ids; see test_promotions_to_different_tiers_serialise_with_one_row_each for created_at).
    for member in Member.objects.all():
        last = TierChange.objects.filter(member=member).order_by("-id").first()
        assert last is None or last.to_tier_id == member.tier_id, member.external_id


# --- Promotions ----------------------------------------------------------------------------------


def test_one_promotion_key_raced_promotes_once(token, member, audited):
    url = f"/api/v1/members/{member.pk}/promotions/"
    body = {"tier": "koc", "reason": "Creator", "pin_days": 30}

    responses = _race(12, lambda n: _client(token).post(url, body, HTTP_IDEMPOTENCY_KEY="p-1"))

    assert {response.status_code for response in responses} == {201}
    assert [response.json() for response in responses] == [responses[0].json()] * 12
    assert TierChange.objects.filter(member=member).count() == 1
    assert OutboxEvent.objects.filter(event_type="member.tier_changed").count() == 1
    assert IdempotencyRecord.objects.count() == 1


def test_the_same_promotion_with_different_keys_applies_once(token, member, audited):
    url = f"/api/v1/members/{member.pk}/promotions/"

    responses = _race(
        12,
        lambda n: _client(token).post(
            url, {"tier": "active", "reason": "r"}, HTTP_IDEMPOTENCY_KEY=f"k-{n}"
        ),
    )

    # The first holds the member's tier lock; the others then find the tier already held.
    assert Counter(response.status_code for response in responses) == {201: 1, 409: 11}
    assert TierChange.objects.filter(member=member).count() == 1
    member.refresh_from_db()
    assert (member.tier_id, member.tier_version) == ("active", 1)


def test_promotions_to_different_tiers_serialise_with_one_row_each(token, member, audited):
    url = f"/api/v1/members/{member.pk}/promotions/"
    tiers = ["active", "koc", "kol", "basic"] * 3

    responses = _race(
        12,
        lambda n: _client(token).post(
            url, {"tier": tiers[n], "reason": "r"}, HTTP_IDEMPOTENCY_KEY=f"t-{n}"
        ),
    )

    created = [response for response in responses if response.status_code == 201]
    assert {response.status_code for response in responses} <= {201, 409}
    assert TierChange.objects.filter(member=member).count() == len(created)
    member.refresh_from_db()
    # Every change moved from the tier the previous one left: an unbroken chain, in commit
    # order. (Not always in created_at order: the view reads the clock before it waits for the
    # member's lock, so a change committed later can carry an earlier time.)
    chain = list(
        TierChange.objects.filter(member=member)
        .order_by("id")
        .values_list("from_tier_id", "to_tier_id")
    )
    assert all(chain[i][1] == chain[i + 1][0] for i in range(len(chain) - 1))
    assert member.tier_version == len(created)


def test_a_promotion_racing_reassessments_is_never_lost(token, member, audited):
    from tiers.services.reassessment import member_tier_reassess

    url = f"/api/v1/members/{member.pk}/promotions/"

    def work(n: int):
        if n == 0:
            return _client(token).post(url, {"tier": "koc", "reason": "r", "pin_days": 30})
        return member_tier_reassess(member_id=member.pk, actor=ACTOR, at=timezone.now())

    results = _race(8, work)

    assert results[0].status_code == 201
    assert [result for result in results if isinstance(result, Exception)] == []
    member.refresh_from_db()
    # Pinned at koc: reassessment may start grace but never demotes it.
    assert (member.tier_id, member.tier_pin_id) == ("koc", "koc")


# --- Nominations ---------------------------------------------------------------------------------


def test_nominating_one_member_at_once_opens_one_nomination(token, member, audited):
    body = {"member": str(member.pk), "tier": "kol", "evidence": "Ran meetups"}

    responses = _race(
        10,
        lambda n: _client(token).post("/api/v1/nominations/", body, HTTP_IDEMPOTENCY_KEY=f"n{n}"),
    )

    assert Counter(response.status_code for response in responses) == {201: 1, 409: 9}
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"nomination_open"}
    assert Nomination.objects.filter(member=member).count() == 1


def test_concurrent_reviews_decide_once(token, member, audited):
    nomination = nomination_create(
        member=member,
        tier="kol",
        evidence="e",
        evidence_urls=[],
        actor=ACTOR,
        at=timezone.now(),
    )
    url = f"/api/v1/nominations/{nomination.pk}/review/"

    responses = _race(
        10,
        lambda n: _client(token).post(
            url, {"decision": "approve" if n % 2 else "reject"}, HTTP_IDEMPOTENCY_KEY=f"r{n}"
        ),
    )

    assert Counter(response.status_code for response in responses) == {200: 1, 409: 9}
    nomination.refresh_from_db()
    member.refresh_from_db()
    if nomination.status == "probation":
        assert member.tier_id == "kol"
        assert TierChange.objects.filter(member=member).count() == 1
    else:
        assert (nomination.status, member.tier_id) == ("rejected", "basic")
        assert not TierChange.objects.filter(member=member).exists()


# --- Certifications and badges -------------------------------------------------------------------


def test_granting_one_certification_at_once_keeps_one_grant(token, member, audited):
    url = f"/api/v1/members/{member.pk}/certifications/"

    same_key = _race(
        6,
        lambda n: _client(token).post(
            url, {"certification": "onboarding"}, HTTP_IDEMPOTENCY_KEY="c"
        ),
    )
    other_keys = _race(
        6,
        lambda n: _client(token).post(
            url, {"certification": "onboarding"}, HTTP_IDEMPOTENCY_KEY=f"c{n}"
        ),
    )

    assert {response.status_code for response in same_key} == {201}
    assert [response.json() for response in same_key] == [same_key[0].json()] * 6
    # Granting a held certification again re-certifies it (200), never a second row.
    assert {response.status_code for response in other_keys} == {200}
    assert CertificationGrant.objects.filter(member=member).count() == 1


def test_awarding_one_badge_at_once_writes_one_row(token, member, audited):
    url = f"/api/v1/members/{member.pk}/badges/"

    responses = _race(
        10,
        lambda n: _client(token).post(
            url, {"badge": "community-hero"}, HTTP_IDEMPOTENCY_KEY=f"b{n}"
        ),
    )

    assert {response.status_code for response in responses} <= {200, 201, 409}
    assert sum(response.status_code == 201 for response in responses) == 1
    assert MemberBadge.objects.filter(member=member, badge_id="community-hero").count() == 1


# --- Tags ----------------------------------------------------------------------------------------


def test_concurrent_namespace_replacements_leave_exactly_one_of_the_sets(
    make_partner, member, audited
):
    from core.services import partner_key_issue

    shop, _ = make_partner("Shop", scopes=["tags:write"])
    keys = [partner_key_issue(partner=shop, name=f"k{n}") for n in range(8)]
    sets = [[{"key": f"set{n}-a"}, {"key": f"set{n}-b"}] for n in range(8)]

    def put(n: int):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {keys[n]}")
        return client.put(f"/api/v1/members/{member.pk}/tags/{shop.namespace}/", {"tags": sets[n]})

    responses = _race(8, put)

    assert {response.status_code for response in responses} == {200}
    stored = sorted(MemberTag.objects.filter(member=member).values_list("key", flat=True))
    assert stored in [sorted(tag["key"] for tag in tags) for tags in sets]


def test_concurrent_tag_syncs_over_the_same_members_write_no_duplicates(
    make_partner, make_member, audited
):
    from core.services import partner_key_issue

    members = [make_member(f"sync-{n}") for n in range(20)]
    shop, _ = make_partner("Shop", scopes=["tags:write"])
    keys = [partner_key_issue(partner=shop, name=f"k{n}") for n in range(6)]

    def sync(n: int):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {keys[n]}")
        order = members if n % 2 else list(reversed(members))
        body = {
            "namespace": shop.namespace,
            "mode": "merge",
            "members": [
                {"external_id": m.external_id, "tags": [{"key": "vip", "value": str(n)}]}
                for m in order
            ],
        }
        return client.post("/api/v1/tag-sync/", body, format="json")

    responses = _race(6, sync)

    assert {response.status_code for response in responses} == {200}
    rows = Counter(MemberTag.objects.values_list("member_id", "key"))
    assert rows == Counter({(m.pk, "vip"): 1 for m in members})


# --- Webhook subscriptions -----------------------------------------------------------------------


def test_webhook_creation_is_once_per_key_and_capped_under_concurrency(
    settings, make_partner, fake_dns, audited
):
    from core.services import partner_key_issue

    settings.LOYALTY_WEBHOOK_MAX_SUBSCRIPTIONS_PER_PARTNER = 3
    shop, _ = make_partner("Shop", scopes=["webhooks:manage"])
    keys = [partner_key_issue(partner=shop, name=f"k{n}") for n in range(10)]
    body = {"url": "https://hooks.example.com/hook", "event_types": ["*"]}

    def create(n: int, idempotency_key: str):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {keys[n]}")
        return client.post(
            "/api/v1/webhooks/", body, format="json", HTTP_IDEMPOTENCY_KEY=idempotency_key
        )

    replays = _race(10, lambda n: create(n, "same"))
    distinct = _race(10, lambda n: create(n, f"w{n}"))

    assert {response.status_code for response in replays} == {201}
    assert len({response.json()["secret"] for response in replays}) == 1
    assert Counter(response.status_code for response in distinct) == {201: 2, 409: 8}
    assert WebhookSubscription.objects.filter(partner=shop).count() == 3


# --- Identities, erasure, rule publication, withdrawal against review ---------------------------


def test_two_members_claiming_one_identity_at_once_link_it_once(token, make_member, audited):
    from members.models import Identity

    members = [make_member(f"claim-{n}") for n in range(8)]
    body = {"identities": [{"provider": "openid", "value": "o-shared"}]}

    responses = _race(
        8, lambda n: _client(token).put(f"/api/v1/members/{members[n].pk}/identities/", body)
    )

    assert Counter(response.status_code for response in responses) == {200: 1, 409: 7}
    assert Identity.objects.filter(provider="openid", value="o-shared").count() == 1


def test_concurrent_identity_replacements_leave_exactly_one_of_the_sets(token, member, audited):
    from members.models import Identity

    sets = [[{"provider": "openid", "value": f"o-{n}-{i}"} for i in range(2)] for n in range(8)]
    url = f"/api/v1/members/{member.pk}/identities/"

    responses = _race(8, lambda n: _client(token).put(url, {"identities": sets[n]}))

    assert {response.status_code for response in responses} == {200}
    stored = sorted(Identity.objects.filter(member=member).values_list("value", flat=True))
    assert stored in [sorted(item["value"] for item in identities) for identities in sets]


def test_erasing_a_member_while_points_are_awarded_loses_nothing(token, member, audited):
    from rewards.models import PointsAccount, PointsEntry

    def work(n: int):
        client = _client(token)
        if n == 0:
            return client.delete(f"/api/v1/members/{member.pk}/")
        return client.post(
            f"/api/v1/members/{member.pk}/points/awards/",
            {"points": 3},
            HTTP_IDEMPOTENCY_KEY=f"a{n}",
        )

    responses = _race(12, work)

    assert responses[0].status_code == 204
    awards = Counter(response.status_code for response in responses[1:])
    assert set(awards) <= {201, 404, 409}
    entries = PointsEntry.objects.filter(member=member).count()
    assert entries == awards[201]
    account = PointsAccount.objects.filter(pk=member.pk).first()
    assert (account.available if account else 0) == 3 * awards[201]


def test_publishing_one_draft_at_once_publishes_it_once(token, audited):
    from tiers.models import RuleSet
    from tiers.services.rules import rule_set_draft_create

    draft = rule_set_draft_create(actor=ACTOR, at=timezone.now())
    url = f"/api/v1/tier-rule-sets/{draft.pk}/publication/"

    responses = _race(8, lambda n: _client(token).post(url, {}, HTTP_IDEMPOTENCY_KEY=f"p{n}"))

    assert Counter(response.status_code for response in responses) == {200: 1, 409: 7}
    assert RuleSet.objects.filter(status="published").count() == 2  # the seeded one and this


def test_withdrawal_racing_review_one_wins(token, make_partner, member, audited):
    from core.actors import Actor, ActorKind
    from core.services import partner_key_issue

    shop, _ = make_partner("Shop", scopes=["members:write"])
    key = partner_key_issue(partner=shop, name="w")
    nomination = nomination_create(
        member=member,
        tier="kol",
        evidence="e",
        evidence_urls=[],
        actor=Actor(kind=ActorKind.PARTNER, partner_id=shop.pk),
        at=timezone.now(),
    )

    def work(n: int):
        if n % 2:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
            return client.post(f"/api/v1/nominations/{nomination.pk}/withdrawal/", {})
        return _client(token).post(
            f"/api/v1/nominations/{nomination.pk}/review/", {"decision": "approve"}
        )

    responses = _race(8, work)

    assert Counter(response.status_code for response in responses)[200] == 1
    assert {response.status_code for response in responses} <= {200, 409}
    nomination.refresh_from_db()
    member.refresh_from_db()
    assert (nomination.status, member.tier_id) in {("withdrawn", "basic"), ("probation", "kol")}


# --- Reassessment start, certification revocation, webhook secret rotation ----------------------


def test_starting_reassessments_at_once_starts_one(token, audited):
    from core.models import Job
    from tiers.selectors import REASSESSMENT_JOB

    responses = _race(
        8,
        lambda n: _client(token).post(
            "/api/v1/tier-reassessments/", {}, HTTP_IDEMPOTENCY_KEY=f"s{n}"
        ),
    )

    statuses = Counter(response.status_code for response in responses)
    # Jobs run inline here (no broker), so one that finished may let a later start through; never
    # two at once, and every start that was refused says why.
    assert set(statuses) <= {202, 409}
    assert statuses[202] == Job.objects.filter(kind=REASSESSMENT_JOB).count() >= 1
    assert {r.json()["code"] for r in responses if r.status_code == 409} <= {"reassessment_running"}


def test_revoking_one_certification_at_once_revokes_once(token, member, certify, audited):
    certify(member, "onboarding")
    url = f"/api/v1/members/{member.pk}/certifications/onboarding/"

    responses = _race(
        8,
        lambda n: _client(token).delete(
            url, {"reason": "Fraud"}, format="json", HTTP_IDEMPOTENCY_KEY=f"v{n}"
        ),
    )

    assert Counter(response.status_code for response in responses) == {200: 1, 409: 7}
    grant = CertificationGrant.objects.get(member=member)
    assert grant.revoked_at is not None
    assert OutboxEvent.objects.filter(event_type="certification.revoked").count() <= 1


def test_rotating_a_webhook_secret_at_once_keeps_the_last_one_answered(
    make_partner, fake_dns, audited
):
    from core.services import partner_key_issue
    from core.webhooks import webhook_subscription_create, webhook_target_resolve

    shop, _ = make_partner("Shop", scopes=["webhooks:manage"])
    subscription, _ = webhook_subscription_create(
        partner=shop,
        target=webhook_target_resolve("https://hooks.example.com/hook"),
        event_types=["*"],
        at=timezone.now(),
    )
    keys = [partner_key_issue(partner=shop, name=f"k{n}") for n in range(8)]

    def rotate(n: int):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {keys[n]}")
        return client.post(f"/api/v1/webhooks/{subscription.pk}/secret-rotations/", {})

    responses = _race(8, rotate)

    assert {response.status_code for response in responses} == {201}
    secrets = {response.json()["secret"] for response in responses}
    assert len(secrets) == 8
    subscription.refresh_from_db()
    # Rotations serialise: the stored secret is one that was handed out, never a lost one.
    assert subscription.secret in secrets
