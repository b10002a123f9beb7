"""The Idempotency-Key mechanism every effectful POST goes through.

Design (after Zulip and the IETF idempotency-key draft): in the request's durable transaction the
key row is inserted first (INSERT ... ON CONFLICT DO NOTHING RETURNING, no savepoints on the hot
path); a concurrent duplicate blocks on the unique index (bounded by the lock timeout) and, once
the first commits, replays its stored response. A domain refusal is stored and replayed like a
success, while a transient failure (busy) or a validation error stores nothing and may be retried
with the same key.
"""

import hashlib
import json
from collections.abc import Callable

from django.db import OperationalError, connection
from django.utils import timezone
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from core.api.authentication import actor_for_user
from core.api.exceptions import PROBLEM_CONTENT_TYPE, domain_error_response
from core.db import durable_atomic, is_lock_timeout
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


def _claim(*, owner: str, key: str, request: Request, fingerprint: str) -> int | None:
    """Insert the key's record; ``None`` when it exists. A concurrent duplicate waits here on the
    unique index (bounded by the session's lock_timeout) until the first commits or rolls back."""
    table = IdempotencyRecord._meta.db_table
    created_at = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO {table} (owner, "key", method, path, fingerprint, response_status, '  # noqa: S608 - table name from the model
            "response_body, created_at) VALUES (%s, %s, %s, %s, %s, 0, NULL, %s) "
            'ON CONFLICT (owner, "key") DO NOTHING RETURNING id',
            [owner, key, request.method or "", request.path[:500], fingerprint, created_at],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def _replay_existing(*, owner: str, key: str, fingerprint: str) -> Response:
    existing = IdempotencyRecord.objects.get(owner=owner, key=key)
    if existing.fingerprint != fingerprint:
        raise IdempotencyKeyReusedError("This Idempotency-Key was used for a different request.")
    return _replay(existing)


def _store(record_id: int, response: Response) -> None:
    # The rendered document goes in as is: what the client receives, with no parse in between.
    body = JSONRenderer().render(response.data).decode() if response.data is not None else None
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {IdempotencyRecord._meta.db_table} SET response_status = %s, "  # noqa: S608 - table name from the model
            f"response_body = %s{cast} WHERE id = %s",
            [response.status_code, body, record_id],
        )


def run_idempotent(request: Request, effect: Callable[[], Response]) -> Response:
    """Run ``effect`` once per (client, Idempotency-Key) in a durable transaction it owns.

    The key's record is inserted first and its response stored before commit, in the effect's
    transaction. A domain refusal rolls the effect back and is then stored on its own, so it
    replays like a success; a validation error or a transient failure stores nothing.
    """
    key = _key_from(request)
    if key is None:
        with durable_atomic():
            return effect()

    owner = actor_for_user(request.user).label
    fingerprint = _fingerprint(request)
    try:
        with durable_atomic():
            record_id = _claim_or_busy(
                owner=owner, key=key, request=request, fingerprint=fingerprint
            )
            if record_id is None:
                return _replay_existing(owner=owner, key=key, fingerprint=fingerprint)
            response = effect()
            _store(record_id, response)
            return response
    except DomainError as error:
        if not error.replayable:
            raise
        refusal = domain_error_response(error, instance=request.path)
    with durable_atomic():
        record_id = _claim_or_busy(owner=owner, key=key, request=request, fingerprint=fingerprint)
        if record_id is None:  # a concurrent request with this key committed in between
            return _replay_existing(owner=owner, key=key, fingerprint=fingerprint)
        _store(record_id, refusal)
    return refusal


def _claim_or_busy(*, owner: str, key: str, request: Request, fingerprint: str) -> int | None:
    try:
        return _claim(owner=owner, key=key, request=request, fingerprint=fingerprint)
    except OperationalError as error:
        if is_lock_timeout(error):
            raise IdempotencyKeyInUseError() from error
        raise
