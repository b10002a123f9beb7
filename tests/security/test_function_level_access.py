"""OWASP API5 (broken function-level authorization) and API2 (authentication), generated from the
URL resolver: every operation under /api/v1/, including ones added after this file was written,
is called by each role that must not reach it. A refused call is a problem+json 401/403 and
writes nothing. The declarations themselves are held to a policy (no unsafe method open to
every operator or to members outside their own space) so a new endpoint cannot open a hole by
declaring too much."""

from collections.abc import Callable
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from core.api.tokens import member_token_pair
from core.models import Scope
from tests.helpers import assert_problem
from tests.security.routes import UNSAFE, Operation, api_operations, dummy_values

OPERATIONS = api_operations()
PROTECTED = [operation for operation in OPERATIONS if not operation.is_public]

# Reviewed: the only operations anyone may call without credentials.
PUBLIC = {
    "POST /api/v1/auth/token/",
    "POST /api/v1/auth/token/refresh/",
    "GET /api/v1/credentials/issuer/",
    "POST /api/v1/credentials/verifications/",
    "GET /api/v1/honors/wall/",
}
# Reviewed: the only writes a member token may make (each scoped to the member in the view).
MEMBER_WRITES = {
    "PATCH /api/v1/me/",
    "POST /api/v1/me/events/",
    "POST /api/v1/me/check-ins/",
    "POST /api/v1/me/redemptions/",
    "POST /api/v1/rewards/{reward_id}/redemptions/",
    "PATCH /api/v1/redemptions/{redemption_id}/",
}
# Reviewed: writes open to every staff user, because the view checks the permission itself
# (it depends on the body: fulfilling and cancelling need different permissions; each bulk
# operation needs the permission of its single-member counterpart). Proven below.
OPERATOR_WRITES_CHECKED_IN_VIEW = {
    "PATCH /api/v1/redemptions/{redemption_id}/",
    "POST /api/v1/bulk-operations/",
}


def _ids(operations: list[Operation]) -> list[str]:
    return [operation.label for operation in operations]


def _row_counts() -> dict[str, int]:
    """Rows in every table of the project's own apps (what a refused call must not change)."""
    base = Path(settings.BASE_DIR)
    tables = set(connection.introspection.table_names())
    return {
        model._meta.label: model._default_manager.count()
        for model in apps.get_models()
        if Path(model._meta.app_config.path).is_relative_to(base)
        and ".venv" not in model._meta.app_config.path
        and model._meta.db_table in tables
    }


def _call(client: APIClient, operation: Operation) -> object:
    path = operation.path(dummy_values(operation))
    method = getattr(client, operation.method.lower())
    return method(path, {}, format="json") if operation.method in UNSAFE else method(path)


def _refused(client: APIClient, operation: Operation, status: int) -> None:
    before = _row_counts() if operation.method in UNSAFE else None

    response = _call(client, operation)

    assert_problem(response, status)
    if before is not None:
        assert _row_counts() == before, operation.label


def test_the_operation_list_is_generated_and_complete():
    labels = set(_ids(OPERATIONS))

    # A sample of every app's routes: the generator walks every include.
    assert {
        "GET /api/v1/members/",
        "POST /api/v1/members/{member_id}/promotions/",
        "POST /api/v1/points/award-batches/",
        "POST /api/v1/webhooks/",
        "GET /api/v1/me/",
    } <= labels
    assert len(labels) == len(OPERATIONS) >= 80


def test_only_the_reviewed_operations_are_public():
    public = {operation.label for operation in OPERATIONS if operation.is_public}

    assert public == PUBLIC


@pytest.mark.parametrize("operation", PROTECTED, ids=_ids(PROTECTED))
def test_anonymous_is_401_with_a_challenge(db, operation):
    client = APIClient()

    response = _call(client, operation)

    assert_problem(response, 401)
    assert response["WWW-Authenticate"]


@pytest.mark.parametrize("operation", PROTECTED, ids=_ids(PROTECTED))
def test_a_bad_token_or_key_is_401(db, operation):
    for header in ("Bearer not-a-jwt", "Api-Key not.a-key"):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=header)

        assert_problem(_call(client, operation), 401)


MEMBER_REFUSED = [operation for operation in PROTECTED if not operation.member_may]


@pytest.mark.parametrize("operation", MEMBER_REFUSED, ids=_ids(MEMBER_REFUSED))
def test_a_member_token_cannot_reach_operator_or_partner_operations(member, operation):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {member_token_pair(member.pk)['access']}")

    _refused(client, operation, 403)


@pytest.mark.parametrize("operation", PROTECTED, ids=_ids(PROTECTED))
def test_a_partner_without_the_scope_is_403(make_partner, operation):
    # Every scope but the one the operation needs (all scopes when partners may not call it).
    needed = operation.partner_scope
    _, client = make_partner("NoScope", scopes=[s for s in Scope.values if s != needed])

    _refused(client, operation, 403)


OPERATOR_GUARDED = [operation for operation in PROTECTED if operation.operator_permissions != []]


@pytest.mark.parametrize("operation", OPERATOR_GUARDED, ids=_ids(OPERATOR_GUARDED))
def test_a_staff_user_without_the_permission_is_403(
    make_operator_client: Callable[..., APIClient], operation
):
    # Holding every permission but the needed ones must not be enough either.
    needed = set(operation.operator_permissions or [])
    from django.contrib.auth.models import Permission

    others = [
        f"{p.content_type.app_label}.{p.codename}"
        for p in Permission.objects.select_related("content_type")
        if f"{p.content_type.app_label}.{p.codename}" not in needed
    ]
    client = make_operator_client(*others) if needed else make_operator_client()

    _refused(client, operation, 403)


READS = [operation for operation in PROTECTED if operation.method == "GET"]


@pytest.mark.parametrize("operation", READS, ids=_ids(READS))
def test_the_refusals_above_come_from_the_role_a_superuser_passes(operator_client, operation):
    # Control: with the same dummy path a superuser gets past the role check (200, 404 for the
    # object that does not exist, 400 for a missing parameter), so the 401/403 above are the role
    # checks answering.
    response = _call(operator_client, operation)

    if operation.operator_permissions is None:
        assert_problem(response, 403)
    else:
        assert response.status_code in (200, 400, 404), (operation.label, response.content[:300])


def test_members_write_only_through_the_reviewed_operations():
    member_writes = {
        operation.label
        for operation in OPERATIONS
        if operation.member_may and operation.method in UNSAFE
    }

    assert member_writes == MEMBER_WRITES


def test_every_staff_write_needs_a_django_permission():
    open_to_all_staff = {
        operation.label
        for operation in PROTECTED
        if operation.method in UNSAFE and operation.operator_permissions == []
    }

    assert open_to_all_staff == OPERATOR_WRITES_CHECKED_IN_VIEW


def test_every_partner_scope_named_by_a_view_exists():
    named = {operation.partner_scope for operation in OPERATIONS} - {None}

    assert named <= set(Scope.values)


@pytest.mark.parametrize(
    ("body", "permission"),
    [
        ({"operation": "points_award", "points": 5}, "rewards.award_points"),
        (
            {"operation": "certification_grant", "certification": "onboarding"},
            "rewards.grant_certification",
        ),
        ({"operation": "tier_reassessment"}, "tiers.run_reassessment"),
    ],
    ids=lambda value: value["operation"] if isinstance(value, dict) else value,
)
def test_bulk_operations_need_the_permission_of_what_they_do(
    make_operator_client, member, body, permission
):
    body = {**body, "external_ids": [member.external_id]}
    everything_else = [
        "rewards.award_points",
        "rewards.grant_certification",
        "tiers.run_reassessment",
    ]
    everything_else.remove(permission)
    before = _row_counts()

    refused = make_operator_client(*everything_else).post(
        "/api/v1/bulk-operations/", body, format="json"
    )

    assert_problem(refused, 403)
    assert _row_counts() == before
    allowed = make_operator_client(permission).post("/api/v1/bulk-operations/", body, format="json")
    assert allowed.status_code == 202, allowed.content[:300]


@pytest.mark.parametrize(
    ("status", "permission"),
    [("fulfilled", "rewards.fulfil_redemption"), ("cancelled", "rewards.cancel_redemption")],
)
def test_a_redemption_change_needs_the_permission_of_its_status(
    make_operator_client, member, status, permission
):
    from django.utils import timezone

    from core.actors import system_actor
    from rewards.models import Redemption
    from rewards.services.catalog import redemption_create, reward_create
    from rewards.services.ledger import points_award

    now = timezone.now()
    points_award(member=member, points=5, reason="manual", actor=system_actor("t"), at=now)
    reward = reward_create(name="Pin", points_cost=5, actor=system_actor("t"), at=now)
    redemption = redemption_create(member=member, reward=reward, actor=system_actor("t"), at=now)
    other = {"rewards.fulfil_redemption", "rewards.cancel_redemption"} - {permission}
    path = f"/api/v1/redemptions/{redemption.pk}/"
    body = {"status": status, "reason": "r"}

    refused = make_operator_client(*other).patch(path, body, format="json")

    assert_problem(refused, 403)
    assert Redemption.objects.get(pk=redemption.pk).status == "requested"
    allowed = make_operator_client(permission).patch(path, body, format="json")
    assert allowed.status_code == 200, allowed.content[:300]
    assert Redemption.objects.get(pk=redemption.pk).status == status
