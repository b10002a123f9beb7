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

import hashlib
import logging
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from time import monotonic
from typing import Any, TypeVar, cast
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
# Replaced when a staff user, a group or a permission changes: cached operator lookups.
OPERATORS = "reads:operators"
# Replaced when a member is created or deleted: all that decides which members an unfiltered page
# of the member list holds (it is ordered by creation, which never changes).
ROSTER = "reads:roster"
# Tokens of everything at once: kept until replaced (a member's expires with its documents).
_LASTING_TOKENS = (EVERYONE, PARTNER_KEYS, OPERATORS, ROSTER)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _canonical(member_id: UUID | str) -> UUID:
    # Writers hold ids as UUIDs or as strings of either spelling: one key per member.
    return member_id if isinstance(member_id, UUID) else UUID(str(member_id))


def _member_token_key(member_id: UUID | str) -> str:
    return f"reads:member:{_canonical(member_id)}"


def _document_key(kind: str, member_id: UUID | str) -> str:
    return f"reads:document:{kind}:{_canonical(member_id)}"


def _seconds() -> int:
    return int(settings.LOYALTY_READ_CACHE_SECONDS)


def _new_token() -> int:
    # An integer: Django's Redis serializer stores it as plain digits, so tokens written by the
    # pipeline below read back through the cache API unchanged.
    return int.from_bytes(os.urandom(7), "big")


def member_document(*, kind: str, member_id: UUID | str, build: Callable[[], T]) -> T:
    """The member's ``kind`` document: the cached one while it is current, else ``build()``'s
    result, cached for the next reader. ``build`` raising (a 404) caches nothing."""
    documents = member_documents(
        kind=kind, member_ids=[member_id], build_many=lambda missing: {missing[0]: build()}
    )
    return cast(T, documents[0])


def member_documents(
    *,
    kind: str,
    member_ids: Sequence[UUID | str],
    build_many: Callable[[list[UUID | str]], Mapping[UUID | str, T]],
) -> list[T | None]:
    """The members' ``kind`` documents, in the order of ``member_ids``: the cached ones while
    current, the rest from one ``build_many(missing ids)`` (a mapping by the same ids), cached
    for the next reader. Every token and document is read in one ``MGET``. A member the build
    no longer finds (deleted since its id was read) has ``None``."""
    return _documents_and_tokens(kind, member_ids, build_many)[0]


def _documents_and_tokens(
    kind: str,
    member_ids: Sequence[UUID | str],
    build_many: Callable[[list[UUID | str]], Mapping[UUID | str, T]],
) -> tuple[list[T | None], list[Any] | None]:
    """``member_documents``, and the member tokens the documents are current under (``None``
    when the cache is off or down)."""
    seconds = _seconds()
    if seconds <= 0:
        return _in_order(member_ids, build_many(list(member_ids))), None
    if not member_ids:
        return [], []
    token_keys = [_member_token_key(member_id) for member_id in member_ids]
    document_keys = [_document_key(kind, member_id) for member_id in member_ids]
    try:
        found = _get_many([EVERYONE, *token_keys, *document_keys])
    except _UNAVAILABLE:
        logger.warning("Read cache unavailable: building %s documents.", kind, exc_info=True)
        return _in_order(member_ids, build_many(list(member_ids))), None
    everyone = found.get(EVERYONE)
    tokens = [found.get(token_key) for token_key in token_keys]
    documents: list[Any] = []
    missing: list[int] = []
    for index, (token, document_key) in enumerate(zip(tokens, document_keys, strict=True)):
        cached = found.get(document_key)
        if cached is not None and cached[0] == everyone and cached[1] == token:
            documents.append(cached[2])
        else:
            documents.append(None)
            missing.append(index)
    if missing:
        built = build_many([member_ids[index] for index in missing])
        stored = {}
        for index in missing:
            document = documents[index] = built.get(member_ids[index])
            if document is None:  # deleted since its id was read: nothing to cache
                continue
            stored[document_keys[index]] = (
                (everyone, tokens[index], document),
                _lifetime(document, seconds),
            )
        _store_many(stored)
    return documents, tokens


def roster_page(
    *,
    page_key: str,
    kind: str,
    member_ids: Callable[[], Sequence[UUID]],
    build_many: Callable[[list[UUID | str]], Mapping[UUID | str, T]],
    render: Callable[[list[T | None]], bytes],
) -> bytes:
    """A page of members' ``kind`` documents rendered whole, for a page whose members depend on
    nothing but which members exist (an unfiltered page of the member list, ordered by
    creation): the cached page while the everyone and roster tokens and the token of each
    member on it are the ones it was built under, else ``render`` of the documents of
    ``member_ids()``, cached for the next reader.

    A page is kept in Redis, with the tokens it was built under in a header line, and in this
    process (``_NEAR_PAGES``). A copy held here costs one ``MGET`` of its tokens; one from Redis
    is checked by a script inside Redis, in one round trip, before it is carried over."""
    seconds = _seconds()
    if seconds <= 0:
        return render(member_documents(kind=kind, member_ids=member_ids(), build_many=build_many))
    key = f"reads:page:{hashlib.sha256(page_key.encode()).hexdigest()}"
    try:
        # Held by the key as stored: another cache (its prefix, its tokens) is another page.
        near = _NEAR_PAGES.get(cache.make_key(key))
        if near is not None and near.until > monotonic() and _near_current(near):
            return near.body
        cached = _page_get(key)
        if cached is not None:
            _near_keep(key, *cached)
            return cached[1]
        # Read before the database, as every document's tokens (see the module docstring).
        found = _lasting_tokens_get()
    except _UNAVAILABLE:
        logger.warning("Read cache unavailable: building a %s page.", kind, exc_info=True)
        return render(member_documents(kind=kind, member_ids=member_ids(), build_many=build_many))
    ids = member_ids()
    documents, tokens = _documents_and_tokens(kind, ids, build_many)
    body = render(documents)
    if tokens is not None:
        header = [_token_text(found.get(EVERYONE)), _token_text(found.get(ROSTER))]
        for member_id, token in zip(ids, tokens, strict=True):
            header += [str(_canonical(member_id)), _token_text(token)]
        lifetime = _lifetime(None, seconds)
        _page_store(key, " ".join(header).encode() + b"\n" + body, lifetime)
        _near_keep(key, header, body, lifetime * 1000)
    return body


def _token_text(token: Any) -> str:
    # Tokens are integers, stored as their digits; "-" stands for a token never set.
    return "-" if token is None else str(token)


def _lasting_tokens_get() -> dict[str, Any]:
    """The everyone and roster tokens, the everyone token set first if it is not (after Redis
    lost its data): a page held in a process is checked against it, so a flush of Redis, which
    takes every token back to unset, can never make an old page current again."""
    found = _get_many([EVERYONE, ROSTER])
    if found.get(EVERYONE) is None:
        cache.add(EVERYONE, _new_token(), timeout=None)
        found = _get_many([EVERYONE, ROSTER])
    return found


def _tokens_current(header: list[str]) -> bool:
    """Whether every token a page's header names (everyone, roster, then member id and token
    pairs) still has the value the header holds."""
    # The header's ids are canonical already (written by roster_page).
    names = [EVERYONE, ROSTER, *(f"reads:member:{word}" for word in header[2::2])]
    current = _get_many(names)
    expected = [header[0], header[1], *header[3::2]]
    return all(
        _token_text(current.get(name)) == word for name, word in zip(names, expected, strict=True)
    )


@dataclass(frozen=True, slots=True)
class _NearPage:
    header: list[str]
    body: bytes
    until: float  # monotonic(): when the copy in Redis expires
    # On Redis: the header's token keys as stored, and the raw values they must hold ("-" is
    # None), so the check is one MGET and a comparison of lists.
    redis_keys: list[str] | None = None
    redis_values: list[bytes | None] | None = None


def _near_current(near: _NearPage) -> bool:
    backend = redis_backend()
    if backend is None or near.redis_keys is None:
        return _tokens_current(near.header)
    return redis_client(backend).mget(near.redis_keys) == near.redis_values


# The pages this process served last. Bounded, and each copy expires with the page in Redis: it
# never outlives the member tokens that would invalidate it.
_NEAR_PAGES: "OrderedDict[str, _NearPage]" = OrderedDict()
_NEAR_PAGES_KEPT = 64
_near_lock = threading.Lock()


def _near_keep(key: str, header: list[str], body: bytes, milliseconds: int) -> None:
    if header[0] == "-" or milliseconds <= 0:
        return  # without an everyone token a flush of Redis would go unnoticed
    page = _NearPage(header, body, monotonic() + milliseconds / 1000)
    backend = redis_backend()
    if backend is not None:
        names = [EVERYONE, ROSTER, *(f"reads:member:{word}" for word in header[2::2])]
        expected = [header[0], header[1], *header[3::2]]
        page = _NearPage(
            header,
            body,
            page.until,
            [backend.make_key(name) for name in names],
            [None if word == "-" else word.encode() for word in expected],
        )
    key = cache.make_key(key)
    with _near_lock:
        _NEAR_PAGES[key] = page
        _NEAR_PAGES.move_to_end(key)
        while len(_NEAR_PAGES) > _NEAR_PAGES_KEPT:
            _NEAR_PAGES.popitem(last=False)


# KEYS[1] the page, KEYS[2] the everyone token, KEYS[3] the roster token, ARGV[1] the prefix of
# member token keys. The page is a header line ("everyone roster id token id token ...") and the
# body. Answers {page, milliseconds left} when every token is current, else nothing. The member
# token keys are not declared in KEYS: this needs one Redis, not a Cluster.
_PAGE_GET_LUA = """
local page = redis.call('GET', KEYS[1])
if not page then return false end
local newline = string.find(page, '\\n', 1, true)
local words, keys = {}, {KEYS[2], KEYS[3]}
for word in string.gmatch(string.sub(page, 1, newline - 1), '%S+') do words[#words + 1] = word end
for index = 3, #words, 2 do keys[#keys + 1] = ARGV[1] .. words[index] end
local current = redis.call('MGET', unpack(keys))
for index = 1, #keys do
    local expected = index <= 2 and words[index] or words[2 * index - 2]
    if (current[index] or '-') ~= expected then return false end
end
return {page, redis.call('PTTL', KEYS[1])}
"""


def _page_get(key: str) -> tuple[list[str], bytes, int] | None:
    """The cached page at ``key`` if every token in its header is still current: its header,
    its body and the milliseconds it has left."""
    backend = redis_backend()
    if backend is not None:
        client = redis_client(backend)
        script = client.__dict__.get("_loyalty_page_get")
        if script is None:
            script = client.__dict__["_loyalty_page_get"] = client.register_script(_PAGE_GET_LUA)
        keys = [backend.make_key(name) for name in (key, EVERYONE, ROSTER)]
        found = script(keys=keys, args=[backend.make_key("reads:member:")])
        if not found:
            return None
        page, milliseconds = found
    else:
        page = cache.get(key)
        milliseconds = 1000 * _seconds()  # the per-process cache does not tell
        if page is None:
            return None
    header, body = page.split(b"\n", 1)
    words = header.decode().split()
    if backend is None and not _tokens_current(words):
        return None
    return words, body, milliseconds


def _page_store(key: str, page: bytes, seconds: int) -> None:
    try:
        backend = redis_backend()
        if backend is None:
            cache.set(key, page, timeout=seconds)
        else:  # raw bytes, as the script reads them (the cache API would pickle them)
            redis_client(backend).set(backend.make_key(key), page, ex=seconds)
    except _UNAVAILABLE:
        logger.warning("Read cache unavailable: %s not stored.", key, exc_info=True)


def _in_order(member_ids: Sequence[UUID | str], built: Mapping[UUID | str, T]) -> list[T | None]:
    return [built.get(member_id) for member_id in member_ids]


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
    _store_many({key: (value, seconds)})


def _store_many(values: dict[str, tuple[Any, int]]) -> None:
    """Cache each value for its own number of seconds, in one round trip."""
    try:
        backend = redis_backend()
        if backend is None:
            for key, (value, seconds) in values.items():
                cache.set(key, value, timeout=seconds)
            return
        dumps = backend._cache._serializer.dumps
        with redis_client(backend).pipeline(transaction=False) as pipeline:
            for key, (value, seconds) in values.items():
                pipeline.set(backend.make_key(key), dumps(value), ex=seconds)
            pipeline.execute()
    except _UNAVAILABLE:
        logger.warning(
            "Read cache unavailable: %d documents not stored.", len(values), exc_info=True
        )


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


def operators_changed() -> None:
    """A user, a group or a permission changed (deactivated, a permission granted or taken):
    cached operator lookups count for nothing once the transaction commits."""
    if _seconds() <= 0:
        return
    _replace_after_commit(TokensReplace((OPERATORS,)))


def roster_changed() -> None:
    """A member was created or deleted: unfiltered member list pages count for nothing once the
    transaction commits."""
    if _seconds() <= 0:
        return
    _replace_after_commit(TokensReplace((ROSTER,)))


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
    if backend is not None and len(keys) == 1:
        # One member's write, the hot path (an award): a plain SET, with no script to send.
        redis_client(backend).set(backend.make_key(keys[0]), token, ex=seconds)
    elif backend is not None:
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
    is_member = sender._meta.label == "members.Member"
    member_id = instance.pk if is_member else instance.member_id
    if member_id is not None:
        member_reads_changed([member_id])
    if is_member and kwargs.get("created", True):  # a deletion has no "created"
        roster_changed()


def _catalog_saved_or_deleted(sender: Any, **kwargs: Any) -> None:
    all_reads_changed()


def _partner_saved_or_deleted(sender: Any, **kwargs: Any) -> None:
    partner_keys_changed()


def _operators_changed(sender: Any, **kwargs: Any) -> None:
    operators_changed()


def connect_receivers() -> None:
    """Replace tokens on ORM saves and deletes of the models the documents read."""
    from django.apps import apps
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group, Permission
    from django.db.models.signals import m2m_changed, post_delete, post_save

    user_model = get_user_model()
    for model in (user_model, Group, Permission):
        label = model._meta.label
        post_save.connect(_operators_changed, sender=model, dispatch_uid=f"reads-save-{label}")
        post_delete.connect(_operators_changed, sender=model, dispatch_uid=f"reads-delete-{label}")
    for through in (
        user_model.groups.through,
        user_model.user_permissions.through,
        Group.permissions.through,
    ):
        m2m_changed.connect(
            _operators_changed, sender=through, dispatch_uid=f"reads-m2m-{through._meta.label}"
        )

    for labels, receiver in (
        (_MEMBER_MODELS, _member_saved_or_deleted),
        (_CATALOG_MODELS, _catalog_saved_or_deleted),
        (("core.Partner", "core.PartnerAPIKey"), _partner_saved_or_deleted),
    ):
        for label in labels:
            model = apps.get_model(label)
            post_save.connect(receiver, sender=model, dispatch_uid=f"reads-save-{label}")
            post_delete.connect(receiver, sender=model, dispatch_uid=f"reads-delete-{label}")
