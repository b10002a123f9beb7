"""Fixture data and credentials for schema fuzzing: real ids so cases reach the real handlers."""

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pytest
from django.contrib.auth.models import Permission, User
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from rest_framework.test import APIClient

from core import webhooks
from core.actors import system_actor
from core.api.tokens import member_token_pair, operator_token_pair
from core.models import Scope
from core.services import partner_create
from core.webhooks import webhook_subscription_create
from members.services import member_create
from rewards.models import Reason
from rewards.services.catalog import redemption_create, reward_create
from rewards.services.certifications import certification_grant
from rewards.services.honors import badge_award
from rewards.services.ledger import points_award

# A certification without prerequisites and a manual badge, both seeded by the data migrations.
CERTIFICATION = "onboarding"
BADGE = "first-post"


@dataclass
class FuzzWorld:
    """Credentials per role and, per path parameter, an id that exists."""

    headers: dict[str, dict[str, str]]
    ids: dict[str, str]
    codes: dict[str, str] = field(default_factory=dict)

    def path_value(self, path: str, name: str) -> str | None:
        if name == "code":
            return self.codes["badge"] if "/badges/" in path else self.codes["certification"]
        return self.ids.get(name)

    def fill_path(self, case: Any) -> None:
        """Swap generated path values for real ones, keeping deliberately malformed values."""
        parameters = case.path_parameters or {}
        for name, value in list(parameters.items()):
            real = self.path_value(case.path, name)
            if real is not None and _well_formed(name, value):
                parameters[name] = real


def _well_formed(name: str, value: Any) -> bool:
    if not name.endswith("_id"):
        return isinstance(value, str) and value != ""
    try:
        UUID(str(value))
    except ValueError:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0
    return True


PUBLIC_ADDRESS = "93.184.216.34"


@pytest.fixture
def _offline_webhook_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fuzzed webhook URLs must never reach DNS: every host resolves to one public address."""
    monkeypatch.setattr(webhooks, "_resolve", lambda hostname, port: (PUBLIC_ADDRESS,))


@pytest.fixture
def _credentials_configured(settings: Any) -> None:
    settings.LOYALTY_CREDENTIAL_SIGNING_KEY = base64.b64encode(bytes(range(100, 132))).decode()
    settings.LOYALTY_CREDENTIAL_RETIRED_PUBLIC_KEYS = []


def _created(response: Any) -> dict[str, Any]:
    assert response.status_code in (200, 201, 202), (response.status_code, response.content[:300])
    return response.json()


@pytest.fixture
def fuzz(fuzz_world: FuzzWorld) -> Iterator[FuzzWorld]:
    """The world, with requests going to the WSGI app directly: its request signals would close
    the connection holding the test's transaction, so they are unhooked as Django's own test
    client does (after the world is built, since the test client hooks them back)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield fuzz_world
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def fuzz_world(
    db: Any,
    _offline_webhook_hosts: None,
    _credentials_configured: None,
) -> FuzzWorld:
    now = timezone.now()
    actor = system_actor("fuzz")
    member = member_create(external_id="fuzz-member", display_name="Fuzz", actor=actor, at=now)
    nominee = member_create(external_id="fuzz-nominee", display_name="Nominee", actor=actor, at=now)
    operator = User.objects.create_user("fuzz-operator", is_staff=True)
    operator.user_permissions.set(Permission.objects.all())
    partner, key = partner_create(name="Fuzz Shop", scopes=Scope.values, at=now)

    entry = points_award(
        member=member, points=500, reason=Reason.MANUAL, actor=actor, at=now, note="fuzz"
    )
    reward = reward_create(actor=actor, at=now, name="Fuzz mug", points_cost=10, stock=1000)
    redemption = redemption_create(member=member, reward=reward, actor=actor, at=now)
    certification_grant(member=member, code=CERTIFICATION, actor=actor, at=now)
    badge_award(member=member, code=BADGE, actor=actor, at=now)
    subscription, _secret = webhook_subscription_create(
        partner=partner,
        target=webhooks.webhook_target_resolve("https://hooks.example.com/fuzz"),
        event_types=["*"],
        at=now,
    )

    # The tier objects go through the API, as an operator would make them.
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {operator_token_pair(operator)['access']}")
    _created(api.post(f"/api/v1/members/{nominee.pk}/promotions/", {"tier": "koc", "reason": "x"}))
    nomination = _created(
        api.post(
            "/api/v1/nominations/",
            {"member": str(nominee.pk), "tier": "kol", "evidence": "Ran three meetups"},
        )
    )
    rule_set = _created(api.post("/api/v1/tier-rule-sets/", {"name": "Fuzz draft"}))
    job = _created(api.post("/api/v1/tier-reassessments/", {}))
    return FuzzWorld(
        headers={
            "member": {"Authorization": f"Bearer {member_token_pair(member.pk)['access']}"},
            "operator": {"Authorization": f"Bearer {operator_token_pair(operator)['access']}"},
            "partner": {"Authorization": f"Api-Key {key}"},
        },
        ids={
            "member_id": str(member.pk),
            "entry_id": str(entry.pk),
            "reward_id": str(reward.pk),
            "redemption_id": str(redemption.pk),
            "namespace": partner.namespace,
            "nomination_id": str(nomination["id"]),
            "rule_set_id": str(rule_set["id"]),
            "job_id": str(job["id"]),
            "webhook_id": str(subscription.pk),
        },
        codes={"badge": BADGE, "certification": CERTIFICATION},
    )
