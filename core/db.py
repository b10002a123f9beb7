"""Database helpers shared by services: transaction guards, bounded lock waits, chunking."""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import wraps
from typing import ParamSpec, TypeVar

from django.conf import settings
from django.db import OperationalError, connection, transaction

from core.exceptions import BusyError

T = TypeVar("T")


def require_transaction() -> None:
    """Fail loudly when a helper that must share its caller's transaction runs outside one."""
    if not connection.in_atomic_block:
        raise RuntimeError("This operation must run inside transaction.atomic().")


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


@contextmanager
def lock_timeout(milliseconds: int | None = None) -> Iterator[None]:
    """Bound lock waits for the rest of the current transaction; a timeout becomes BusyError."""
    require_transaction()
    if is_postgres():
        timeout = milliseconds if milliseconds is not None else settings.LOYALTY_LOCK_TIMEOUT_MS
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{int(timeout)}ms"])
    try:
        yield
    except OperationalError as error:
        if is_lock_timeout(error):
            raise BusyError() from error
        raise


def is_lock_timeout(error: OperationalError) -> bool:
    """PostgreSQL's lock_not_available, raised when ``lock_timeout`` or NOWAIT gives up."""
    return getattr(error.__cause__, "sqlstate", None) == "55P03"


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Yield consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def durable_atomic() -> transaction.Atomic:
    """The transaction an entry point (view, task, command chunk) owns."""
    return transaction.atomic(durable=True)


P = ParamSpec("P")
R = TypeVar("R")


def joins_transaction(func: Callable[P, R]) -> Callable[P, R]:
    """Run a service in its caller's transaction when there is one, else in its own.

    Unlike a nested ``transaction.atomic`` this costs no savepoint round trips on hot paths.
    Services using it raise their refusals before writing anything, so a caller that catches a
    refusal keeps a clean transaction; a database error aborts the caller's transaction as usual.
    """

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if connection.in_atomic_block:
            return func(*args, **kwargs)
        with transaction.atomic():
            return func(*args, **kwargs)

    return wrapper
