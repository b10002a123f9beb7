"""A member's read documents (``GET me/``, a member's tier), cached whole and never stale.

A document is built by the selectors and serializers as before and cached with the two tokens
read in the same cache round trip as it: the member's token, replaced whenever something of
that member changes, and the everyone token, replaced when something of every member's
documents changes (the catalog, a rule version, a population job). A cached document counts
only while both tokens it was built under are still the current ones, so a hit costs one
``MGET`` and no query.

Writers replace tokens after their transaction commits (at once outside one). A reader reads
the tokens before the database, so whatever it builds from a state a writer has not committed
yet carries a token the commit replaces: no interleaving leaves a stale document current. What only time changes is handled by expiry: a document expires at the next business day
(windows and tenure count whole days), at the earliest future date or time it shows (a
certification's expiry, the end of a grace period, pin or probation, the day points expire), and
at the latest after ``LOYALTY_READ_CACHE_SECONDS``, which bounds the rest (the continuous 90-day
qualifying-points figure, points coming within 30 days of expiry). Member tokens live twice that
long, so a document never outlives the token that would invalidate it. ``0`` turns the cache off.

With the cache (Redis) down, documents are built from the database on every read and writers
go on without replacing tokens; a document cached before the outage can then be served until it
expires, which the expiry bounds.

Every service that changes what these documents show calls :func:`member_reads_changed` (or
:func:`all_reads_changed` for set-based jobs); ORM saves and deletes of the models they read
are covered by signal receivers (``core.apps``) for code paths outside the services, such as
the admin's change forms.
"""

import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, TypeVar
from uuid import UUID
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from redis import RedisError

from core.cache_client import redis_backend, redis_client, redis_get_many

T = TypeVar("T")
logger = logging.getLogger(__name__)
# What the cache backend raises when Redis is down or unreachable.
_UNAVAILABLE = (RedisError, OSError)

EVERYONE = "reads:everyone"
# Replaced when a partner or one of its API keys is saved, revoked or deleted.
PARTNER_KEYS = "reads:partner-keys"
# Tokens of everything at once: kept until replaced (a member's expires with its documents).
_LASTING_TOKENS = (EVERYONE, PARTNER_KEYS)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _canonical(member_id: UUID | str) -> UUID:
    # Writers hold ids as UUIDs or as strings of either spelling: one key per member.
    return member_id if isinstance(member_id, UUID) else UUID(str(member_id))


def _member_token_key(member_id: UUID | str) -> str:
    return f"reads:member:{_canonical(member_id)}"


def _document_key(kind: str, member_id: UUID | str) -> str:
    return f"reads:{kind}:{_canonical(member_id)}"


def _seconds() -> int:
    return int(settings.LOYALTY_READ_CACHE_SECONDS)


def _new_token() -> int:
    # An integer: Django's Redis serializer stores it as plain digits, so tokens written by the
    # pipeline below read back through the cache API unchanged.
    return int.from_bytes(os.urandom(7), "big")


def member_document(*, kind: str, member_id: UUID | str, build: Callable[[], T]) -> T:
    """The member's ``kind`` document: the cached one while it is current, else ``build()``'s
    result, cached for the next reader. ``build`` raising (a 404) caches nothing."""
    seconds = _seconds()
    if seconds <= 0:
        return build()
    token_key, document_key = _member_token_key(member_id), _document_key(kind, member_id)
    try:
        found = _get_many([EVERYONE, token_key, document_key])
    except _UNAVAILABLE:
        logger.warning("Read cache unavailable: building the %s document.", kind, exc_info=True)
        return build()
    everyone, member = found.get(EVERYONE), found.get(token_key)
    cached = found.get(document_key)
    if cached is not None and cached[0] == everyone and cached[1] == member:
        return cached[2]
    document = build()
    _store(document_key, (everyone, member, document), _lifetime(document, seconds))
    return document


def _lifetime(document: Any, seconds: int) -> int:
    """How long the document may be served: ``seconds``, cut at the next instant time alone
    changes it. That is the next business day (windows and tenure count whole days) or the
    earliest future date or time the document shows (a certification's expiry, the end of a
    grace period, pin or probation, the day points expire), whichever comes first."""
    now = datetime.now(UTC)
    zone = ZoneInfo(settings.LOYALTY_BUSINESS_TIME_ZONE)
    soonest = datetime.combine(now.astimezone(zone).date() + timedelta(days=1), time.min, zone)
    for moment in _future_instants(document, now):
        soonest = min(soonest, moment)
    return max(1, min(seconds, math.ceil((soonest - now).total_seconds())))


def _future_instants(value: Any, now: datetime) -> Iterator[datetime]:
    """The dates and times after ``now`` anywhere in a rendered document (ISO 8601 strings; a
    bare date counts from its start in UTC, the earliest it can begin)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _future_instants(item, now)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _future_instants(item, now)
    elif isinstance(value, str) and _ISO_DATE.match(value):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return
        if len(value) == 10:
            moment = moment.replace(tzinfo=UTC)
        if moment.tzinfo is not None and moment > now:
            yield moment


def shared_document(*, kind: str, build: Callable[[], T], token: str = EVERYONE) -> T:
    """A document many reads share (the rules in force, a partner's API key): the cached one
    while ``token`` (everyone's, or ``PARTNER_KEYS``) is unchanged, else ``build()``'s result,
    cached for the next unless it is ``None``."""
    seconds = _seconds()
    if seconds <= 0:
        return build()
    key = f"reads:shared:{kind}"
    try:
        found = _get_many([token, key])
    except _UNAVAILABLE:
        logger.warning("Read cache unavailable: building the %s document.", kind, exc_info=True)
        return build()
    current, cached = found.get(token), found.get(key)
    if cached is not None and cached[0] == current:
        return cached[1]
    document = build()
    if document is not None:
        _store(key, (current, document), seconds)
    return document


def _get_many(keys: list[str]) -> dict[str, Any]:
    backend = redis_backend()
    return cache.get_many(keys) if backend is None else redis_get_many(backend, keys)


def _store(key: str, value: Any, seconds: int) -> None:
    try:
        cache.set(key, value, timeout=seconds)
    except _UNAVAILABLE:
        logger.warning("Read cache unavailable: %s not stored.", key, exc_info=True)


def member_reads_changed(member_ids: Iterable[UUID | str]) -> None:
    """Something the members' documents show changed: replace their tokens when the surrounding
    transaction commits (at once outside one)."""
    if _seconds() <= 0:
        return
    keys = tuple(dict.fromkeys(_member_token_key(member_id) for member_id in member_ids))
    if keys:
        _replace_after_commit(TokensReplace(keys))


def partner_keys_changed() -> None:
    """A partner or an API key changed (revoked, expired early, partner switched off): cached
    key lookups count for nothing once the transaction commits."""
    if _seconds() <= 0:
        return
    _replace_after_commit(TokensReplace((PARTNER_KEYS,)))


def all_reads_changed() -> None:
    """Something every member's documents show changed (the catalog, a rule version, a job
    over the population): replace the everyone token when the transaction commits."""
    if _seconds() <= 0:
        return
    _replace_after_commit(TokensReplace((EVERYONE,)))


@dataclass(frozen=True, slots=True)
class TokensReplace:
    """Give these token keys new values: an on-commit callback (a type of its own, so tests
    can tell it from the effects a write queues)."""

    keys: tuple[str, ...]

    def __call__(self) -> None:
        token = _new_token()
        try:
            if len(self.keys) == 1 and self.keys[0] in _LASTING_TOKENS:
                cache.set(self.keys[0], token, timeout=None)
            else:
                _tokens_set(self.keys, token, 2 * _seconds())
        except _UNAVAILABLE:
            # The write stands; documents cached before the outage expire on their own.
            logger.warning("Read cache unavailable: tokens not replaced.", exc_info=True)


_SET_ALL_LUA = """
for _, key in ipairs(KEYS) do
    redis.call('SET', key, ARGV[1], 'EX', ARGV[2])
end
"""


def _tokens_set(keys: tuple[str, ...], token: int, seconds: int) -> None:
    backend = redis_backend()
    if backend is not None:
        # One command for all the keys (a batch replaces a thousand tokens: the cache API, or a
        # pipeline, would pack a command or two per key, 10 ms per thousand here).
        redis_client(backend).eval(
            _SET_ALL_LUA, len(keys), *(backend.make_key(key) for key in keys), token, seconds
        )
    else:
        cache.set_many(dict.fromkeys(keys, token), timeout=seconds)


def _replace_after_commit(replace: TokensReplace) -> None:
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        replace()
        return
    # After the commit is what makes readers safe (see the module docstring). A test case's
    # transaction never commits, so there the tokens are replaced at once as well.
    transaction.on_commit(replace)
    if connection.atomic_blocks[0]._from_testcase:
        replace()


# Models whose ORM saves and deletes change a member's documents (by the member they belong
# to) or everyone's (the catalog the documents are read against).
_MEMBER_MODELS = (
    "members.Member",
    "members.Identity",
    "rewards.PointsAccount",
    "rewards.MemberBadge",
    "rewards.CertificationGrant",
)
_CATALOG_MODELS = (
    "tiers.Tier",
    "tiers.RuleSet",
    "tiers.TierRule",
    "tiers.TierRequirement",
    "rewards.Benefit",
    "rewards.Badge",
    "rewards.Certification",
)


def _member_saved_or_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    member_id = instance.pk if sender._meta.label == "members.Member" else instance.member_id
    if member_id is not None:
        member_reads_changed([member_id])


def _catalog_saved_or_deleted(sender: Any, **kwargs: Any) -> None:
    all_reads_changed()


def _partner_saved_or_deleted(sender: Any, **kwargs: Any) -> None:
    partner_keys_changed()


def connect_receivers() -> None:
    """Replace tokens on ORM saves and deletes of the models the documents read."""
    from django.apps import apps
    from django.db.models.signals import post_delete, post_save

    for labels, receiver in (
        (_MEMBER_MODELS, _member_saved_or_deleted),
        (_CATALOG_MODELS, _catalog_saved_or_deleted),
        (("core.Partner", "core.PartnerAPIKey"), _partner_saved_or_deleted),
    ):
        for label in labels:
            model = apps.get_model(label)
            post_save.connect(receiver, sender=model, dispatch_uid=f"reads-save-{label}")
            post_delete.connect(receiver, sender=model, dispatch_uid=f"reads-delete-{label}")
