"""Operators' promotions and demotions (with an optional pin) and the nomination workflow into
nomination-only tiers: nominate with evidence, review, probation, then the reassessment job
confirms or rolls back (``tiers.evaluation``)."""

from collections.abc import Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F

from core.actors import Actor
from core.events import domain_event_record
from core.exceptions import ConflictError, InvalidInputError, NotFoundError
from core.read_cache import member_reads_changed
from members.models import Member
from rewards.services.honors import REACHED_TIER, badges_award_automatic
from tiers.models import (
    Nomination,
    NominationStatus,
    Tier,
    TierChange,
    TierChangeReason,
)
from tiers.selectors import rules_in_force


class OnProbationError(ConflictError):
    code = "on_probation"
    title = "The member is on a nomination's probation"


class NominationOpenError(ConflictError):
    code = "nomination_open"
    title = "The member already has an open nomination"


class NominationStateError(ConflictError):
    code = "nomination_not_pending"
    title = "The nomination is not awaiting review"


def _tier_get(code: str) -> Tier:
    try:
        return Tier.objects.get(pk=code)
    except Tier.DoesNotExist:
        raise InvalidInputError(
            f"No tier {code!r}.",
            errors=[{"attr": "tier", "code": "unknown_tier", "detail": f"No tier {code!r}."}],
        ) from None


def _member_lock(member_id: object) -> Member:
    # Tier-state lock: promotions, reviews and single-member reassessments of one member queue
    # here; the population job needs no lock (its writes are compare-and-set on tier_version).
    # No join in the locking query: PostgreSQL re-checks a join against the row a concurrent
    # promotion just changed (a new tier_code) and would drop it, answering 404
    # (tests/security/test_races.py).
    member = Member.objects.select_for_update().filter(pk=member_id, erased_at__isnull=True).first()
    if member is None:
        raise NotFoundError("No member with this id.")
    member.tier = Tier.objects.get(pk=member.tier_id)
    return member


def _tier_changed(*, member: Member, from_tier: str, change: TierChange, at: datetime) -> None:
    domain_event_record(
        event_type="member.tier_changed",
        aggregate_id=str(member.pk),
        payload={
            "member_id": str(member.pk),
            "external_id": member.external_id,
            "from_tier": from_tier,
            "to_tier": change.to_tier_id,
            "reason": change.reason,
            "rule_version": None,
            "changed_at": at.isoformat(),
        },
        at=at,
        dedupe_key=f"change:{change.pk}",
    )


def tier_promote(
    *,
    member: Member,
    tier: str,
    reason: str,
    actor: Actor,
    at: datetime,
    pin_days: int | None = None,
) -> TierChange:
    """An operator sets a member's tier (up or down), optionally pinning it for ``pin_days``:
    reassessment never demotes below a pinned tier until the pin ends. Moving the member below
    an existing pin ends that pin. Recorded with the operator and reason."""
    if not reason.strip():
        raise InvalidInputError(
            "A reason is required.",
            errors=[{"attr": "reason", "code": "required", "detail": "A reason is required."}],
        )
    if pin_days is not None and not 1 <= pin_days <= settings.LOYALTY_TIER_MAX_PIN_DAYS:
        raise InvalidInputError(
            f"pin_days must be between 1 and {settings.LOYALTY_TIER_MAX_PIN_DAYS}.",
            errors=[{"attr": "pin_days", "code": "out_of_range", "detail": "Out of range."}],
        )
    target = _tier_get(tier)
    with transaction.atomic():
        locked = _member_lock(member.pk)
        if locked.tier_probation_until is not None:
            raise OnProbationError(
                "The member is on probation after a nomination; it ends on "
                f"{locked.tier_probation_until.isoformat()} (confirmed or rolled back then)."
            )
        before = locked.tier
        if target.pk == before.pk and pin_days is None:
            raise ConflictError(
                f"The member already holds {target.pk}; give pin_days to pin it.",
                errors=[{"attr": "tier", "code": "unchanged", "detail": "Already held."}],
            )
        pin_ends = at + timedelta(days=pin_days) if pin_days is not None else None
        update: dict[str, object] = {
            "tier": target,
            "tier_grace_until": None,
            "tier_version": F("tier_version") + 1,
            "updated_at": at,
        }
        if target.pk != before.pk:
            update["tier_since"] = at
        if pin_ends is not None:
            update.update(tier_pin=target, tier_pinned_until=pin_ends)
        elif locked.tier_pin_id is not None and target.rank < _rank(locked.tier_pin_id):
            update.update(tier_pin=None, tier_pinned_until=None)
        Member.objects.filter(pk=locked.pk).update(**update)
        member_reads_changed([locked.pk])
        change = TierChange.objects.create(
            member=locked,
            from_tier=before,
            to_tier=target,
            reason=(
                TierChangeReason.DEMOTION
                if target.rank < before.rank
                else TierChangeReason.PROMOTION
            ),
            actor=actor.label,
            note=reason.strip()[:500],
            pinned_until=pin_ends,
            details={"reason": reason.strip()[:500], "pin_days": pin_days},
            created_at=at,
        )
        if target.pk != before.pk:
            _tier_changed(member=locked, from_tier=before.pk, change=change, at=at)
            badges_award_automatic(member_ids=[locked.pk], at=at, rule_kinds=(REACHED_TIER,))
    return change


def _rank(code: str) -> int:
    return Tier.objects.values_list("rank", flat=True).get(pk=code)


# --- Nominations ------------------------------------------------------------------------------


def nomination_create(
    *,
    member: Member,
    tier: str,
    evidence: str,
    evidence_urls: Sequence[str],
    actor: Actor,
    at: datetime,
) -> Nomination:
    """Nominate a member into a nomination-only tier above theirs, with evidence."""
    target = _tier_get(tier)
    rules = rules_in_force(at=at)
    if not rules.tier(target.pk).nomination_only:
        raise InvalidInputError(
            f"{target.pk} is reached by the tier rules, not by nomination.",
            errors=[{"attr": "tier", "code": "not_nomination_only", "detail": target.pk}],
        )
    if target.rank <= member.tier.rank:
        raise ConflictError(
            f"The member already holds {member.tier_id}, not below {target.pk}.",
            errors=[{"attr": "tier", "code": "not_above", "detail": member.tier_id}],
        )
    if not evidence.strip():
        raise InvalidInputError(
            "Evidence is required.",
            errors=[{"attr": "evidence", "code": "required", "detail": "Evidence is required."}],
        )
    try:
        with transaction.atomic():
            return Nomination.objects.create(
                member=member,
                tier=target,
                evidence=evidence.strip(),
                evidence_urls=list(evidence_urls),
                nominated_by=actor.label,
                created_at=at,
            )
    except IntegrityError:
        raise NominationOpenError() from None


def nomination_review(
    *,
    nomination: Nomination,
    approve: bool,
    note: str,
    actor: Actor,
    at: datetime,
    probation_days: int | None = None,
) -> Nomination:
    """Approve (the member moves into the tier at once, on probation) or reject a pending
    nomination. Probation ends after ``probation_days`` (default setting): the reassessment
    job confirms it if the tier's maintenance rule holds then, or rolls it back."""
    probation_days = (
        probation_days if probation_days is not None else settings.LOYALTY_TIER_PROBATION_DAYS
    )
    if not 0 <= probation_days <= 366:
        raise InvalidInputError(
            "probation_days must be between 0 and 366.",
            errors=[{"attr": "probation_days", "code": "out_of_range", "detail": "0 to 366."}],
        )
    with transaction.atomic():
        # Lock order: the member's tier state, then the nomination.
        member = _member_lock(nomination.member_id)
        locked = Nomination.objects.select_for_update().get(pk=nomination.pk)
        if locked.status != NominationStatus.PENDING:
            raise NominationStateError(f"The nomination is {locked.get_status_display().lower()}.")
        locked.reviewed_by = actor.label
        locked.reviewed_at = at
        locked.review_note = note.strip()[:500]
        if not approve:
            locked.status = NominationStatus.REJECTED
            locked.save(update_fields=["status", "reviewed_by", "reviewed_at", "review_note"])
            return locked
        if member.tier.rank >= locked.tier.rank:
            raise ConflictError(
                f"The member holds {member.tier_id} already; reject or withdraw the nomination."
            )
        probation_until = at + timedelta(days=probation_days)
        locked.status = NominationStatus.PROBATION
        locked.from_tier_id = member.tier_id
        locked.probation_until = probation_until
        locked.save(
            update_fields=[
                "status",
                "from_tier",
                "probation_until",
                "reviewed_by",
                "reviewed_at",
                "review_note",
            ]
        )
        Member.objects.filter(pk=member.pk).update(
            tier=locked.tier,
            tier_since=at,
            tier_grace_until=None,
            tier_probation_until=probation_until,
            tier_version=F("tier_version") + 1,
            updated_at=at,
        )
        member_reads_changed([member.pk])
        change = TierChange.objects.create(
            member=member,
            from_tier_id=member.tier_id,
            to_tier=locked.tier,
            reason=TierChangeReason.NOMINATION_APPROVED,
            actor=actor.label,
            note=locked.review_note,
            details={"nomination_id": locked.pk, "probation_until": probation_until.isoformat()},
            created_at=at,
        )
        _tier_changed(member=member, from_tier=member.tier_id, change=change, at=at)
        badges_award_automatic(member_ids=[member.pk], at=at, rule_kinds=(REACHED_TIER,))
    return locked


def nomination_withdraw(*, nomination: Nomination, actor: Actor, at: datetime) -> Nomination:
    """Withdraw a nomination still awaiting review."""
    updated = Nomination.objects.filter(pk=nomination.pk, status=NominationStatus.PENDING).update(
        status=NominationStatus.WITHDRAWN, reviewed_by=actor.label, reviewed_at=at
    )
    if not updated:
        raise NominationStateError()
    return Nomination.objects.get(pk=nomination.pk)
