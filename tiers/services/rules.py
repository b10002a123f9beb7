"""Tier rule versions: drafting, editing a draft, publishing with an effective time.

A published version is never edited (history refers to it); a change is a new draft, simulated
against the population, then published.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Max

from core.actors import Actor
from core.exceptions import ConflictError, InvalidInputError
from tiers.evaluation import Requirement, Rules, TierPolicy, rules_problems
from tiers.models import RequirementPurpose, RuleSet, RuleSetStatus, TierRequirement, TierRule
from tiers.selectors import rule_set_get, rule_set_in_force, rules_compile, tier_list

# A publication may name an effective time slightly in the past (clock skew between the
# operator's client and the server), never rewrite a day of history.
_PUBLISH_SKEW = timedelta(minutes=5)


class RuleSetNotDraftError(ConflictError):
    code = "rule_set_published"
    title = "A published rule version cannot be changed; draft a new version"


@dataclass(frozen=True, slots=True)
class TierRuleInput:
    tier: str
    nomination_only: bool
    grace_days: int
    entry: Sequence[Requirement]
    maintenance: Sequence[Requirement]


def rules_check(*, tier_rules: Sequence[TierRuleInput]) -> Rules:
    """The rules as the evaluation reads them, or InvalidInputError listing every problem."""
    tiers = {tier.code: tier for tier in tier_list()}
    problems = [f"{rule.tier}: unknown tier." for rule in tier_rules if rule.tier not in tiers]
    seen: set[str] = set()
    for rule in tier_rules:
        if rule.tier in seen:
            problems.append(f"{rule.tier}: listed twice.")
        seen.add(rule.tier)
    if problems:
        raise _invalid(problems)
    given = {rule.tier: rule for rule in tier_rules}
    rules = Rules(
        tiers=tuple(
            TierPolicy(
                code=tier.code,
                rank=tier.rank,
                nomination_only=given[tier.code].nomination_only if tier.code in given else False,
                grace_days=given[tier.code].grace_days if tier.code in given else 0,
                entry=tuple(given[tier.code].entry) if tier.code in given else (),
                maintenance=tuple(given[tier.code].maintenance) if tier.code in given else (),
            )
            for tier in tiers.values()
        )
    )
    problems = rules_problems(rules)
    for tier in tiers.values():
        if tier.rank > 0 and tier.code not in given:
            problems.append(
                f"{tier.code}: no rule given (every tier above the lowest needs one, "
                "nomination-only if nobody should reach it automatically)."
            )
    if problems:
        raise _invalid(problems)
    return rules


def _invalid(problems: list[str]) -> InvalidInputError:
    return InvalidInputError(
        "The tier rules are not valid: " + " ".join(problems),
        errors=[{"attr": "tiers", "code": "invalid_rules", "detail": p} for p in problems],
    )


def rule_set_draft_create(
    *,
    actor: Actor,
    at: datetime,
    name: str = "",
    note: str = "",
    based_on: RuleSet | None = None,
    tier_rules: Sequence[TierRuleInput] | None = None,
) -> RuleSet:
    """A new draft version: the given rules, or a copy of ``based_on`` (default: the version in
    force), ready to edit and simulate."""
    with transaction.atomic():
        if tier_rules is None:
            source = based_on or rule_set_in_force(at=at)
            rules = rules_compile(
                rule_set=rule_set_get(rule_set_id=source.pk) if source is not None else None
            )
            tier_rules = [
                TierRuleInput(p.code, p.nomination_only, p.grace_days, p.entry, p.maintenance)
                for p in rules.tiers
                if p.rank > 0
            ]
        rules_check(tier_rules=tier_rules)
        # The version number is the next one; a concurrent draft racing for it fails on the
        # unique constraint and is reported as a conflict.
        version = (RuleSet.objects.aggregate(top=Max("version"))["top"] or 0) + 1
        try:
            with transaction.atomic():
                rule_set = RuleSet.objects.create(
                    version=version, name=name, note=note, created_by=actor.label, created_at=at
                )
        except IntegrityError:
            raise ConflictError("Another version was drafted at the same time; retry.") from None
        _rows_write(rule_set, tier_rules)
    return rule_set_get(rule_set_id=rule_set.pk)


def rule_set_draft_update(
    *,
    rule_set: RuleSet,
    actor: Actor,
    name: str | None = None,
    note: str | None = None,
    tier_rules: Sequence[TierRuleInput] | None = None,
) -> RuleSet:
    """Edit a draft: its name, note, and (when given) all of its tier rules at once."""
    with transaction.atomic():
        locked = RuleSet.objects.select_for_update().get(pk=rule_set.pk)
        if not locked.is_draft:
            raise RuleSetNotDraftError()
        if tier_rules is not None:
            rules_check(tier_rules=tier_rules)
            locked.tier_rules.all().delete()
            locked.requirements.all().delete()
            _rows_write(locked, tier_rules)
        if name is not None:
            locked.name = name
        if note is not None:
            locked.note = note
        locked.save(update_fields=["name", "note"])
    return rule_set_get(rule_set_id=rule_set.pk)


def rule_set_check(*, rule_set: RuleSet) -> list[str]:
    """Problems of a stored version (as the admin shows them before publishing)."""
    stored = rule_set_get(rule_set_id=rule_set.pk)
    ruled = {rule.tier_id for rule in stored.tier_rules.all()}
    rules = rules_compile(rule_set=stored)
    try:
        rules_check(
            tier_rules=[
                TierRuleInput(p.code, p.nomination_only, p.grace_days, p.entry, p.maintenance)
                for p in rules.tiers
                if p.code in ruled or p.entry or p.maintenance
            ]
        )
    except InvalidInputError as error:
        return [item["detail"] for item in error.errors]
    return []


def rule_set_publish(
    *, rule_set: RuleSet, effective_at: datetime | None, actor: Actor, at: datetime
) -> RuleSet:
    """Publish a draft: from ``effective_at`` (default now) it is the version in force."""
    effective_at = effective_at or at
    if effective_at < at - _PUBLISH_SKEW:
        raise InvalidInputError(
            "The effective time cannot be in the past: it would rewrite history.",
            errors=[{"attr": "effective_at", "code": "in_past", "detail": "Must not be past."}],
        )
    with transaction.atomic():
        locked = RuleSet.objects.select_for_update().get(pk=rule_set.pk)
        if not locked.is_draft:
            raise RuleSetNotDraftError()
        problems = rule_set_check(rule_set=locked)
        if problems:
            raise _invalid(problems)
        locked.status = RuleSetStatus.PUBLISHED
        locked.effective_at = effective_at
        locked.published_at = at
        locked.published_by = actor.label
        try:
            with transaction.atomic():
                locked.save(
                    update_fields=["status", "effective_at", "published_at", "published_by"]
                )
        except IntegrityError:
            raise ConflictError(
                "Another version takes effect at exactly this time; choose another."
            ) from None
    return rule_set_get(rule_set_id=rule_set.pk)


def rule_set_delete(*, rule_set: RuleSet) -> None:
    """Delete a draft (published versions stay: history refers to them)."""
    with transaction.atomic():
        locked = RuleSet.objects.select_for_update().get(pk=rule_set.pk)
        if not locked.is_draft:
            raise RuleSetNotDraftError()
        locked.delete()


def _rows_write(rule_set: RuleSet, tier_rules: Sequence[TierRuleInput]) -> None:
    TierRule.objects.bulk_create(
        TierRule(
            rule_set=rule_set,
            tier_id=rule.tier,
            nomination_only=rule.nomination_only,
            grace_days=rule.grace_days,
        )
        for rule in tier_rules
    )
    TierRequirement.objects.bulk_create(
        TierRequirement(
            rule_set=rule_set,
            tier_id=rule.tier,
            purpose=purpose,
            metric=requirement.metric,
            window_days=None if requirement.is_certification else requirement.window_days,
            minimum=requirement.minimum,
            certification=requirement.certification,
        )
        for rule in tier_rules
        for purpose, requirements in (
            (RequirementPurpose.ENTRY, rule.entry),
            (RequirementPurpose.MAINTENANCE, rule.maintenance),
        )
        for requirement in requirements
    )
