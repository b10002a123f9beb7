"""Verifiable honor: a member's certification, badge or title as an Open Badges 3.0 credential (a W3C Verifiable
Credential 2.0 document) secured by a Data Integrity proof with the ``eddsa-jcs-2022``
cryptosuite, and the public verification of such a document.

The proof follows the cryptosuite's steps: the proof options (the proof without
``proofValue``, carrying the document's ``@context``) and the document without its proof are
each canonicalised with JCS (RFC 8785) and hashed with SHA-256; the Ed25519 signature covers
``sha256(options) || sha256(document)`` and is written as multibase base58-btc (``z...``).
The verification method is ``<issuer id>#<publicKeyMultibase>``, published by the issuer
endpoint, so anyone can check a credential with the public key alone.

The canonicaliser, base58-btc and the builder are pure; the database is read only to load the
grant or award being exported and, on verification, to see whether it is still held. The
achievement is an ``AchievementClaim`` (kind, code, holder, dates); each kind (certification,
badge) is one claim loader and one hold check (``_HOLD_CHECKS``). Titles are badges
(``Badge.is_title``): same kind, same hold check, only their ``achievementType`` differs.
"""

import base64
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.conf import settings
from django.urls import reverse

from core.exceptions import ConflictError, DomainError, NotFoundError
from members.models import Member
from rewards.models import CertificationGrant, MemberBadge
from rewards.selectors import member_badges_list, member_certification_get

logger = logging.getLogger(__name__)

VC_CONTEXT = "https://www.w3.org/ns/credentials/v2"
OB_CONTEXT = "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"
CREDENTIAL_CONTEXT = (VC_CONTEXT, OB_CONTEXT)
MULTIKEY_CONTEXT = "https://w3id.org/security/multikey/v1"
PROOF_TYPE = "DataIntegrityProof"
CRYPTOSUITE = "eddsa-jcs-2022"
PROOF_PURPOSE = "assertionMethod"
STATUS_TYPE = "LoyaltyCredentialVerification"
CERTIFICATION = "certification"
BADGE = "badge"
# OB 3.0 achievementType (an extensible enumeration): a badge is a "Badge"; a title, a rank the
# programme confers on the member and shows beside their name, is an "Award" ("recognition of
# an accomplishment"), the closest term in the vocabulary.
BADGE_ACHIEVEMENT_TYPE = "Badge"
TITLE_ACHIEVEMENT_TYPE = "Award"

# Multicodec prefixes (varint) of Ed25519 keys in Multikey encodings.
_ED25519_PUBLIC_PREFIX = b"\xed\x01"
_ED25519_PRIVATE_PREFIX = b"\x80\x26"
_SEED_BYTES = 32
# Credential ids are UUIDv5 in this namespace over (issuer, kind, member, code, revision).
_CREDENTIAL_NAMESPACE = UUID("5b0d3c1e-8f0a-4c55-9a43-7c7a9d3f2b61")
_ACHIEVEMENT_PREFIX = "urn:loyalty:achievement:"
_DEV_KEY_LABEL = b"loyalty-credential-demo-key:"


class CredentialsNotConfiguredError(DomainError):
    code = "credentials_not_configured"
    status = 503
    title = "Verifiable credentials are not configured"
    replayable = False


class CredentialUnavailableError(ConflictError):
    code = "certification_not_held"
    title = "The certification is not held: there is nothing to attest"


class BadgeCredentialUnavailableError(ConflictError):
    code = "badge_not_held"
    title = "The badge is not held: there is nothing to attest"


class CanonicalizationError(ValueError):
    """The value is outside the JSON this canonicaliser supports (floats, lone surrogates)."""


# --- JCS (RFC 8785) for the JSON subset credentials use --------------------------------------

_MAX_SAFE_INTEGER = 2**53


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical UTF-8 bytes: keys sorted by UTF-16 code units, no whitespace, strings
    escaped as ECMAScript's JSON.stringify does. Numbers must be integers within the
    IEEE-754-safe range (the documents built here have none; others fail cleanly).

    :raises CanonicalizationError: for other numbers or strings that are not valid Unicode.
    """
    parts: list[str] = []
    _canonical_into(value, parts)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as error:
        raise CanonicalizationError("A string is not valid Unicode.") from error


def _canonical_number(value: float) -> str:
    if isinstance(value, float) and not value.is_integer():
        raise CanonicalizationError("Only integral numbers are supported.")
    number = int(value)
    if abs(number) >= _MAX_SAFE_INTEGER:
        raise CanonicalizationError("Numbers beyond 2**53 are not supported.")
    return str(number)


def _canonical_into(value: Any, parts: list[str]) -> None:
    if value is None or isinstance(value, bool):
        parts.append({None: "null", True: "true", False: "false"}[value])
    elif isinstance(value, int | float):
        parts.append(_canonical_number(value))
    elif isinstance(value, str):
        # Python's escaping with ensure_ascii off matches JSON.stringify: \" \\ \b \f \n \r \t
        # and \u00xx (lowercase) for the other control characters, everything else literal.
        parts.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, list | tuple):
        parts.append("[")
        for index, item in enumerate(value):
            if index:
                parts.append(",")
            _canonical_into(item, parts)
        parts.append("]")
    elif isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise CanonicalizationError("Object keys must be strings.")
        parts.append("{")
        keys = sorted(value, key=lambda key: key.encode("utf-16-be", "surrogatepass"))
        for index, key in enumerate(keys):
            if index:
                parts.append(",")
            parts.append(json.dumps(key, ensure_ascii=False))
            parts.append(":")
            _canonical_into(value[key], parts)
        parts.append("}")
    else:
        raise CanonicalizationError(f"Unsupported JSON value {type(value).__name__}.")


# --- Multibase base58-btc --------------------------------------------------------------------

_BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_INDEX = {character: index for index, character in enumerate(_BASE58_ALPHABET)}


def base58btc_encode(data: bytes) -> str:
    """Bitcoin's base58 (leading zero bytes become ``1``s), without the multibase ``z``."""
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, remainder = divmod(number, 58)
        digits.append(_BASE58_ALPHABET[remainder])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(digits))


def base58btc_decode(text: str) -> bytes:
    """:raises ValueError: on a character outside the alphabet."""
    number = 0
    for character in text:
        if character not in _BASE58_INDEX:
            raise ValueError(f"Not base58: {character!r}.")
        number = number * 58 + _BASE58_INDEX[character]
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * zeros + body


def multibase_decode(text: str) -> bytes:
    """Decode a base58-btc multibase string (``z`` prefix).

    :raises ValueError: for another base or a malformed value.
    """
    if not text.startswith("z"):
        raise ValueError("Only base58-btc multibase (z...) is supported.")
    return base58btc_decode(text[1:])


# --- Keys ------------------------------------------------------------------------------------


def public_key_multibase(public_key: Ed25519PublicKey) -> str:
    """The Multikey ``publicKeyMultibase``: ``z`` + base58btc(0xed01 + 32-byte key), "z6Mk..."."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "z" + base58btc_encode(_ED25519_PUBLIC_PREFIX + raw)


def public_key_from_multibase(text: str) -> Ed25519PublicKey:
    """:raises ValueError: when it is not an Ed25519 ``publicKeyMultibase``."""
    decoded = multibase_decode(text)
    if len(decoded) != _SEED_BYTES + 2 or not decoded.startswith(_ED25519_PUBLIC_PREFIX):
        raise ValueError("Not an Ed25519 publicKeyMultibase.")
    return Ed25519PublicKey.from_public_bytes(decoded[2:])


def public_key_jwk(public_key: Ed25519PublicKey, *, key_id: str) -> dict[str, str]:
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii"),
        "kid": key_id,
        "alg": "EdDSA",
        "use": "sig",
    }


def signing_key_encode(seed: bytes) -> str:
    """The seed as a Multikey ``secretKeyMultibase`` ("z3u2..."), the form the key command
    prints for ``LOYALTY_CREDENTIAL_SIGNING_KEY``."""
    return "z" + base58btc_encode(_ED25519_PRIVATE_PREFIX + seed)


def signing_key_parse(text: str) -> Ed25519PrivateKey:
    """The private key from the setting: a ``secretKeyMultibase`` (z + 0x8026 + seed) or the
    32-byte seed in base64 (standard or URL-safe, padded: "...=" tells it from multibase).

    :raises ValueError: when it is neither.
    """
    text = text.strip()
    seed = b""
    if text.startswith("z"):
        try:
            decoded = multibase_decode(text)
        except ValueError:
            decoded = b""
        if len(decoded) == _SEED_BYTES + 2 and decoded.startswith(_ED25519_PRIVATE_PREFIX):
            seed = decoded[2:]
    if not seed:
        try:
            seed = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
        except ValueError:
            seed = b""
    if len(seed) != _SEED_BYTES:
        raise ValueError(
            "LOYALTY_CREDENTIAL_SIGNING_KEY must be a secretKeyMultibase (z3u2...) or the "
            "base64 of a 32-byte Ed25519 seed."
        )
    return Ed25519PrivateKey.from_private_bytes(seed)


def key_generate() -> tuple[str, str]:
    """A new signing key: (the setting's value, the public key multibase)."""
    private_key = Ed25519PrivateKey.generate()
    seed = private_key.private_bytes_raw()
    return signing_key_encode(seed), public_key_multibase(private_key.public_key())


@lru_cache(maxsize=4)
def _signing_key_from(configured: str, secret_key: str, debug: bool) -> Ed25519PrivateKey:
    if configured:
        try:
            return signing_key_parse(configured)
        except ValueError:
            logger.error("LOYALTY_CREDENTIAL_SIGNING_KEY is malformed; credentials are off.")
            raise CredentialsNotConfiguredError(
                "The credential signing key is malformed; credentials cannot be issued or "
                "verified until an operator fixes LOYALTY_CREDENTIAL_SIGNING_KEY."
            ) from None
    if debug:
        # Demo only: anyone who knows SECRET_KEY can sign as this issuer.
        seed = hashlib.sha256(_DEV_KEY_LABEL + secret_key.encode("utf-8")).digest()
        return Ed25519PrivateKey.from_private_bytes(seed)
    raise CredentialsNotConfiguredError(
        "No credential signing key is configured (LOYALTY_CREDENTIAL_SIGNING_KEY)."
    )


def _signing_key() -> Ed25519PrivateKey:
    """The issuer's key from settings; in DEBUG without one, a demo key derived from SECRET_KEY.

    :raises CredentialsNotConfiguredError: outside DEBUG without a (well-formed) key.
    """
    return _signing_key_from(
        settings.LOYALTY_CREDENTIAL_SIGNING_KEY, settings.SECRET_KEY, settings.DEBUG
    )


# --- The issuer ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Issuer:
    id: str
    name: str
    verification_method: str
    private_key: Ed25519PrivateKey
    # Every key whose signatures verify, by verification method id: the current key first,
    # then retired keys (LOYALTY_CREDENTIAL_RETIRED_PUBLIC_KEYS).
    public_keys: dict[str, Ed25519PublicKey]
    status_url: str


def _absolute(path: str) -> str:
    return settings.LOYALTY_CREDENTIAL_BASE_URL.rstrip("/") + path


def issuer_get() -> Issuer:
    """The issuer from settings.

    :raises CredentialsNotConfiguredError: outside DEBUG without a signing key.
    """
    private_key = _signing_key()
    issuer_id = settings.LOYALTY_CREDENTIAL_ISSUER["id"] or _absolute(
        reverse("v1:credential-issuer")
    )
    current = public_key_multibase(private_key.public_key())
    public_keys = {f"{issuer_id}#{current}": private_key.public_key()}
    for retired in settings.LOYALTY_CREDENTIAL_RETIRED_PUBLIC_KEYS:
        try:
            public_keys.setdefault(f"{issuer_id}#{retired}", public_key_from_multibase(retired))
        except ValueError:
            logger.warning("Ignoring a malformed retired credential key: %s", retired)
    return Issuer(
        id=issuer_id,
        name=settings.LOYALTY_CREDENTIAL_ISSUER["name"],
        verification_method=f"{issuer_id}#{current}",
        private_key=private_key,
        public_keys=public_keys,
        status_url=_absolute(reverse("v1:credential-verifications")),
    )


def issuer_document() -> dict[str, Any]:
    """The issuer's Open Badges Profile, also a controller document listing its keys (Multikey
    and JWK) so third parties can check proofs without this service.

    :raises CredentialsNotConfiguredError: outside DEBUG without a signing key.
    """
    issuer = issuer_get()
    return {
        "@context": [*CREDENTIAL_CONTEXT, MULTIKEY_CONTEXT],
        "id": issuer.id,
        "type": ["Profile"],
        "name": issuer.name,
        "verificationMethod": [
            {
                "id": method_id,
                "type": "Multikey",
                "controller": issuer.id,
                "publicKeyMultibase": method_id.rpartition("#")[2],
            }
            for method_id in issuer.public_keys
        ],
        "assertionMethod": [issuer.verification_method],
        "jwks": {
            "keys": [
                public_key_jwk(public_key, key_id=method_id)
                for method_id, public_key in issuer.public_keys.items()
            ]
        },
        "verificationService": issuer.status_url,
        "cryptosuite": CRYPTOSUITE,
    }


# --- Building and signing (pure) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AchievementClaim:
    """What a credential attests: a member holds an achievement (a certification; badges and
    titles are other kinds) from ``valid_from``, until ``valid_until`` if set. ``revision_at``
    changes whenever the holding does (re-certification), which changes the credential id."""

    kind: str
    code: str
    name: str
    description: str
    achievement_type: str
    member_id: UUID
    valid_from: datetime
    valid_until: datetime | None
    revision_at: datetime
    # The member's display name, only when they opted into public recognition.
    holder_name: str | None = None


def timestamp(at: datetime) -> str:
    """XML Schema dateTimeStamp in UTC at whole seconds, as VC 2.0 writes dates."""
    return at.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def achievement_id(kind: str, code: str) -> str:
    return f"{_ACHIEVEMENT_PREFIX}{kind}:{code}"


def credential_build(
    *, claim: AchievementClaim, issuer_id: str, issuer_name: str, status_url: str
) -> dict[str, Any]:
    """The unsigned OpenBadgeCredential for a claim."""
    credential_id = uuid.uuid5(
        _CREDENTIAL_NAMESPACE,
        "|".join(
            (issuer_id, claim.kind, str(claim.member_id), claim.code, claim.revision_at.isoformat())
        ),
    )
    subject: dict[str, Any] = {
        "id": f"urn:uuid:{claim.member_id}",
        "type": ["AchievementSubject"],
        "achievement": {
            "id": achievement_id(claim.kind, claim.code),
            "type": ["Achievement"],
            "achievementType": claim.achievement_type,
            "name": claim.name,
            "description": claim.description or claim.name,
            "criteria": {"narrative": claim.description or f"Awarded {claim.name}."},
        },
    }
    if claim.holder_name:
        subject["identifier"] = [
            {
                "type": "IdentityObject",
                "identityType": "name",
                "identityHash": claim.holder_name,
                "hashed": False,
            }
        ]
    document: dict[str, Any] = {
        "@context": list(CREDENTIAL_CONTEXT),
        "id": f"urn:uuid:{credential_id}",
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "issuer": {"id": issuer_id, "type": ["Profile"], "name": issuer_name},
        "name": claim.name,
        "validFrom": timestamp(claim.valid_from),
        "credentialSubject": subject,
        "credentialStatus": {"id": status_url, "type": STATUS_TYPE},
    }
    if claim.valid_until is not None:
        document["validUntil"] = timestamp(claim.valid_until)
    return document


def _hash_data(unsecured: Mapping[str, Any], proof_options: Mapping[str, Any]) -> bytes:
    # eddsa-jcs-2022: sha256(JCS(proof options)) || sha256(JCS(document without proof)).
    return (
        hashlib.sha256(canonical_json(proof_options)).digest()
        + hashlib.sha256(canonical_json(unsecured)).digest()
    )


def proof_add(
    document: Mapping[str, Any],
    *,
    private_key: Ed25519PrivateKey,
    verification_method: str,
    created: datetime,
) -> dict[str, Any]:
    """The document with a DataIntegrityProof (eddsa-jcs-2022) over it."""
    unsecured = {key: value for key, value in document.items() if key != "proof"}
    options: dict[str, Any] = {
        "type": PROOF_TYPE,
        "cryptosuite": CRYPTOSUITE,
        "created": timestamp(created),
        "verificationMethod": verification_method,
        "proofPurpose": PROOF_PURPOSE,
    }
    if "@context" in unsecured:
        options["@context"] = unsecured["@context"]
    signature = private_key.sign(_hash_data(unsecured, options))
    return {**unsecured, "proof": {**options, "proofValue": "z" + base58btc_encode(signature)}}


@dataclass(frozen=True, slots=True)
class Problem:
    code: str
    detail: str


def proof_check(
    document: Mapping[str, Any], *, public_keys: Mapping[str, Ed25519PublicKey]
) -> list[Problem]:
    """Check the document's eddsa-jcs-2022 proof against the given keys (by verification
    method id). Empty when the signature is valid."""
    proof = document.get("proof")
    if not isinstance(proof, dict):
        return [Problem("proof_missing", "The document has no single proof object.")]
    expected = {"type": PROOF_TYPE, "cryptosuite": CRYPTOSUITE, "proofPurpose": PROOF_PURPOSE}
    wrong = [key for key, value in expected.items() if proof.get(key) != value]
    if wrong:
        return [Problem("proof_unsupported", f"Expected {key} {expected[key]!r}.") for key in wrong]
    method = proof.get("verificationMethod")
    public_key = public_keys.get(method) if isinstance(method, str) else None
    if public_key is None:
        return [Problem("unknown_key", "The proof's verificationMethod is not this issuer's.")]
    options = {key: value for key, value in proof.items() if key != "proofValue"}
    unsecured = {key: value for key, value in document.items() if key != "proof"}
    if "@context" in options:
        context = unsecured.get("@context")
        proof_context = options["@context"]
        if not isinstance(context, list) or not isinstance(proof_context, list):
            return [Problem("context_mismatch", "@context must be a list.")]
        if context[: len(proof_context)] != proof_context:
            return [
                Problem("context_mismatch", "The proof's @context differs from the document's.")
            ]
        unsecured["@context"] = proof_context
    proof_value = proof.get("proofValue")
    try:
        signature = multibase_decode(proof_value if isinstance(proof_value, str) else "")
        hash_data = _hash_data(unsecured, options)
    except CanonicalizationError as error:
        return [Problem("not_canonicalizable", str(error))]
    except ValueError:
        return [Problem("proof_value_malformed", "proofValue is not base58-btc multibase.")]
    try:
        public_key.verify(signature, hash_data)
    except (InvalidSignature, ValueError):
        return [Problem("signature_invalid", "The signature does not match the document.")]
    return []


# --- Export ----------------------------------------------------------------------------------


def _certification_claim(grant: CertificationGrant, member: Member) -> AchievementClaim:
    certification = grant.certification
    return AchievementClaim(
        kind=CERTIFICATION,
        code=certification.code,
        name=certification.name,
        description=certification.description,
        achievement_type="Certification",
        member_id=member.pk,
        valid_from=grant.granted_at,
        valid_until=grant.expires_at,
        revision_at=grant.updated_at,
        holder_name=member.display_name if member.public_recognition else None,
    )


def _signed(claim: AchievementClaim, at: datetime) -> dict[str, Any]:
    issuer = issuer_get()
    document = credential_build(
        claim=claim, issuer_id=issuer.id, issuer_name=issuer.name, status_url=issuer.status_url
    )
    return proof_add(
        document,
        private_key=issuer.private_key,
        verification_method=issuer.verification_method,
        created=at,
    )


def certification_credential_get(*, member: Member, code: str, at: datetime) -> dict[str, Any]:
    """The member's held certification as a signed OpenBadgeCredential (two queries).

    :raises NotFoundError: when the member was never granted it.
    :raises CredentialUnavailableError: when it is revoked or expired, or the member erased.
    :raises CredentialsNotConfiguredError: outside DEBUG without a signing key.
    """
    grant = member_certification_get(member=member, code=code, at=at)
    if grant.status != "held" or member.is_erased:
        raise CredentialUnavailableError(
            f"The certification is {grant.status if grant.status != 'held' else 'unavailable'}: "
            "only a held certification can be exported."
        )
    return _signed(_certification_claim(grant, member), at)


def _badge_claim(award: MemberBadge, member: Member) -> AchievementClaim:
    badge = award.badge
    return AchievementClaim(
        kind=BADGE,
        code=badge.code,
        name=badge.name,
        description=badge.description,
        achievement_type=TITLE_ACHIEVEMENT_TYPE if badge.is_title else BADGE_ACHIEVEMENT_TYPE,
        member_id=member.pk,
        valid_from=award.awarded_at,
        # Badges and titles do not expire: they stand until the award is withdrawn.
        valid_until=None,
        revision_at=award.awarded_at,
        holder_name=member.display_name if member.public_recognition else None,
    )


def badge_credential_get(*, member: Member, code: str, at: datetime) -> dict[str, Any]:
    """The member's badge or title as a signed OpenBadgeCredential (two queries).

    :raises NotFoundError: when the member does not hold it (or its definition is inactive).
    :raises BadgeCredentialUnavailableError: when the member is erased.
    :raises CredentialsNotConfiguredError: outside DEBUG without a signing key.
    """
    award = member_badges_list(member=member).filter(badge_id=code).first()
    if award is None:
        raise NotFoundError("The member does not hold this badge.")
    if member.is_erased:
        raise BadgeCredentialUnavailableError(
            "The member is erased: only a held badge can be exported."
        )
    return _signed(_badge_claim(award, member), at)


# --- Verification ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Holding:
    """What the database says now about the holding a credential attests."""

    valid_from: datetime
    valid_until: datetime | None
    revoked: bool
    holder_erased: bool


def _certification_holding(member_id: UUID, code: str) -> Holding | None:
    # A private read (one query): the grant's dates and the holder's erasure.
    row = (
        CertificationGrant.objects.filter(member_id=member_id, certification_id=code)
        .values_list("granted_at", "expires_at", "revoked_at", "member__erased_at")
        .first()
    )
    if row is None:
        return None
    granted_at, expires_at, revoked_at, erased_at = row
    return Holding(granted_at, expires_at, revoked_at is not None, erased_at is not None)


def _badge_holding(member_id: UUID, code: str) -> Holding | None:
    # One query: the award (withdrawing a badge deletes its row) and the holder's erasure.
    row = (
        MemberBadge.objects.filter(member_id=member_id, badge_id=code)
        .values_list("awarded_at", "member__erased_at")
        .first()
    )
    if row is None:
        return None
    awarded_at, erased_at = row
    return Holding(awarded_at, None, False, erased_at is not None)


# One hold check per achievement kind (titles are badges).
_HOLD_CHECKS: dict[str, Callable[[UUID, str], Holding | None]] = {
    CERTIFICATION: _certification_holding,
    BADGE: _badge_holding,
}


@dataclass(frozen=True, slots=True)
class CredentialVerification:
    verified: bool
    signature_valid: bool
    # None when not checked: the signature is invalid, so the document's claims mean nothing.
    revoked: bool | None
    expired: bool | None
    credential_id: str | None
    errors: list[Problem] = field(default_factory=list)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _attested(document: Mapping[str, Any]) -> tuple[str, UUID, str] | None:
    """(kind, member id, code) from a signed document, or None when it is not one of ours."""
    subject = document.get("credentialSubject")
    if not isinstance(subject, dict):
        return None
    achievement = subject.get("achievement")
    subject_id = subject.get("id")
    if not isinstance(achievement, dict) or not isinstance(subject_id, str):
        return None
    reference = achievement.get("id")
    if not isinstance(reference, str) or not reference.startswith(_ACHIEVEMENT_PREFIX):
        return None
    kind, _, code = reference.removeprefix(_ACHIEVEMENT_PREFIX).partition(":")
    try:
        member_id = UUID(subject_id.removeprefix("urn:uuid:"))
    except ValueError:
        return None
    return kind, member_id, code


def credential_verify(*, document: Mapping[str, Any], at: datetime) -> CredentialVerification:
    """Check a credential: the signature with this issuer's keys (current or retired), then
    whether the holding it attests still stands (not revoked, not expired, not superseded by a
    later grant). Two queries at most.

    :raises CredentialsNotConfiguredError: outside DEBUG without a signing key.
    """
    issuer = issuer_get()
    credential_id = document.get("id") if isinstance(document.get("id"), str) else None
    problems = proof_check(document, public_keys=issuer.public_keys)
    if problems:
        return CredentialVerification(False, False, None, None, credential_id, problems)

    issuer_field = document.get("issuer")
    issuer_id = issuer_field.get("id") if isinstance(issuer_field, dict) else issuer_field
    attested = _attested(document)
    valid_from = _parse_time(document.get("validFrom"))
    valid_until = _parse_time(document.get("validUntil"))
    if issuer_id != issuer.id:
        problems.append(Problem("issuer_mismatch", "The credential names another issuer."))
    if attested is None or attested[0] not in _HOLD_CHECKS or valid_from is None:
        problems.append(Problem("unknown_achievement", "The credential attests nothing known."))
        return CredentialVerification(False, True, None, None, credential_id, problems)

    kind, member_id, code = attested
    holding = _HOLD_CHECKS[kind](member_id, code)
    revoked = (
        holding is None
        or holding.revoked
        or holding.holder_erased
        # Granted (or awarded) afresh after this credential's holding ended.
        or timestamp(holding.valid_from) != timestamp(valid_from)
    )
    expired = (valid_until is not None and valid_until <= at) or (
        holding is not None and holding.valid_until is not None and holding.valid_until <= at
    )
    if revoked:
        problems.append(Problem("revoked", "The holding this credential attests was revoked."))
    if expired:
        problems.append(Problem("expired", "The credential or its holding has expired."))
    if valid_from > at:
        problems.append(Problem("not_yet_valid", "validFrom is in the future."))
    return CredentialVerification(
        verified=not problems,
        signature_valid=True,
        revoked=revoked,
        expired=expired,
        credential_id=credential_id,
        errors=problems,
    )
