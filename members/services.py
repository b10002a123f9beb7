"""Writes of members, identities and tags. Views, admin, commands and tasks call these."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, transaction

from core.actors import Actor, ActorKind
from core.exceptions import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from core.models import SYSTEM_NAMESPACE, Partner
from core.read_cache import member_reads_changed
from members.models import (
    ActivityEvent,
    Identity,
    Member,
    MemberTag,
    TagCategory,
    TagChange,
    TagChangeAction,
    TagSource,
)
from members.selectors import member_ids_by_external_id


class MemberExistsError(ConflictError):
    code = "member_exists"
    title = "A member with this external_id already exists"


class IdentityTakenError(ConflictError):
    code = "identity_taken"
    title = "An identity is already linked to another member"


class NamespaceForbiddenError(ForbiddenError):
    code = "namespace_forbidden"
    title = "You may not write tags in this namespace"


class UnknownNamespaceError(NotFoundError):
    code = "unknown_namespace"
    title = "No such tag namespace"


# --- Members -------------------------------------------------------------------------------------

MEMBER_EDITABLE_FIELDS = frozenset({"display_name", "email", "phone", "public_recognition"})


def member_create(
    *,
    external_id: str,
    display_name: str,
    actor: Actor,
    at: datetime,
    email: str = "",
    phone: str = "",
    joined_at: datetime | None = None,
) -> Member:
    """Register a member at the bottom rung (``basic``) and lifecycle stage ``new``.

    :raises MemberExistsError: when the external_id is taken.
    """
    try:
        with transaction.atomic():
            return Member.objects.create(
                external_id=external_id,
                display_name=display_name,
                email=email,
                phone=phone,
                joined_at=joined_at or at,
                tier_since=at,
                lifecycle_changed_at=at,
                created_at=at,
                updated_at=at,
            )
    except IntegrityError:
        raise MemberExistsError(f"external_id {external_id!r} is already registered.") from None


@transaction.atomic
def member_update(*, member: Member, changes: dict[str, Any], actor: Actor, at: datetime) -> Member:
    """Edit a member's profile; tier, points and lifecycle are never writable here.

    :raises InvalidInputError: for a field that is not editable or an erased member.
    """
    forbidden = sorted(set(changes) - MEMBER_EDITABLE_FIELDS)
    if forbidden:
        raise InvalidInputError(f"Not editable: {', '.join(forbidden)}.")
    if member.is_erased and changes:
        raise InvalidInputError("An erased member's profile cannot be edited.")
    if not changes:
        return member
    for name, value in changes.items():
        setattr(member, name, value)
    member.updated_at = at
    member.save(update_fields=[*changes, "updated_at"])
    return member


@transaction.atomic
def member_erase(*, member: Member, actor: Actor, at: datetime) -> Member:
    """Erase a member's personal data (right to erasure); ledger and history rows stay.

    The external id is replaced by an opaque one, identities and tags are deleted, the login
    account is deactivated and unlinked. Erasing twice changes nothing.
    """
    if member.is_erased:
        return member
    Identity.objects.filter(member=member).delete()
    MemberTag.objects.filter(member=member).delete()
    # Event properties are free-form partner data and may hold personal data; counts stay.
    ActivityEvent.objects.filter(member=member).update(properties={})
    TagChange.objects.filter(member=member).update(old_value=None, new_value=None)
    if member.user_id is not None:
        member.user.is_active = False
        member.user.set_unusable_password()
        member.user.save(update_fields=("is_active", "password"))
    member.external_id = f"erased:{member.pk}"
    member.display_name = "Erased member"
    member.email = ""
    member.phone = ""
    member.user = None
    member.public_recognition = False
    member.erased_at = at
    member.updated_at = at
    member.save()
    return member


class LoginTakenError(ConflictError):
    code = "login_taken"
    title = "This login account belongs to another member"


@transaction.atomic
def member_user_link(
    *, member: Member, user: AbstractBaseUser | None, actor: Actor, at: datetime
) -> Member:
    """Link the member's login account (``None`` unlinks it).

    :raises InvalidInputError: for an erased member or a staff account (staff sign in as operators).
    :raises LoginTakenError: when the account is linked to another member.
    """
    if member.is_erased:
        raise InvalidInputError("An erased member cannot be given a login account.")
    if user is not None and user.is_staff:
        raise InvalidInputError("A staff account signs in as an operator, not as a member.")
    user_id = None if user is None else user.pk
    if member.user_id == user_id:
        return member
    member.user_id = user_id
    member.updated_at = at
    try:
        with transaction.atomic():
            member.save(update_fields=("user", "updated_at"))
    except IntegrityError:
        raise LoginTakenError() from None
    return member


# --- Identities ----------------------------------------------------------------------------------


@transaction.atomic
def identities_replace(
    *, member: Member, identities: Sequence[tuple[str, str]], actor: Actor, at: datetime
) -> list[Identity]:
    """Replace the member's linked identities with exactly ``identities`` (provider, value).

    :raises IdentityTakenError: when one of them belongs to another member (nothing changes).
    :raises InvalidInputError: when the list repeats an identity, or the member is erased.
    """
    if member.is_erased:
        raise InvalidInputError("An erased member cannot link identities.")
    wanted = list(dict.fromkeys(identities))
    if len(wanted) != len(identities):
        raise InvalidInputError("The same identity is listed twice.")
    # Member lock: concurrent replacements of one member's set serialise (else both read the old
    # set and the member ends with the union of theirs).
    Member.objects.select_for_update(no_key=True).filter(pk=member.pk).values_list("pk").first()
    taken_query = Identity.objects.none()
    for provider, value in wanted:
        taken_query |= Identity.objects.filter(provider=provider, value=value)
    taken = sorted(
        taken_query.exclude(member=member).values_list("provider", "value"), key=wanted.index
    )
    if taken:
        raise IdentityTakenError(
            errors=[
                {
                    "attr": f"identities.{wanted.index(pair)}",
                    "pointer": f"#/identities/{wanted.index(pair)}",
                    "code": "identity_taken",
                    "detail": f"{pair[0]}:{pair[1]} is linked to another member.",
                }
                for pair in taken
            ]
        )
    current = {(i.provider, i.value): i for i in Identity.objects.filter(member=member)}
    stale = [identity.pk for pair, identity in current.items() if pair not in set(wanted)]
    Identity.objects.filter(pk__in=stale).delete()
    member_reads_changed([member.pk])
    try:
        with transaction.atomic():
            Identity.objects.bulk_create(
                [
                    Identity(member=member, provider=provider, value=value, created_at=at)
                    for provider, value in wanted
                    if (provider, value) not in current
                ]
            )
    except IntegrityError:  # linked elsewhere by a concurrent request since the check above
        raise IdentityTakenError() from None
    return list(Identity.objects.filter(member=member).order_by("provider", "value"))


# --- Tags ----------------------------------------------------------------------------------------


class TagSyncMode(StrEnum):
    REPLACE = "replace"
    MERGE = "merge"


@dataclass(frozen=True, slots=True)
class TagInput:
    key: str
    value: str = ""
    category: str = TagCategory.CUSTOM
    expires_at: datetime | None = None


@dataclass(slots=True)
class TagSyncItem:
    external_id: str
    tags: Sequence[TagInput]


class TagSyncStatus(StrEnum):
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    NOT_FOUND = "not_found"


@dataclass(slots=True)
class TagSyncResult:
    external_id: str
    status: TagSyncStatus
    member_id: UUID | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)


def namespace_check_writable(*, actor: Actor, namespace: str) -> None:
    """Partners write only their own namespace; nobody but the system writes ``system``.

    :raises NamespaceForbiddenError: when the actor may not write there.
    :raises UnknownNamespaceError: when no partner owns the namespace.
    """
    if actor.is_partner:
        if namespace != actor.partner_namespace:
            raise NamespaceForbiddenError(
                f"A partner writes only its own namespace {actor.partner_namespace!r}."
            )
        return
    if namespace == SYSTEM_NAMESPACE:
        if actor.kind is not ActorKind.SYSTEM:
            raise NamespaceForbiddenError("The system namespace is computed by the API.")
        return
    if not Partner.objects.filter(namespace=namespace).exists():
        raise UnknownNamespaceError(f"No partner owns the namespace {namespace!r}.")


def _tag_state(tag: MemberTag | TagInput) -> dict[str, Any]:
    expires_at = tag.expires_at.isoformat() if tag.expires_at else None
    return {"value": tag.value, "category": str(tag.category), "expires_at": expires_at}


def _write_namespace_tags(
    *,
    desired: dict[UUID, Sequence[TagInput]],
    namespace: str,
    mode: TagSyncMode,
    source: TagSource,
    actor: Actor,
    at: datetime,
) -> set[UUID]:
    """Bring each member's tags in ``namespace`` to ``desired``, set-based. Returns changed ids.

    A constant number of queries whatever the number of members: one read of the current tags,
    then at most one bulk insert, one bulk update, one delete and one audit insert.
    """
    # Member lock, in id order (overlapping syncs cannot deadlock): concurrent writes to the same
    # members' tags serialise here, else two replacements both read the old set and the namespace
    # ends with the union of theirs, and two inserts of one key collide (a 500).
    list(
        Member.objects.select_for_update(no_key=True)
        .filter(pk__in=list(desired))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    existing: dict[UUID, dict[str, MemberTag]] = {member_id: {} for member_id in desired}
    for tag in MemberTag.objects.filter(member_id__in=list(desired), namespace=namespace):
        existing[tag.member_id][tag.key] = tag

    to_create: list[MemberTag] = []
    to_update: list[MemberTag] = []
    to_delete: list[int] = []
    audit: list[TagChange] = []
    changed: set[UUID] = set()

    def record(member_id: UUID, key: str, action: str, old: Any, new: Any) -> None:
        changed.add(member_id)
        audit.append(
            TagChange(
                member_id=member_id,
                namespace=namespace,
                key=key,
                action=action,
                old_value=old,
                new_value=new,
                source=source,
                actor=actor.label,
                created_at=at,
            )
        )

    for member_id, tags in desired.items():
        current = existing[member_id]
        for tag in tags:
            old = current.get(tag.key)
            if old is None:
                to_create.append(
                    MemberTag(
                        member_id=member_id,
                        namespace=namespace,
                        key=tag.key,
                        value=tag.value,
                        category=tag.category,
                        expires_at=tag.expires_at,
                        source=source,
                        written_by=actor.label,
                        synced_at=at,
                        created_at=at,
                    )
                )
                record(member_id, tag.key, TagChangeAction.ADDED, None, _tag_state(tag))
            elif _tag_state(old) != _tag_state(tag):
                before = _tag_state(old)
                old.value, old.category, old.expires_at = tag.value, tag.category, tag.expires_at
                old.source, old.written_by, old.synced_at = source, actor.label, at
                to_update.append(old)
                record(member_id, tag.key, TagChangeAction.UPDATED, before, _tag_state(tag))
        if mode is TagSyncMode.REPLACE:
            keep = {tag.key for tag in tags}
            for key, old in current.items():
                if key not in keep:
                    to_delete.append(old.pk)
                    record(member_id, key, TagChangeAction.REMOVED, _tag_state(old), None)

    if to_delete:
        MemberTag.objects.filter(pk__in=to_delete).delete()
    if to_create:
        MemberTag.objects.bulk_create(to_create)
    if to_update:
        MemberTag.objects.bulk_update(
            to_update, ["value", "category", "expires_at", "source", "written_by", "synced_at"]
        )
    if audit:
        TagChange.objects.bulk_create(audit)
    return changed


def _reject_duplicate_keys(tags: Sequence[TagInput]) -> None:
    keys = [tag.key for tag in tags]
    if len(set(keys)) != len(keys):
        raise InvalidInputError("A tag key is listed twice.")


@transaction.atomic
def tags_replace_namespace(
    *,
    member: Member,
    namespace: str,
    tags: Sequence[TagInput],
    actor: Actor,
    at: datetime,
    source: TagSource = TagSource.API,
) -> bool:
    """Make ``tags`` the member's whole tag set in ``namespace``. Returns whether it changed.

    :raises NamespaceForbiddenError: when the actor may not write the namespace.
    :raises UnknownNamespaceError: when no partner owns the namespace.
    :raises InvalidInputError: when a key repeats or the member is erased.
    """
    namespace_check_writable(actor=actor, namespace=namespace)
    _reject_duplicate_keys(tags)
    if member.is_erased:
        raise InvalidInputError("An erased member cannot be tagged.")
    changed = _write_namespace_tags(
        desired={member.pk: tags},
        namespace=namespace,
        mode=TagSyncMode.REPLACE,
        source=source,
        actor=actor,
        at=at,
    )
    return bool(changed)


@transaction.atomic
def tags_sync(
    *,
    namespace: str,
    mode: TagSyncMode,
    items: Sequence[TagSyncItem],
    actor: Actor,
    at: datetime,
    source: TagSource = TagSource.TAG_SYNC,
) -> list[TagSyncResult]:
    """Bulk tag sync for many members in one namespace; unknown members are reported, not fatal.

    :raises NamespaceForbiddenError: when the actor may not write the namespace.
    :raises UnknownNamespaceError: when no partner owns the namespace.
    :raises InvalidInputError: when the same member appears twice.
    """
    namespace_check_writable(actor=actor, namespace=namespace)
    external_ids = [item.external_id for item in items]
    if len(set(external_ids)) != len(external_ids):
        raise InvalidInputError("A member appears twice in one sync; merge their tags first.")
    member_ids = member_ids_by_external_id(external_ids=external_ids)
    desired = {}
    for item in items:
        if item.external_id in member_ids:
            _reject_duplicate_keys(item.tags)
            desired[member_ids[item.external_id]] = item.tags
    changed = _write_namespace_tags(
        desired=desired, namespace=namespace, mode=mode, source=source, actor=actor, at=at
    )
    results = []
    for item in items:
        member_id = member_ids.get(item.external_id)
        if member_id is None:
            results.append(
                TagSyncResult(
                    external_id=item.external_id,
                    status=TagSyncStatus.NOT_FOUND,
                    errors=[
                        {"code": "unknown_member", "detail": "No member with this external_id."}
                    ],
                )
            )
        else:
            status = TagSyncStatus.UPDATED if member_id in changed else TagSyncStatus.UNCHANGED
            results.append(
                TagSyncResult(external_id=item.external_id, status=status, member_id=member_id)
            )
    return results


def tags_purge_expired(*, at: datetime, batch_size: int = 5000) -> int:
    """Delete tags whose expiry has passed, in bounded batches. Returns how many were deleted."""
    deleted = 0
    while True:
        with transaction.atomic():
            batch = list(
                MemberTag.objects.filter(expires_at__lte=at).values_list("pk", flat=True)[
                    :batch_size
                ]
            )
            if not batch:
                return deleted
            deleted += MemberTag.objects.filter(pk__in=batch).delete()[0]
