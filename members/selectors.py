"""Reads of members, identities and tags, scoped to what the actor may see."""

from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

from django.db.models import Prefetch, Q, QuerySet

from core.actors import Actor
from core.exceptions import NotFoundError
from members.models import Identity, Member, MemberTag


def member_list_for_actor(*, actor: Actor) -> QuerySet[Member]:
    """Members the actor may see: a member only themselves, operators and partners everyone."""
    queryset = Member.objects.prefetch_related(
        Prefetch("identities", queryset=Identity.objects.order_by("provider", "value"))
    )
    if actor.is_member:
        return queryset.filter(pk=actor.member_id)
    return queryset


def member_get_for_actor(
    *, actor: Actor, member_id: UUID | str, with_identities: bool = True
) -> Member:
    """One member the actor may see (``with_identities=False`` skips the identities prefetch
    for callers that only need the member row).

    :raises NotFoundError: when it does not exist or the actor may not see it (never 403: BOLA).
    """
    queryset = member_list_for_actor(actor=actor)
    if not with_identities:
        queryset = queryset.prefetch_related(None)
    try:
        return queryset.get(pk=member_id)
    except (Member.DoesNotExist, ValueError):
        raise NotFoundError("No member with this id.") from None


def member_tags_list(
    *, member: Member, at: datetime, namespace: str | None = None
) -> QuerySet[MemberTag]:
    """The member's tags that have not expired at ``at``, by namespace and key."""
    queryset = MemberTag.objects.filter(member=member).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=at)
    )
    if namespace is not None:
        queryset = queryset.filter(namespace=namespace)
    return queryset.order_by("namespace", "key")


def identity_list(*, member: Member) -> QuerySet[Identity]:
    return Identity.objects.filter(member=member).order_by("provider", "value")


def member_ids_by_external_id(*, external_ids: Iterable[str]) -> dict[str, UUID]:
    """Map external ids to member ids in one query; erased members are not addressable."""
    return dict(
        Member.objects.filter(
            external_id__in=list(external_ids), erased_at__isnull=True
        ).values_list("external_id", "pk")
    )
