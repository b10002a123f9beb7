"""Writes of cross-cutting records: partners and their keys, idempotency housekeeping."""

from collections.abc import Sequence
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils.text import slugify

from core.exceptions import ConflictError, InvalidInputError
from core.models import RESERVED_NAMESPACES, IdempotencyRecord, Partner, PartnerAPIKey, Scope
from core.read_cache import partner_keys_changed


class PartnerExistsError(ConflictError):
    code = "partner_exists"
    title = "A partner with this name or namespace already exists"


def _checked_scopes(scopes: Sequence[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(Scope.values))
    if unknown:
        raise InvalidInputError(
            f"Unknown scopes: {', '.join(unknown)}. Known: {', '.join(Scope.values)}."
        )
    return sorted(set(scopes))


@transaction.atomic
def partner_create(
    *, name: str, scopes: Sequence[str], at: datetime, namespace: str | None = None
) -> tuple[Partner, str]:
    """Create a partner and its first API key. Returns the partner and the plain key (shown once).

    :raises InvalidInputError: for an unknown scope or an unusable namespace.
    :raises PartnerExistsError: when the name or namespace is taken.
    """
    namespace = slugify(namespace or name)[:64]
    if not namespace or namespace in RESERVED_NAMESPACES:
        raise InvalidInputError(f"{namespace!r} cannot be a partner namespace.")
    try:
        with transaction.atomic():
            partner = Partner.objects.create(
                name=name, namespace=namespace, scopes=_checked_scopes(scopes), created_at=at
            )
    except IntegrityError:
        raise PartnerExistsError(
            f"A partner named {name!r} or namespace {namespace!r} exists."
        ) from None
    key = partner_key_issue(partner=partner, name="default")
    return partner, key


def partner_key_issue(*, partner: Partner, name: str, expires_at: datetime | None = None) -> str:
    """Issue a new API key for the partner; only its hash is stored. Returns the plain key."""
    _, key = PartnerAPIKey.objects.create_key(partner=partner, name=name, expiry_date=expires_at)
    return key


@transaction.atomic
def partner_keys_revoke(*, partner: Partner) -> int:
    """Revoke every key of the partner. Returns how many were revoked."""
    revoked = PartnerAPIKey.objects.filter(partner=partner, revoked=False).update(revoked=True)
    partner_keys_changed()
    return revoked


def idempotency_records_purge(*, at: datetime, retention: timedelta, batch_size: int = 5000) -> int:
    """Delete idempotency records older than the retention window, in bounded batches."""
    cutoff = at - retention
    deleted = 0
    while True:
        with transaction.atomic():
            batch = list(
                IdempotencyRecord.objects.filter(created_at__lt=cutoff).values_list(
                    "pk", flat=True
                )[:batch_size]
            )
            if not batch:
                return deleted
            deleted += IdempotencyRecord.objects.filter(pk__in=batch).delete()[0]
