"""The pure parts of verifiable credentials: JCS canonicalisation, base58-btc, keys, building
and proofs. No database."""

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rewards import credentials
from rewards.credentials import (
    AchievementClaim,
    CanonicalizationError,
    base58btc_decode,
    base58btc_encode,
    canonical_json,
    credential_build,
    proof_add,
    proof_check,
    public_key_from_multibase,
    public_key_multibase,
    signing_key_encode,
    signing_key_parse,
)

SEED = bytes(range(32))
AT = datetime(2026, 3, 1, 8, 30, 15, 123456, tzinfo=UTC)


def test_canonical_json_sorts_keys_by_utf16_code_units_as_rfc_8785_section_3_2_3():
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }

    keys = list(json.loads(canonical_json(value)))

    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": [1, True, None], "a": "x"}, b'{"a":"x","b":[1,true,null]}'),
        ({"s": '\u20ac\n\t"\\\x0f\x7f'}, '{"s":"\u20ac\\n\\t\\"\\\\\\u000f\x7f"}'.encode()),
        ({"n": -0}, b'{"n":0}'),
        ({"n": 3.0}, b'{"n":3}'),
        ([], b"[]"),
        ({}, b"{}"),
        ({"nested": {"z": {}, "a": []}}, b'{"nested":{"a":[],"z":{}}}'),
    ],
)
def test_canonical_json_writes_the_subset_credentials_use(value, expected):
    assert canonical_json(value) == expected


@pytest.mark.parametrize("value", [1.5, 2**53, -(2**53), "\ud800", {"k": float("nan")}])
def test_canonical_json_refuses_what_it_cannot_write_exactly(value):
    with pytest.raises(CanonicalizationError):
        canonical_json(value)


@pytest.mark.parametrize(
    ("data", "encoded"),
    [
        (b"", ""),
        (b"Hello World!", "2NEpo7TZRRrLZSi2U"),
        (b"\0\0\x01", "112"),
        (bytes.fromhex("0000287fb4cd"), "11233QC4"),
    ],
)
def test_base58btc_round_trips_with_leading_zeros(data, encoded):
    assert base58btc_encode(data) == encoded
    assert base58btc_decode(encoded) == data


def test_base58btc_refuses_characters_outside_the_alphabet():
    with pytest.raises(ValueError, match="Not base58"):
        base58btc_decode("0OIl")


def test_a_public_key_is_a_multikey_z6mk_value_that_round_trips():
    public_key = Ed25519PrivateKey.from_private_bytes(SEED).public_key()

    encoded = public_key_multibase(public_key)

    assert encoded.startswith("z6Mk")
    assert public_key_from_multibase(encoded).public_bytes_raw() == public_key.public_bytes_raw()


@pytest.mark.parametrize(
    "text",
    [
        signing_key_encode(SEED),
        base64.b64encode(SEED).decode(),
        base64.urlsafe_b64encode(SEED).decode(),
        f"  {base64.b64encode(SEED).decode()}\n",
    ],
    ids=["secretKeyMultibase", "base64", "base64url", "surrounding-space"],
)
def test_the_signing_key_setting_accepts_multibase_and_base64_seeds(text):
    assert signing_key_parse(text).private_bytes_raw() == SEED


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a key",
        base64.b64encode(SEED[:31]).decode(),
        base64.b64encode(SEED).decode().rstrip("="),
        "z" + base58btc_encode(SEED),
    ],
    ids=["empty", "garbage", "31-bytes", "base64-unpadded", "multibase-without-prefix"],
)
def test_a_malformed_signing_key_is_refused(text):
    with pytest.raises(ValueError, match="LOYALTY_CREDENTIAL_SIGNING_KEY"):
        signing_key_parse(text)


def test_generated_keys_are_distinct_and_parse_back():
    first_secret, first_public = credentials.key_generate()
    second_secret, _ = credentials.key_generate()

    assert first_secret != second_secret
    parsed = signing_key_parse(first_secret)
    assert public_key_multibase(parsed.public_key()) == first_public


def _claim(**changes):
    fields = {
        "kind": "certification",
        "code": "content-creator",
        "name": "Content creator",
        "description": "Creates content.",
        "achievement_type": "Certification",
        "member_id": UUID("0190f0e0-0000-7000-8000-000000000001"),
        "valid_from": AT,
        "valid_until": AT + timedelta(days=365),
        "revision_at": AT,
    }
    return AchievementClaim(**(fields | changes))


def _build(claim):
    return credential_build(
        claim=claim,
        issuer_id="https://api.example.com/api/v1/credentials/issuer/",
        issuer_name="Brand",
        status_url="https://api.example.com/api/v1/credentials/verifications/",
    )


def test_the_credential_is_an_open_badge_credential_without_personal_data():
    document = _build(_claim())

    assert document == {
        "@context": [
            "https://www.w3.org/ns/credentials/v2",
            "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json",
        ],
        "id": document["id"],
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "issuer": {
            "id": "https://api.example.com/api/v1/credentials/issuer/",
            "type": ["Profile"],
            "name": "Brand",
        },
        "name": "Content creator",
        "validFrom": "2026-03-01T08:30:15Z",
        "validUntil": "2027-03-01T08:30:15Z",
        "credentialSubject": {
            "id": "urn:uuid:0190f0e0-0000-7000-8000-000000000001",
            "type": ["AchievementSubject"],
            "achievement": {
                "id": "urn:loyalty:achievement:certification:content-creator",
                "type": ["Achievement"],
                "achievementType": "Certification",
                "name": "Content creator",
                "description": "Creates content.",
                "criteria": {"narrative": "Creates content."},
            },
        },
        "credentialStatus": {
            "id": "https://api.example.com/api/v1/credentials/verifications/",
            "type": "LoyaltyCredentialVerification",
        },
    }
    assert document["id"].startswith("urn:uuid:")


def test_the_credential_id_is_stable_per_holding_and_changes_with_its_revision():
    first = _build(_claim())["id"]

    assert _build(_claim())["id"] == first
    assert _build(_claim(revision_at=AT + timedelta(days=1)))["id"] != first
    assert _build(_claim(code="onboarding"))["id"] != first


def test_a_holder_name_is_written_as_a_plain_identity_object():
    document = _build(_claim(holder_name="Ada", valid_until=None))

    assert "validUntil" not in document
    assert document["credentialSubject"]["identifier"] == [
        {"type": "IdentityObject", "identityType": "name", "identityHash": "Ada", "hashed": False}
    ]


def _independent_hash_data(document):
    options = {key: value for key, value in document["proof"].items() if key != "proofValue"}
    unsecured = {key: value for key, value in document.items() if key != "proof"}

    def jcs(value):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    return hashlib.sha256(jcs(options)).digest() + hashlib.sha256(jcs(unsecured)).digest()


def test_the_proof_follows_eddsa_jcs_2022_and_checks_with_the_key():
    private_key = Ed25519PrivateKey.from_private_bytes(SEED)
    method = "https://issuer.example/#" + public_key_multibase(private_key.public_key())

    signed = proof_add(
        _build(_claim()), private_key=private_key, verification_method=method, created=AT
    )

    proof = signed["proof"]
    assert {key: value for key, value in proof.items() if key != "proofValue"} == {
        "type": "DataIntegrityProof",
        "cryptosuite": "eddsa-jcs-2022",
        "created": "2026-03-01T08:30:15Z",
        "verificationMethod": method,
        "proofPurpose": "assertionMethod",
        "@context": signed["@context"],
    }
    signature = base58btc_decode(proof["proofValue"].removeprefix("z"))
    private_key.public_key().verify(signature, _independent_hash_data(signed))
    assert proof_check(signed, public_keys={method: private_key.public_key()}) == []


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda d: d.pop("proof"), "proof_missing"),
        (lambda d: d.update(proof=[d["proof"]]), "proof_missing"),
        (lambda d: d["proof"].update(cryptosuite="eddsa-rdfc-2022"), "proof_unsupported"),
        (lambda d: d["proof"].update(verificationMethod="did:key:z6Mk#x"), "unknown_key"),
        (lambda d: d["proof"].update(proofValue="not-multibase"), "proof_value_malformed"),
        (lambda d: d["proof"].update(proofValue="z" + "1" * 20), "signature_invalid"),
        (lambda d: d.update(score=1.5), "not_canonicalizable"),
        (lambda d: d.update({"@context": ["https://example.org/other"]}), "context_mismatch"),
        (lambda d: d.update(name="Brand ambassador"), "signature_invalid"),
    ],
)
def test_a_changed_document_or_proof_fails_the_check(change, code):
    private_key = Ed25519PrivateKey.from_private_bytes(SEED)
    method = "https://issuer.example/#key"
    signed = proof_add(
        _build(_claim()), private_key=private_key, verification_method=method, created=AT
    )

    change(signed)

    problems = proof_check(signed, public_keys={method: private_key.public_key()})
    assert [problem.code for problem in problems] == [code]


@pytest.mark.parametrize(
    "proof",
    [
        None,
        "a string",
        {"type": ["DataIntegrityProof"]},
        {"type": "DataIntegrityProof", "cryptosuite": "eddsa-jcs-2022"},
        {
            "type": "DataIntegrityProof",
            "cryptosuite": "eddsa-jcs-2022",
            "proofPurpose": "assertionMethod",
            "verificationMethod": ["https://issuer.example/#key"],
        },
        {
            "type": "DataIntegrityProof",
            "cryptosuite": "eddsa-jcs-2022",
            "proofPurpose": "assertionMethod",
            "verificationMethod": "https://issuer.example/#key",
            "proofValue": 12,
            "@context": "https://www.w3.org/ns/credentials/v2",
        },
        {
            "type": "DataIntegrityProof",
            "cryptosuite": "eddsa-jcs-2022",
            "proofPurpose": "assertionMethod",
            "verificationMethod": "https://issuer.example/#key",
            "proofValue": 12,
        },
    ],
    ids=["null", "string", "type-list", "no-purpose", "method-list", "context-string", "value-int"],
)
def test_a_proof_of_any_shape_is_refused_without_raising(proof):
    private_key = Ed25519PrivateKey.from_private_bytes(SEED)
    document = {**_build(_claim()), "proof": proof}

    problems = proof_check(
        document, public_keys={"https://issuer.example/#key": private_key.public_key()}
    )

    assert len(problems) >= 1
