"""Certifications (the capability rung): granting with evidence, re-certifying, revoking, and the
daily expiry. Each change reassesses the member's tier after commit and writes an outbox event."""

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from core.actors import Actor
from core.broker import enqueue_on_commit
from core.db import chunked, require_transaction
from core.events import DomainEvent, domain_event_record, domain_events_record
from core.exceptions import ConflictError, InvalidInputError
from core.read_cache import member_reads_changed
from members.models import Member
from rewards.models import Certification, CertificationGrant
from rewards.services.honors import CERTIFICATION, badges_award_automatic


class PrerequisiteMissingError(ConflictError):
    code = "prerequisite_missing"
    title = "The member lacks a prerequisite certification"


class NotCertifiedError(ConflictError):
    code = "not_certified"
    title = "The member does not hold this certification"


def _reassess_after_commit(member_ids: list[UUID], trigger: str) -> None:
    from tiers.tasks import reassess_members_task

    if member_ids:
        enqueue_on_commit(
            partial(
                reassess_members_task.delay,
                member_ids=[str(member_id) for member_id in member_ids],
                trigger=trigger,
            ),
            what="the members' tier reassessment",
        )


def _certification_get(code: str) -> Certification:
    certification = Certification.objects.filter(pk=code, is_active=True).first()
    if certification is None:
        raise InvalidInputError(
            f"No active certification {code!r}.",
            errors=[{"attr": "certification", "code": "unknown", "detail": code}],
        )
    return certification


def _held(grant: CertificationGrant | None, at: datetime) -> bool:
    return (
        grant is not None
        and grant.revoked_at is None
        and (grant.expires_at is None or grant.expires_at > at)
    )


@dataclass(frozen=True, slots=True)
class GrantResult:
    grant: CertificationGrant
    renewed: bool


def certification_grant(
    *,
    member: Member,
    code: str,
    actor: Actor,
    at: datetime,
    evidence: str = "",
    expires_at: datetime | None = None,
) -> GrantResult:
    """Certify a member. Prerequisites must be held. Granting a held certification again
    re-certifies: the validity is extended (never shortened); a revoked or expired one is granted
    afresh. ``expires_at`` defaults to the certification's validity."""
    certification = _certification_get(code)
    if expires_at is None and certification.validity_days:
        expires_at = at + timedelta(days=certification.validity_days)
    if expires_at is not None and expires_at <= at:
        raise InvalidInputError(
            "expires_at must be in the future.",
            errors=[{"attr": "expires_at", "code": "in_past", "detail": "Must be in the future."}],
        )
    prerequisites = list(certification.prerequisites.values_list("code", flat=True))
    with transaction.atomic():
        # One grant row per member and certification: lock it (or its absence, by the member)
        # so concurrent grants of the same certification serialise.
        Member.objects.select_for_update().filter(pk=member.pk).values_list("pk").first()
        if prerequisites:
            held = set(
                CertificationGrant.objects.filter(
                    Q(member=member, certification_id__in=prerequisites, revoked_at__isnull=True)
                    & (Q(expires_at__isnull=True) | Q(expires_at__gt=at))
                ).values_list("certification_id", flat=True)
            )
            missing = sorted(set(prerequisites) - held)
            if missing:
                raise PrerequisiteMissingError(
                    f"{code} requires {', '.join(missing)} first.",
                    errors=[
                        {"attr": "certification", "code": "prerequisite_missing", "detail": m}
                        for m in missing
                    ],
                )
        grant = CertificationGrant.objects.filter(
            member=member, certification=certification
        ).first()
        renewed = _held(grant, at)
        if grant is None:
            grant = CertificationGrant.objects.create(
                member=member,
                certification=certification,
                granted_at=at,
                expires_at=expires_at,
                evidence=evidence,
                granted_by=actor.label,
                updated_at=at,
            )
        else:
            if renewed:
                # Re-certification extends; a later expiry or none at all wins.
                if grant.expires_at is not None and (
                    expires_at is None or expires_at > grant.expires_at
                ):
                    grant.expires_at = expires_at
            else:
                grant.granted_at = at
                grant.expires_at = expires_at
                grant.revoked_at = None
                grant.revoked_by = ""
                grant.revoke_reason = ""
            grant.evidence = evidence or grant.evidence
            grant.granted_by = actor.label
            grant.updated_at = at
            grant.save()
        domain_event_record(
            event_type="certification.granted",
            aggregate_id=str(member.pk),
            payload={
                "member_id": str(member.pk),
                "external_id": member.external_id,
                "certification": code,
                "renewed": renewed,
                "expires_at": grant.expires_at.isoformat() if grant.expires_at else None,
            },
            at=at,
        )
        _reassess_after_commit([member.pk], "certification")
        badges_award_automatic(member_ids=[member.pk], at=at, rule_kinds=(CERTIFICATION,))
    return GrantResult(grant=grant, renewed=renewed)


def certification_revoke(
    *, member: Member, code: str, reason: str, actor: Actor, at: datetime
) -> CertificationGrant:
    """Revoke a held certification (kept, with who and why). The tier follows by the rules:
    a tier that required it is lost after its grace period."""
    if not reason.strip():
        raise InvalidInputError(
            "A reason is required.",
            errors=[{"attr": "reason", "code": "required", "detail": "A reason is required."}],
        )
    with transaction.atomic():
        grant = (
            CertificationGrant.objects.select_for_update()
            .filter(member=member, certification_id=code)
            .first()
        )
        if not _held(grant, at):
            raise NotCertifiedError(f"The member does not hold {code}.")
        assert grant is not None  # noqa: S101 - _held checked it
        grant.revoked_at = at
        grant.revoked_by = actor.label
        grant.revoke_reason = reason.strip()[:500]
        grant.updated_at = at
        grant.save(update_fields=["revoked_at", "revoked_by", "revoke_reason", "updated_at"])
        domain_event_record(
            event_type="certification.revoked",
            aggregate_id=str(member.pk),
            payload={
                "member_id": str(member.pk),
                "external_id": member.external_id,
                "certification": code,
                "reason": grant.revoke_reason,
            },
            at=at,
        )
        _reassess_after_commit([member.pk], "certification")
    return grant


def certifications_expire(
    *, at: datetime, chunk_size: int | None = None, progress: Callable[[int], None] | None = None
) -> int:
    """Announce the certifications that expired by ``at`` (once each: the event's dedupe key is
    the grant and its expiry) and reassess their members. Set-based, in chunks."""
    chunk_size = chunk_size or settings.LOYALTY_JOB_CHUNK_SIZE
    lookback = at - timedelta(days=settings.LOYALTY_CERTIFICATION_EXPIRY_LOOKBACK_DAYS)
    rows = list(
        CertificationGrant.objects.filter(
            revoked_at__isnull=True, expires_at__lte=at, expires_at__gt=lookback
        )
        .select_related("member")
        .order_by("pk")
        .values_list("pk", "member_id", "member__external_id", "certification_id", "expires_at")
    )
    for batch in chunked(rows, chunk_size):
        with transaction.atomic():
            domain_events_record(
                events=[
                    DomainEvent(
                        "certification.expired",
                        str(member_id),
                        {
                            "member_id": str(member_id),
                            "external_id": external_id,
                            "certification": code,
                            "expired_at": expires_at.isoformat(),
                        },
                        expires_at,
                        dedupe_key=f"{grant_id}:{expires_at.isoformat()}",
                    )
                    for grant_id, member_id, external_id, code, expires_at in batch
                ],
                at=at,
            )
            _reassess_after_commit(sorted({row[1] for row in batch}), "certification_expired")
            member_reads_changed([row[1] for row in batch])
        if progress:
            progress(len(batch))
    return len(rows)


# --- Many members at once (bulk operations) -----------------------------------------------------

GRANT_GRANTED = "granted"
GRANT_ALREADY_HELD = "already_held"
GRANT_PREREQUISITE_MISSING = "prerequisite_missing"


def certification_grant_validate(
    *, code: str, at: datetime, expires_at: datetime | None = None
) -> Certification:
    """The active certification ``code``, checked as ``certification_grant`` checks its input.

    :raises InvalidInputError: for an unknown or inactive certification or a past ``expires_at``.
    """
    certification = _certification_get(code)
    if expires_at is not None and expires_at <= at:
        raise InvalidInputError(
            "expires_at must be in the future.",
            errors=[{"attr": "expires_at", "code": "in_past", "detail": "Must be in the future."}],
        )
    return certification


def _prerequisites_missing(
    certification: Certification, *, member_ids: list[UUID], at: datetime
) -> dict[UUID, tuple[str, str]]:
    """The members lacking a prerequisite of ``certification`` (one query), with what they lack."""
    prerequisites = set(certification.prerequisites.values_list("code", flat=True))
    if not prerequisites:
        return {}
    held: dict[UUID, set[str]] = defaultdict(set)
    for member_id, held_code in CertificationGrant.objects.filter(
        Q(member_id__in=member_ids, certification_id__in=prerequisites, revoked_at__isnull=True)
        & (Q(expires_at__isnull=True) | Q(expires_at__gt=at))
    ).values_list("member_id", "certification_id"):
        held[member_id].add(held_code)
    outcomes = {}
    for member_id in member_ids:
        missing = sorted(prerequisites - held[member_id])
        if missing:
            outcomes[member_id] = (
                GRANT_PREREQUISITE_MISSING,
                f"{certification.code} requires {', '.join(missing)} first.",
            )
    return outcomes


def certifications_grant_batch(
    *,
    member_ids: Sequence[UUID],
    code: str,
    actor: Actor,
    at: datetime,
    evidence: str = "",
    expires_at: datetime | None = None,
) -> dict[UUID, tuple[str, str]]:
    """Certify many members at once, set-based, in the caller's transaction. Returns each found
    member's ``(outcome, detail)``: ``granted`` (afresh when revoked or expired), ``already_held``
    (left as it is: a bulk grant never extends) or ``prerequisite_missing``. A fixed number of
    queries whatever the number of members.

    :raises InvalidInputError: for an unknown or inactive certification or a past ``expires_at``.
    """
    require_transaction()
    certification = certification_grant_validate(code=code, at=at, expires_at=expires_at)
    if expires_at is None and certification.validity_days:
        expires_at = at + timedelta(days=certification.validity_days)
    wanted = sorted(set(member_ids))
    # The members' rows, in id order, as certification_grant locks its one member: concurrent
    # grants of the same members serialise and cannot deadlock.
    external_ids = dict(
        Member.objects.select_for_update()
        .filter(pk__in=wanted)
        .order_by("pk")
        .values_list("pk", "external_id")
    )
    outcomes = _prerequisites_missing(certification, member_ids=list(external_ids), at=at)
    existing = {
        grant.member_id: grant
        for grant in CertificationGrant.objects.filter(
            member_id__in=wanted, certification=certification
        )
    }
    created: list[CertificationGrant] = []
    refreshed: list[CertificationGrant] = []
    granted: list[UUID] = []
    for member_id in external_ids:
        if member_id in outcomes:
            continue
        grant = existing.get(member_id)
        if _held(grant, at):
            outcomes[member_id] = (GRANT_ALREADY_HELD, "")
            continue
        if grant is None:
            created.append(
                CertificationGrant(
                    member_id=member_id,
                    certification=certification,
                    granted_at=at,
                    expires_at=expires_at,
                    evidence=evidence,
                    granted_by=actor.label,
                    updated_at=at,
                )
            )
        else:
            grant.granted_at, grant.expires_at = at, expires_at
            grant.revoked_at, grant.revoked_by, grant.revoke_reason = None, "", ""
            grant.evidence = evidence or grant.evidence
            grant.granted_by, grant.updated_at = actor.label, at
            refreshed.append(grant)
        outcomes[member_id] = (GRANT_GRANTED, "")
        granted.append(member_id)
    member_reads_changed(granted)
    if created:
        CertificationGrant.objects.bulk_create(created)
    if refreshed:
        CertificationGrant.objects.bulk_update(
            refreshed,
            [
                "granted_at",
                "expires_at",
                "revoked_at",
                "revoked_by",
                "revoke_reason",
                "evidence",
                "granted_by",
                "updated_at",
            ],
        )
    if granted:
        domain_events_record(
            events=[
                DomainEvent(
                    "certification.granted",
                    str(member_id),
                    {
                        "member_id": str(member_id),
                        "external_id": external_ids[member_id],
                        "certification": code,
                        "renewed": False,
                        "expires_at": expires_at.isoformat() if expires_at else None,
                    },
                    at,
                )
                for member_id in granted
            ],
            at=at,
        )
        _reassess_after_commit(granted, "certification")
        badges_award_automatic(member_ids=granted, at=at, rule_kinds=(CERTIFICATION,))
    return outcomes
