"""The Idempotency-Key mechanism every effectful POST goes through.

Design (after Zulip and the IETF idempotency-key draft): in the request's durable transaction the
key row is inserted first; a concurrent duplicate blocks on the unique index (bounded by the lock
timeout) and, once the first commits, replays its stored response. The effect runs in a savepoint
so a domain refusal is stored and replayed like a success, while a transient failure (busy) or a
validation error stores nothing and may be retried with the same key.
"""

import hashlib
import json
from collections.abc import Callable
from typing import Any

from django.db import IntegrityError, OperationalError, transaction
from django.utils import timezone
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from core.api.authentication import actor_for_user
from core.api.exceptions import PROBLEM_CONTENT_TYPE, domain_error_response
from core.db import durable_atomic, is_lock_timeout, lock_timeout
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


def run_idempotent(request: Request, effect: Callable[[], Response]) -> Response:
    """Run ``effect`` once per (client, Idempotency-Key) in a durable transaction it owns."""
    key = _key_from(request)
    if key is None:
        with durable_atomic():
            return effect()

    owner = actor_for_user(request.user).label
    fingerprint = _fingerprint(request)
    with durable_atomic(), lock_timeout():
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    owner=owner,
                    key=key,
                    method=request.method or "",
                    path=request.path[:500],
                    fingerprint=fingerprint,
                    response_status=0,
                    created_at=timezone.now(),
                )
        except IntegrityError:
            existing = IdempotencyRecord.objects.get(owner=owner, key=key)
            if existing.fingerprint != fingerprint:
                raise IdempotencyKeyReusedError(
                    "This Idempotency-Key was used for a different request."
                ) from None
            return _replay(existing)
        except OperationalError as error:
            if is_lock_timeout(error):
                raise IdempotencyKeyInUseError() from error
            raise

        try:
            with transaction.atomic():
                response = effect()
        except DomainError as error:
            if not error.replayable:
                raise
            response = domain_error_response(error, instance=request.path)

        record.response_status = response.status_code
        record.response_body = _as_json(response.data)
        record.save(update_fields=("response_status", "response_body"))
        return response


def _as_json(data: Any) -> Any:
    """Exactly what the client received, so a replay is byte-for-byte the same document."""
    return json.loads(JSONRenderer().render(data))
