"""Regression tests for what the schema fuzzer found, each replayed as one explicit request."""

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.fuzz.conftest import FuzzWorld
from tests.fuzz.schema import load_schema
from tests.fuzz.test_schema_fuzz import CHECKS
from tests.helpers import assert_problem

schema = load_schema("operator")


def _client(world: FuzzWorld, role: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=world.headers[role]["Authorization"])
    return client


def _conforms(world: FuzzWorld, role: str, path: str, method: str, **case: Any) -> Any:
    """Send the request through the schema and run every fuzz check on the answer."""
    return (
        schema[path][method]
        .Case(**case)
        .call_and_validate(headers=world.headers[role], checks=CHECKS)
    )


def test_domain_error_items_carry_a_json_pointer(fuzz_world: FuzzWorld) -> None:
    member_id = fuzz_world.ids["member_id"]
    response = _client(fuzz_world, "operator").post(
        f"/api/v1/members/{member_id}/badges/", {"badge": "no-such-badge"}
    )
    body = assert_problem(response, 400, "validation_error")
    assert body["errors"] == [
        {"attr": "badge", "pointer": "#/badge", "code": "unknown", "detail": "no-such-badge"}
    ]


@pytest.mark.parametrize("tag", ["", "100%", "%s%s", "%(x)s"])
def test_filter_errors_are_400_with_a_code(fuzz_world: FuzzWorld, tag: str) -> None:
    """django-filter errors carried ``code: null``, and a "%" in the value was a 500."""
    response = _client(fuzz_world, "operator").get("/api/v1/members/", {"tag": tag})
    body = assert_problem(response, 400, "validation_error")
    assert body["errors"][0]["code"] == "invalid"
    assert body["errors"][0]["pointer"] == "#/tag"
    assert repr(tag) in body["errors"][0]["detail"]


@pytest.mark.parametrize(
    ("path", "document"),
    [
        ("/api/v1/me/", {"display_name": "a\u0000b"}),
        ("/api/v1/me/", {"display_name": "x", "\u0000": 1}),
        ("/api/v1/me/events/", {"events": [{"type": "like", "properties": {"k": ["\u0000"]}}]}),
    ],
)
def test_nul_characters_in_json_are_400_not_500(
    fuzz_world: FuzzWorld, path: str, document: dict[str, Any]
) -> None:
    """PostgreSQL cannot store U+0000: it was a 500 when written (a response echoing an unknown
    field's name into the Idempotency-Key record, a text column)."""
    client = _client(fuzz_world, "member")
    method = client.patch if path == "/api/v1/me/" else client.post
    response = method(
        path,
        data=json.dumps(document),
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="nul-1",
    )
    assert_problem(response, 400, "parse_error")


def test_events_with_nul_in_an_unknown_field_name_are_400(fuzz_world: FuzzWorld) -> None:
    document = {"events": [{"external_id": "fuzz-member", "type": "like", "s\u0000": 1}]}
    response = _client(fuzz_world, "partner").post(
        "/api/v1/events/",
        data=json.dumps(document),
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="nul-2",
    )
    assert_problem(response, 400, "parse_error")


def test_blank_email_and_image_url_match_the_documented_schema(fuzz: FuzzWorld) -> None:
    """The schema said ``format: email``/``uri`` for values that are "" when left blank."""
    member = _conforms(
        fuzz,
        "operator",
        "/api/v1/members/{member_id}/",
        "GET",
        path_parameters={"member_id": fuzz.ids["member_id"]},
    )
    assert member.json()["email"] == ""
    reward = _conforms(
        fuzz,
        "member",
        "/api/v1/rewards/{reward_id}/",
        "GET",
        path_parameters={"reward_id": fuzz.ids["reward_id"]},
    )
    assert reward.json()["image_url"] == ""


def test_not_found_in_the_body_is_a_documented_404(fuzz: FuzzWorld) -> None:
    for role, path, body in [
        ("partner", "/api/v1/auth/member-tokens/", {"external_id": "nobody"}),
        ("member", "/api/v1/me/redemptions/", {"reward": 987654321}),
        (
            "operator",
            "/api/v1/tag-sync/",
            {"namespace": "nobody", "mode": "replace", "members": [{"external_id": "x"}]},
        ),
    ]:
        response = _conforms(fuzz, role, path, "POST", body=body)
        assert response.status_code == 404, (path, response.text)


def test_fulfilling_twice_is_a_documented_409(fuzz: FuzzWorld) -> None:
    path = "/api/v1/redemptions/{redemption_id}/"
    parameters = {"redemption_id": fuzz.ids["redemption_id"]}
    first = _conforms(
        fuzz, "operator", path, "PATCH", path_parameters=parameters, body={"status": "fulfilled"}
    )
    assert first.status_code == 200, first.text
    again = _conforms(
        fuzz, "operator", path, "PATCH", path_parameters=parameters, body={"status": "fulfilled"}
    )
    assert again.status_code == 409, again.text


def test_input_bodies_document_that_unknown_fields_are_refused(fuzz: FuzzWorld) -> None:
    components = schema.raw_schema["components"]["schemas"]
    assert components["PointsAwardRequest"]["additionalProperties"] is False
    response = _client(fuzz, "operator").post(
        f"/api/v1/members/{fuzz.ids['member_id']}/points/awards/", {"points": 5, "bonus": 1}
    )
    assert_problem(response, 400, "validation_error")
