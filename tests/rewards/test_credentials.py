"""Verifiable credentials through the API: export, an independent Ed25519 check of the proof,
tampering, revocation and expiry, access, the public verification endpoint, the issuer's keys,
key handling and the key command."""

import base64
import hashlib
import io
import json
from datetime import timedelta

import pytest
import time_machine
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from core.actors import system_actor
from core.api.throttles import ClientRateThrottle
from core.api.tokens import member_token_pair
from core.models import Scope
from rewards.api.credential_views import CredentialVerificationView
from rewards.credentials import proof_add
from rewards.models import CertificationGrant
from rewards.services.certifications import certification_grant, certification_revoke
from tests.helpers import assert_problem

pytestmark = pytest.mark.django_db

SEED = bytes(range(100, 132))
SIGNING_KEY = base64.b64encode(SEED).decode()
VERIFY_URL = "/api/v1/credentials/verifications/"
ISSUER_URL = "/api/v1/credentials/issuer/"
ISSUER_ID = "https://testserver/api/v1/credentials/issuer/"
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


@pytest.fixture(autouse=True)
def _signing_key(settings):
    settings.LOYALTY_CREDENTIAL_SIGNING_KEY = SIGNING_KEY
    settings.LOYALTY_CREDENTIAL_RETIRED_PUBLIC_KEYS = []


def _url(member, code="onboarding"):
    return f"/api/v1/members/{member.pk}/certifications/{code}/credential/"


# --- An independent implementation of the eddsa-jcs-2022 check ---------------------------------


def _base58_decode(text):
    number = 0
    for character in text:
        number = number * 58 + BASE58.index(character)
    return number.to_bytes(64, "big")  # an Ed25519 signature is 64 bytes


def _jcs(value):
    # The documents hold only ASCII keys, strings and no numbers: sorted keys, no whitespace.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def independently_verified(document, public_key=None):
    """RFC 8785 + SHA-256 + Ed25519, done here with `cryptography` alone."""
    public_key = public_key or Ed25519PrivateKey.from_private_bytes(SEED).public_key()
    proof = dict(document["proof"])
    proof_value = proof.pop("proofValue")
    assert proof_value.startswith("z")
    unsecured = {key: value for key, value in document.items() if key != "proof"}
    hash_data = hashlib.sha256(_jcs(proof)).digest() + hashlib.sha256(_jcs(unsecured)).digest()
    try:
        public_key.verify(_base58_decode(proof_value[1:]), hash_data)
    except InvalidSignature:
        return False
    return True


def _multibase_public(public_key):
    number = int.from_bytes(b"\xed\x01" + public_key.public_bytes_raw(), "big")
    digits = ""
    while number:
        number, remainder = divmod(number, 58)
        digits = BASE58[remainder] + digits
    return "z" + digits


@pytest.fixture
def held(member, certify):
    return certify(member, "onboarding", expires_at=timezone.now() + timedelta(days=30))


# --- Export --------------------------------------------------------------------------------------


def test_the_credential_verifies_with_an_independent_ed25519_check(member_client, member, held):
    response = member_client.get("/api/v1/me/certifications/onboarding/credential/")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    document = response.json()
    assert independently_verified(document)
    public = _multibase_public(Ed25519PrivateKey.from_private_bytes(SEED).public_key())
    assert document["proof"]["verificationMethod"] == f"{ISSUER_ID}#{public}"
    assert document["issuer"] == {"id": ISSUER_ID, "type": ["Profile"], "name": "Loyalty program"}
    assert document["type"] == ["VerifiableCredential", "OpenBadgeCredential"]
    assert document["credentialSubject"]["id"] == f"urn:uuid:{member.pk}"
    assert "identifier" not in document["credentialSubject"]
    assert document["credentialSubject"]["achievement"] == {
        "id": "urn:loyalty:achievement:certification:onboarding",
        "type": ["Achievement"],
        "achievementType": "Certification",
        "name": "Onboarding",
        "description": "Finished the new-member guide.",
        "criteria": {"narrative": "Finished the new-member guide."},
    }
    assert document["validFrom"] == held.granted_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert document["validUntil"] == held.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert document["credentialStatus"] == {
        "id": "https://testserver/api/v1/credentials/verifications/",
        "type": "LoyaltyCredentialVerification",
    }


def test_the_member_path_and_the_me_path_attest_the_same_holding(member_client, member, held):
    mine = member_client.get("/api/v1/me/certifications/onboarding/credential/").json()
    by_id = member_client.get(_url(member)).json()

    assert by_id["id"] == mine["id"]
    assert independently_verified(by_id)


def test_the_display_name_is_included_only_when_the_member_opted_into_recognition(
    member_client, member, held
):
    member.public_recognition = True
    member.save(update_fields=["public_recognition"])

    document = member_client.get(_url(member)).json()

    assert document["credentialSubject"]["identifier"] == [
        {"type": "IdentityObject", "identityType": "name", "identityHash": "Self", "hashed": False}
    ]
    assert independently_verified(document)


def test_accept_application_vc_returns_the_vc_media_type(member_client, member, held):
    response = member_client.get(_url(member), HTTP_ACCEPT="application/vc")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/vc"
    assert independently_verified(json.loads(response.content))


def _container(document, path):
    for key in path[:-1]:
        document = document[key]
    return document, path[-1]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("name",), "Brand ambassador"),
        (("validFrom",), "2020-01-01T00:00:00Z"),
        (("validUntil",), "2099-01-01T00:00:00Z"),
        (("id",), "urn:uuid:00000000-0000-4000-8000-000000000000"),
        (("issuer", "name"), "Another brand"),
        (("credentialSubject", "id"), "urn:uuid:00000000-0000-4000-8000-000000000001"),
        (("credentialSubject", "achievement", "id"), "urn:loyalty:achievement:certification:x"),
        (("credentialSubject", "achievement", "name"), "Brand ambassador"),
        (("credentialStatus", "id"), "https://evil.example/verify"),
        (("@context",), ["https://www.w3.org/ns/credentials/v2"]),
        (("extra",), "added"),
    ],
)
def test_changing_any_field_fails_both_checks(
    member_client, anonymous_client, member, held, path, value
):
    document = member_client.get(_url(member)).json()
    container, key = _container(document, path)
    container[key] = value

    result = anonymous_client.post(VERIFY_URL, document, format="json")

    assert not independently_verified(document)
    assert result.status_code == 200
    body = result.json()
    assert (body["verified"], body["signature_valid"], body["revoked"], body["expired"]) == (
        False,
        False,
        None,
        None,
    )
    assert body["errors"][0]["code"] in {"signature_invalid", "context_mismatch"}


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("created", "2020-01-01T00:00:00Z", "signature_invalid"),
        ("proofPurpose", "authentication", "proof_unsupported"),
        ("verificationMethod", "https://evil.example/#key", "unknown_key"),
        ("proofValue", None, "signature_invalid"),
    ],
)
def test_changing_the_proof_fails_both_checks(
    member_client, anonymous_client, member, held, field, value, code
):
    document = member_client.get(_url(member)).json()
    proof_value = document["proof"]["proofValue"]
    document["proof"][field] = value or proof_value[:-2] + (
        "22" if proof_value[-2:] != "22" else "33"
    )

    body = anonymous_client.post(VERIFY_URL, document, format="json").json()

    assert not independently_verified(document)
    assert (body["verified"], body["signature_valid"]) == (False, False)
    assert [error["code"] for error in body["errors"]] == [code]


def test_a_credential_signed_by_another_key_fails_both_checks(
    member_client, anonymous_client, member, held
):
    genuine = member_client.get(_url(member)).json()
    unsecured = {key: value for key, value in genuine.items() if key != "proof"}
    forged = proof_add(
        unsecured,
        private_key=Ed25519PrivateKey.generate(),
        verification_method=genuine["proof"]["verificationMethod"],
        created=timezone.now(),
    )

    body = anonymous_client.post(VERIFY_URL, forged, format="json").json()

    assert not independently_verified(forged)
    assert (body["verified"], body["signature_valid"]) == (False, False)
    assert [error["code"] for error in body["errors"]] == ["signature_invalid"]


# --- Verification ---------------------------------------------------------------------------


def test_anonymous_verification_of_a_genuine_credential(
    member_client, anonymous_client, member, held
):
    document = member_client.get(_url(member)).json()

    response = anonymous_client.post(VERIFY_URL, document, format="json")

    assert response.status_code == 200
    assert response.json() == {
        "verified": True,
        "signature_valid": True,
        "revoked": False,
        "expired": False,
        "credential_id": document["id"],
        "errors": [],
    }


def test_the_vc_api_wrapper_and_the_vc_media_type_are_accepted(
    member_client, anonymous_client, member, held
):
    document = member_client.get(_url(member)).json()

    wrapped = anonymous_client.post(VERIFY_URL, {"verifiableCredential": document}, format="json")
    as_vc = anonymous_client.post(VERIFY_URL, json.dumps(document), content_type="application/vc")

    assert wrapped.json()["verified"] is True
    assert as_vc.json()["verified"] is True


def test_a_revoked_certification_is_reported_revoked(member_client, anonymous_client, member, held):
    document = member_client.get(_url(member)).json()
    certification_revoke(
        member=member, code="onboarding", reason="Fraud", actor=system_actor("t"), at=timezone.now()
    )

    body = anonymous_client.post(VERIFY_URL, document, format="json").json()

    assert independently_verified(document)
    assert (body["verified"], body["signature_valid"], body["revoked"], body["expired"]) == (
        False,
        True,
        True,
        False,
    )
    assert [error["code"] for error in body["errors"]] == ["revoked"]


def test_a_credential_of_a_holding_granted_afresh_after_revocation_stays_revoked(
    member_client, anonymous_client, member, held
):
    old = member_client.get(_url(member)).json()
    actor = system_actor("t")
    certification_revoke(
        member=member, code="onboarding", reason="x", actor=actor, at=timezone.now()
    )
    with time_machine.travel(timezone.now() + timedelta(seconds=5)):
        certification_grant(member=member, code="onboarding", actor=actor, at=timezone.now())
        new = member_client.get(_url(member)).json()

        old_body = anonymous_client.post(VERIFY_URL, old, format="json").json()
        new_body = anonymous_client.post(VERIFY_URL, new, format="json").json()

    assert (old_body["verified"], old_body["revoked"]) == (False, True)
    assert (new_body["verified"], new_body["revoked"]) == (True, False)
    assert new["id"] != old["id"]


def test_an_expired_certification_is_reported_expired(
    member_client, anonymous_client, member, held
):
    document = member_client.get(_url(member)).json()

    with time_machine.travel(held.expires_at + timedelta(seconds=1)):
        body = anonymous_client.post(VERIFY_URL, document, format="json").json()

    assert (body["verified"], body["signature_valid"], body["revoked"], body["expired"]) == (
        False,
        True,
        False,
        True,
    )
    assert [error["code"] for error in body["errors"]] == ["expired"]


def test_a_renewal_keeps_the_old_credential_valid_until_its_own_expiry(
    member_client, anonymous_client, member, held
):
    old = member_client.get(_url(member)).json()
    CertificationGrant.objects.filter(pk=held.pk).update(
        expires_at=held.expires_at + timedelta(days=365), updated_at=timezone.now()
    )

    now_body = anonymous_client.post(VERIFY_URL, old, format="json").json()
    with time_machine.travel(held.expires_at + timedelta(seconds=1)):
        later_body = anonymous_client.post(VERIFY_URL, old, format="json").json()

    assert now_body["verified"] is True
    assert (later_body["verified"], later_body["expired"], later_body["revoked"]) == (
        False,
        True,
        False,
    )


def test_an_erased_holder_is_reported_revoked(member_client, anonymous_client, member, held):
    document = member_client.get(_url(member)).json()
    member.erased_at = timezone.now()
    member.save(update_fields=["erased_at"])

    body = anonymous_client.post(VERIFY_URL, document, format="json").json()

    assert (body["verified"], body["signature_valid"], body["revoked"]) == (False, True, True)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "parse_error"),
        (b"[1, 2]", "application/json", 400, "parse_error"),
        (b'"a string"', "application/json", 400, "parse_error"),
        (b'{"a": 1, "a": 2}', "application/json", 400, "parse_error"),
        (b'{"a": NaN}', "application/json", 400, "parse_error"),
        (b"\xff\xfe", "application/json", 400, "parse_error"),
        (b"[" * 50 + b"]" * 50, "application/json", 400, "parse_error"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "application/json", 400, "parse_error"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 413, "request_too_large"),
        (b'{"a": "' + b"x" * 70_000 + b'"}', "application/json", 413, "request_too_large"),
        (b"a=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
    ids=[
        "malformed",
        "array",
        "string",
        "duplicate-keys",
        "nan",
        "not-utf8",
        "deep-array",
        "deep-object",
        "deep-and-large",
        "large",
        "form",
    ],
)
def test_bad_bodies_are_problems_never_500(anonymous_client, body, content_type, status, code):
    response = anonymous_client.generic("POST", VERIFY_URL, body, content_type=content_type)

    assert_problem(response, status, code)


def test_a_json_object_that_is_not_a_credential_is_not_verified(anonymous_client):
    body = anonymous_client.post(VERIFY_URL, {"hello": "world"}, format="json").json()

    assert (body["verified"], body["signature_valid"], body["credential_id"]) == (
        False,
        False,
        None,
    )
    assert [error["code"] for error in body["errors"]] == ["proof_missing"]


def test_anonymous_verification_is_throttled(settings, anonymous_client):
    assert CredentialVerificationView.throttle_classes == (ClientRateThrottle,)
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "anonymous": "2/min",
        },
    }

    statuses = [
        anonymous_client.post(VERIFY_URL, {"a": 1}, format="json").status_code for _ in range(3)
    ]

    assert statuses == [200, 200, 429]
    assert_problem(anonymous_client.post(VERIFY_URL, {"a": 1}, format="json"), 429, "throttled")


# --- Access ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "status"),
    [
        ("anonymous", 401),
        ("member (self)", 200),
        ("other member", 404),
        ("operator with view_certificationgrant", 200),
        ("operator without permission", 403),
        ("partner with members:read", 200),
        ("partner without members:read", 403),
    ],
)
def test_access_to_a_member_credential(
    role, status, member, other_member, certify, make_operator_client, make_partner
):
    certify(member, "onboarding")
    certify(other_member, "onboarding")
    clients = {
        "anonymous": APIClient,
        "member (self)": lambda: _bearer(member_token_pair(member.pk)["access"]),
        "other member": lambda: _bearer(member_token_pair(other_member.pk)["access"]),
        "operator with view_certificationgrant": lambda: make_operator_client(
            "rewards.view_certificationgrant"
        ),
        "operator without permission": make_operator_client,
        "partner with members:read": lambda: make_partner("A", [Scope.MEMBERS_READ])[1],
        "partner without members:read": lambda: make_partner("B", [Scope.POINTS_AWARD])[1],
    }

    response = clients[role]().get(_url(member))

    assert response.status_code == status, response.content[:300]
    if status == 200:
        assert independently_verified(response.json())


def _bearer(token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_a_member_cannot_read_another_members_credential(member_client, other_member, certify):
    certify(other_member, "onboarding")

    assert_problem(member_client.get(_url(other_member)), 404, "not_found")


def test_a_certification_never_granted_is_404_and_one_not_held_is_409(
    member_client, member, certify
):
    certify(
        member,
        "onboarding",
        at=timezone.now() - timedelta(days=10),
        expires_at=timezone.now() - timedelta(days=1),
    )

    assert_problem(member_client.get(_url(member, "content-creator")), 404, "not_found")
    assert_problem(member_client.get(_url(member)), 409, "certification_not_held")


# --- Issuer, keys, configuration ------------------------------------------------------------


def test_the_issuer_publishes_its_key_as_multikey_and_jwk(anonymous_client):
    public_key = Ed25519PrivateKey.from_private_bytes(SEED).public_key()
    public = _multibase_public(public_key)

    response = anonymous_client.get(ISSUER_URL)

    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["type"], body["name"]) == (ISSUER_ID, ["Profile"], "Loyalty program")
    assert body["verificationMethod"] == [
        {
            "id": f"{ISSUER_ID}#{public}",
            "type": "Multikey",
            "controller": ISSUER_ID,
            "publicKeyMultibase": public,
        }
    ]
    assert body["assertionMethod"] == [f"{ISSUER_ID}#{public}"]
    jwk = body["jwks"]["keys"][0]
    assert (jwk["kty"], jwk["crv"], jwk["kid"]) == ("OKP", "Ed25519", f"{ISSUER_ID}#{public}")
    assert base64.urlsafe_b64decode(jwk["x"] + "=") == public_key.public_bytes_raw()


def test_a_rotated_key_keeps_old_credentials_verifiable_when_listed_as_retired(
    settings, member_client, anonymous_client, member, held
):
    old = member_client.get(_url(member)).json()
    old_public = _multibase_public(Ed25519PrivateKey.from_private_bytes(SEED).public_key())
    settings.LOYALTY_CREDENTIAL_SIGNING_KEY = base64.b64encode(bytes(32)).decode()

    before_listing = anonymous_client.post(VERIFY_URL, old, format="json").json()
    settings.LOYALTY_CREDENTIAL_RETIRED_PUBLIC_KEYS = [old_public]
    after_listing = anonymous_client.post(VERIFY_URL, old, format="json").json()
    new = member_client.get(_url(member)).json()

    assert [error["code"] for error in before_listing["errors"]] == ["unknown_key"]
    assert after_listing["verified"] is True
    assert new["proof"]["verificationMethod"] != old["proof"]["verificationMethod"]
    assert anonymous_client.post(VERIFY_URL, new, format="json").json()["verified"] is True


def test_production_without_a_key_answers_503_not_configured(
    settings, member_client, anonymous_client, member, held
):
    settings.DEBUG = False
    settings.LOYALTY_CREDENTIAL_SIGNING_KEY = ""

    assert_problem(member_client.get(_url(member)), 503, "credentials_not_configured")
    assert_problem(anonymous_client.get(ISSUER_URL), 503, "credentials_not_configured")
    assert_problem(
        anonymous_client.post(VERIFY_URL, {"a": 1}, format="json"),
        503,
        "credentials_not_configured",
    )


def test_a_malformed_key_answers_503_not_configured(settings, member_client, member, held):
    settings.LOYALTY_CREDENTIAL_SIGNING_KEY = "not-a-key"

    assert_problem(member_client.get(_url(member)), 503, "credentials_not_configured")


def test_the_demo_without_a_key_signs_with_a_key_derived_from_secret_key(
    settings, member_client, anonymous_client, member, held
):
    settings.DEBUG = True
    settings.LOYALTY_CREDENTIAL_SIGNING_KEY = ""
    demo_seed = hashlib.sha256(
        b"loyalty-credential-demo-key:" + settings.SECRET_KEY.encode()
    ).digest()
    demo_public = Ed25519PrivateKey.from_private_bytes(demo_seed).public_key()

    document = member_client.get(_url(member)).json()

    assert independently_verified(document, demo_public)
    assert document["proof"]["verificationMethod"].endswith(_multibase_public(demo_public))
    assert anonymous_client.post(VERIFY_URL, document, format="json").json()["verified"] is True


def test_the_key_command_prints_a_usable_key(settings, member_client, member, held):
    out, err = io.StringIO(), io.StringIO()

    call_command("create_credential_key", stdout=out, stderr=err)

    env_line, public_line = out.getvalue().splitlines()
    name, _, value = env_line.partition("=")
    assert name == "LOYALTY_CREDENTIAL_SIGNING_KEY"
    assert value.startswith("z3u2")
    public = public_line.removeprefix("# publicKeyMultibase: ")
    assert public.startswith("z6Mk")
    settings.LOYALTY_CREDENTIAL_SIGNING_KEY = value
    document = member_client.get(_url(member)).json()
    assert document["proof"]["verificationMethod"] == f"{ISSUER_ID}#{public}"
    raw = _base58_to_bytes(public[1:])
    assert raw[:2] == b"\xed\x01"
    assert independently_verified(document, Ed25519PublicKey.from_public_bytes(raw[2:]))
    assert "shown once" in err.getvalue()


def _base58_to_bytes(text):
    number = 0
    for character in text:
        number = number * 58 + BASE58.index(character)
    return number.to_bytes(34, "big")


def test_export_and_verification_read_a_fixed_number_of_rows(
    member_client, anonymous_client, member, held, django_assert_num_queries
):
    with django_assert_num_queries(2):  # the member, the grant with its certification
        document = member_client.get(_url(member)).json()

    with django_assert_num_queries(1):  # the grant with the holder's erasure
        assert anonymous_client.post(VERIFY_URL, document, format="json").json()["verified"]
