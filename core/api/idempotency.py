"""The Idempotency-Key mechanism every effectful POST goes through.

Design (after Zulip and the IETF idempotency-key draft), in the request's durable transaction: the
effect runs, then the key's record is inserted with the response (INSERT ... ON CONFLICT DO
NOTHING RETURNING, no savepoints, one statement on the hot path). A request whose key another
request holds blocks on the unique index there (bounded by the lock timeout); once that one
commits, it rolls its own effect back and replays the stored response. A domain refusal is stored
and replayed like a success, while a transient failure (busy) or a validation error stores nothing
and may be retried with the same key.

Lock order: the key is the last lock the transaction takes, and nothing waits for a lock after it,
so a request holding a key can close no cycle of waits. STYLE §3 puts the key first, for the
claim-then-store design this replaced; storing last keeps that guarantee with one statement
instead of two (an INSERT, then an UPDATE of the response), at the price that a duplicate does
its work before it finds the key taken and rolls it back (duplicates are rare: retries).
"""

import hashlib
import json
from collections.abc import Callable
from functools import partial

from django.db import OperationalError, connection
from django.utils import timezone
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from core.api.authentication import actor_for_user
from core.api.exceptions import PROBLEM_CONTENT_TYPE, domain_error_response
from core.db import durable_atomic, is_lock_wait_lost
from core.exceptions import ConflictError, DomainError
from core.models import IdempotencyRecord

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255


class IdempotencyKeyReusedError(DomainError):
    code = "idempotency_key_reused"
    status = 422
    title = "Idempotency-Key reused with a different request"
    replayable = False


class IdempotencyKeyInUseError(ConflictError):
    code = "idempotency_key_in_use"
    title = "A request with this Idempotency-Key is still being processed"
    replayable = False


def _fingerprint(request: Request) -> str:
    canonical = json.dumps(
        {"method": request.method, "path": request.path, "body": request.data},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _key_from(request: Request) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise ValidationError(
            {HEADER: [f"Must be 1 to {MAX_KEY_LENGTH} printable ASCII characters."]}
        )
    return key


def _replay(record: IdempotencyRecord) -> Response:
    content_type = PROBLEM_CONTENT_TYPE if record.response_status >= 400 else None
    return Response(
        record.response_body,
        status=record.response_status,
        headers={REPLAYED_HEADER: "true"},
        content_type=content_type,
    )


def _record(
    *, owner: str, key: str, request: Request, fingerprint: str, response: Response
) -> bool:
    """Store the key's record with the response; ``False`` when the key has one already. A
    request whose key a concurrent one holds waits here, on the unique index, until that one
    commits or rolls back; past the session's lock_timeout it is refused as in use (409)."""
    table = IdempotencyRecord._meta.db_table
    created_at = connection.ops.adapt_datetimefield_value(timezone.now())
    # The rendered document goes in as is: what the client receives, with no parse in between.
    body = JSONRenderer().render(response.data).decode() if response.data is not None else None
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f'INSERT INTO {table} (owner, "key", method, path, fingerprint, response_status, '  # noqa: S608 - table name from the model
                f"response_body, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s{cast}, %s) "
                'ON CONFLICT (owner, "key") DO NOTHING RETURNING id',
                [
                    owner,
                    key,
                    request.method or "",
                    request.path[:500],
                    fingerprint,
                    response.status_code,
                    body,
                    created_at,
                ],
            )
            return cursor.fetchone() is not None
    except OperationalError as error:
        if is_lock_wait_lost(error):
            raise IdempotencyKeyInUseError() from error
        raise


def _replay_existing(*, owner: str, key: str, fingerprint: str) -> Response:
    existing = IdempotencyRecord.objects.get(owner=owner, key=key)
    if existing.fingerprint != fingerprint:
        raise IdempotencyKeyReusedError("This Idempotency-Key was used for a different request.")
    return _replay(existing)


class _KeyTakenError(Exception):
    """Another request stored this key first: the effect is rolled back, its response replayed."""


def run_idempotent(request: Request, effect: Callable[[], Response]) -> Response:
    """Run ``effect`` once per (client, Idempotency-Key) in a durable transaction it owns.

    The key's record is stored with the effect's response, in the effect's transaction, before
    commit; when the key had one already, the effect is rolled back and that response replayed.
    A domain refusal rolls the effect back and is then stored on its own, so it replays like a
    success; a validation error or a transient failure stores nothing.
    """
    key = _key_from(request)
    if key is None:
        with durable_atomic():
            return effect()

    owner = actor_for_user(request.user).label
    fingerprint = _fingerprint(request)
    record = partial(_record, owner=owner, key=key, request=request, fingerprint=fingerprint)
    try:
        with durable_atomic():
            response = effect()
            if not record(response=response):
                raise _KeyTakenError
            return response
    except _KeyTakenError:
        return _replay_existing(owner=owner, key=key, fingerprint=fingerprint)
    except DomainError as error:
        if not error.replayable:
            raise
        refusal = domain_error_response(error, instance=request.path)
    with durable_atomic():
        stored = record(response=refusal)
    # Not stored: a concurrent request with this key committed in between.
    return refusal if stored else _replay_existing(owner=owner, key=key, fingerprint=fingerprint)
