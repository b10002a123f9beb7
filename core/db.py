"""Database helpers shared by services: transaction guards, bounded lock waits, chunking."""

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from functools import cache, wraps
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import OperationalError, connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import AutoField, BigAutoField, Field, Lookup, Model

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
        if is_lock_wait_lost(error):
            raise BusyError() from error
        raise


def is_lock_wait_lost(error: OperationalError) -> bool:
    """The statement gave up waiting for a lock, so a retry can succeed: PostgreSQL's
    lock_not_available (``lock_timeout`` or NOWAIT gave up) or deadlock_detected (this
    transaction was chosen to break a cycle of waits)."""
    return getattr(error.__cause__, "sqlstate", None) in {"55P03", "40P01"}


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


def insert_parts(
    obj: Model, *, skip: Collection[str] = (), cast: bool = False
) -> tuple[str, tuple[str, ...], tuple[str, ...], list[object]]:
    """The quoted table, quoted columns, placeholders and prepared values inserting one instance.

    For statements the ORM cannot write, such as several inserts chained by CTEs in one round
    trip. Auto primary keys, and the fields named in ``skip``, are left out. ``cast`` types each
    placeholder with its column's type, for ``INSERT ... SELECT`` where PostgreSQL would otherwise
    read an untyped parameter (a NULL, say) as text.
    """
    table, columns, placeholders, fields = _insert_layout(
        type(obj), frozenset(skip), cast, connection.vendor
    )
    return (
        table,
        columns,
        placeholders,
        [field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields],
    )


@cache
def _insert_layout(
    model: type[Model], skip: frozenset[str], cast: bool, vendor: str
) -> tuple[str, tuple[str, ...], tuple[str, ...], tuple[Field, ...]]:
    """What ``insert_parts`` writes for every instance of a model, worked out once (the award's
    hot path inserts several rows per request); ``vendor`` keys the column types."""
    ops = connection.ops
    fields = tuple(
        field
        for field in model._meta.concrete_fields
        if field.name not in skip
        and not (field.primary_key and isinstance(field, AutoField | BigAutoField))
    )
    return (
        ops.quote_name(model._meta.db_table),
        tuple(ops.quote_name(field.column) for field in fields),
        tuple(f"%s::{field.db_type(connection)}" if cast else "%s" for field in fields),
        fields,
    )


def rows_insert(objs: Sequence[Model], *, on_conflict: str = "") -> None:
    """Insert model instances without Django's PostgreSQL ``UNNEST`` bulk insert.

    For append-only rows written in bulk by jobs (history, outbox). ``bulk_create`` sends each
    column as one array, and escaping JSON and text into array literals cost most of a
    reassessment chunk's time. On PostgreSQL this sends one parameterised row statement through
    psycopg's pipelined ``executemany``; elsewhere multi-row ``VALUES``. Auto primary keys are
    left to the database and not read back. ``on_conflict`` is an ``ON CONFLICT ...`` clause to
    append (``OUTBOX_SKIP_DUPLICATE`` for events, say).
    """
    if not objs:
        return
    model = type(objs[0])
    fields = [
        field
        for field in model._meta.concrete_fields
        if not (field.primary_key and isinstance(field, AutoField | BigAutoField))
    ]
    ops = connection.ops
    table = ops.quote_name(model._meta.db_table)
    columns = ", ".join(ops.quote_name(field.column) for field in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    suffix = f" {on_conflict}" if on_conflict else ""
    rows = [
        [field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields]
        for obj in objs
    ]
    with connection.cursor() as cursor:
        if is_postgres():
            # psycopg pipelines executemany: one parsed statement, rows streamed.
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES {row}{suffix}", rows)  # noqa: S608 - names from the model
            return
        # Well under SQLite's limit on parameters per statement.
        for batch in chunked(rows, max(1, 30_000 // len(fields))):
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * len(batch))}{suffix}",  # noqa: S608 - names from the model
                [value for values in batch for value in values],
            )


class InArray(Lookup):
    """``lhs IN (values)``, written ``lhs = ANY(array)`` on PostgreSQL: one array parameter
    instead of one per value. A 1,000-value ``In`` costs more in Python (preparing each value,
    compiling, parsing and binding a statement of 1,000 placeholders) than the query takes to
    run. A filter expression: ``Member.objects.filter(InArray(F("pk"), member_ids))``. Like
    ``In``, no values match nothing and send no query.
    """

    lookup_name = "in_array"
    prepare_rhs = False

    def get_prep_lookup(self) -> list[object]:
        return list(dict.fromkeys(value for value in self.rhs if value is not None))

    def as_sql(self, compiler: Any, connection: BaseDatabaseWrapper) -> tuple[str, list[object]]:
        if not self.rhs:
            raise EmptyResultSet
        lhs, lhs_params = self.process_lhs(compiler, connection)
        field = self.lhs.output_field
        values = [field.get_db_prep_value(value, connection) for value in self.rhs]
        if connection.vendor == "postgresql":
            return f"{lhs} = ANY(%s::{field.db_type(connection)}[])", [*lhs_params, values]
        return f"{lhs} IN ({', '.join(['%s'] * len(values))})", [*lhs_params, *values]
