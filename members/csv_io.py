"""CSV export and import of members and their tags, for the admin (the operator's tool).

Exports stream: rows come from a generator over ``QuerySet.iterator()``, so memory stays flat
whatever the number of members. Imports validate the whole file first and then apply it through
the member and tag services inside the caller's transaction: a file with one bad row changes
nothing, and the operator gets every bad row back with its number (the header is row 1).
"""

import csv
import io
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any
from uuid import UUID

from django import forms
from django.conf import settings
from django.db import transaction
from django.db.models import F, Prefetch, QuerySet
from django.db.models.functions import Coalesce

from core.actors import Actor
from core.db import chunked
from core.exceptions import DomainError, InvalidInputError
from members.models import Member, MemberTag, TagCategory, TagSource
from members.selectors import member_ids_by_external_id
from members.services import (
    TagInput,
    TagSyncItem,
    TagSyncMode,
    TagSyncStatus,
    member_create,
    member_update,
    namespace_check_writable,
    tags_sync,
)

MEMBER_EXPORT_COLUMNS = (
    "id",
    "external_id",
    "display_name",
    "email",
    "phone",
    "tier",
    "lifecycle_stage",
    "joined_at",
    "tags",
    "points_available",
    "points_pending",
    "points_lifetime_earned",
)
TAG_COLUMNS = ("external_id", "namespace", "key", "value", "category", "expires_at")
MEMBER_IMPORT_REQUIRED = ("external_id", "display_name")
MEMBER_IMPORT_OPTIONAL = ("email", "phone")
TAG_IMPORT_REQUIRED = ("external_id", "namespace", "key")
TAG_IMPORT_OPTIONAL = ("value", "category", "expires_at")

EXPORT_CHUNK_SIZE = 2000
LOOKUP_CHUNK_SIZE = 2000
# Larger files belong to the API (tag-sync) or a management command, not one admin request.
MAX_IMPORT_ROWS = 20_000
# Excel reads a UTF-8 file as UTF-8 only when it starts with a byte order mark.
BYTE_ORDER_MARK = "\ufeff"

EXTERNAL_ID_PATTERN = r"^[\w.:@+-]+$"
PHONE_PATTERN = r"^\+?[0-9 ()-]{3,32}$"
TAG_KEY_PATTERN = r"^[\w.:-]+$"

# A spreadsheet runs a cell starting with one of these as a formula (CSV injection), so exports
# quote such cells with a leading apostrophe and imports strip it again. Plain numbers and phone
# numbers ("+86 138...", "-5") are left alone.
_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER_LIKE = re.compile(r"[+-]?[\d\s().-]+")


class CsvImportError(InvalidInputError):
    """The file cannot be imported; ``errors`` holds ``row``, ``attr`` and ``detail`` per problem."""

    code = "csv_invalid"
    title = "The CSV file has invalid rows; nothing was imported"


@dataclass(frozen=True, slots=True)
class MembersImportResult:
    created_count: int
    updated_count: int
    unchanged_count: int


@dataclass(frozen=True, slots=True)
class TagsImportResult:
    row_count: int
    changed_member_count: int


# --- Export --------------------------------------------------------------------------------------


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_TRIGGERS) and not _NUMBER_LIKE.fullmatch(text):
        return f"'{text}"
    return text


def _uncell(text: str) -> str:
    if text.startswith("'") and text[1:].startswith(_FORMULA_TRIGGERS):
        return text[1:]
    return text


def _datetime_cell(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def members_csv_rows(*, members: QuerySet[Member]) -> Iterator[list[str]]:
    """The header, then one row per member by external_id, tags as ``namespace:key=value;...``,
    and the points balances (0 for a member who never had points).

    Members are read in chunks with their points joined in the same query and their tags
    prefetched per chunk: two queries per chunk, never all members at once.
    """
    yield list(MEMBER_EXPORT_COLUMNS)
    queryset = (
        members.order_by("external_id")
        .annotate(
            export_points_available=Coalesce(F("points_account__available"), 0),
            export_points_pending=Coalesce(F("points_account__pending"), 0),
            export_points_lifetime_earned=Coalesce(F("points_account__lifetime_earned"), 0),
        )
        .prefetch_related(None)
        .prefetch_related(Prefetch("tags", queryset=MemberTag.objects.order_by("namespace", "key")))
    )
    for member in queryset.iterator(chunk_size=EXPORT_CHUNK_SIZE):
        tags = ";".join(f"{tag.namespace}:{tag.key}={tag.value}" for tag in member.tags.all())
        yield [
            str(member.pk),
            _cell(member.external_id),
            _cell(member.display_name),
            _cell(member.email),
            _cell(member.phone),
            member.tier_id,
            member.lifecycle_stage,
            _datetime_cell(member.joined_at),
            _cell(tags),
            str(member.export_points_available),
            str(member.export_points_pending),
            str(member.export_points_lifetime_earned),
        ]


def member_tags_csv_rows(*, members: QuerySet[Member]) -> Iterator[list[str]]:
    """The header, then one row per stored tag of the members, by external_id, namespace, key."""
    yield list(TAG_COLUMNS)
    tags = (
        MemberTag.objects.filter(member__in=members.values("pk"))
        .order_by("member__external_id", "namespace", "key")
        .values_list("member__external_id", "namespace", "key", "value", "category", "expires_at")
    )
    for external_id, namespace, key, value, category, expires_at in tags.iterator(
        chunk_size=EXPORT_CHUNK_SIZE
    ):
        yield [
            _cell(external_id),
            namespace,
            _cell(key),
            _cell(value),
            category,
            _datetime_cell(expires_at),
        ]


class _Echo:
    """A write-only file for ``csv.writer`` that hands each encoded line back to the caller."""

    def write(self, value: str) -> str:
        return value


def csv_stream(*, rows: Iterable[Sequence[str]]) -> Iterator[str]:
    """Encode rows as CSV lines, lazily, led by a byte order mark for spreadsheets."""
    writer = csv.writer(_Echo())
    yield BYTE_ORDER_MARK
    for row in rows:
        yield writer.writerow(row)


# --- Reading and validating ----------------------------------------------------------------------


def _error(row: int, detail: str, attr: str = "") -> dict[str, Any]:
    return {"row": row, "attr": attr, "detail": detail}


def _read_rows(
    *, file: IO[bytes], required: Sequence[str], optional: Sequence[str]
) -> tuple[set[str], list[tuple[int, dict[str, str]]], list[dict[str, Any]]]:
    """The columns present, the data rows (numbered as in a spreadsheet) of a UTF-8 CSV file,
    and the errors of rows whose cells do not match the header.

    :raises CsvImportError: for an unreadable file, a bad header or too many rows.
    """
    text = io.TextIOWrapper(file, encoding="utf-8-sig", newline="")
    try:
        reader = csv.reader(text)
        header = [column.strip() for column in next(reader, [])]
        if not any(header):
            raise CsvImportError(errors=[_error(1, "The file is empty.")])
        header_errors = []
        missing = [column for column in required if column not in header]
        if missing:
            header_errors.append(_error(1, f"Missing columns: {', '.join(missing)}."))
        unknown = sorted(set(header) - set(required) - set(optional))
        if unknown:
            header_errors.append(
                _error(
                    1,
                    f"Unknown columns: {', '.join(unknown)}. "
                    f"Allowed: {', '.join((*required, *optional))}.",
                )
            )
        if len(set(header)) != len(header):
            header_errors.append(_error(1, "A column is named twice."))
        if header_errors:
            raise CsvImportError(errors=header_errors)
        rows = []
        errors: list[dict[str, Any]] = []
        for number, values in enumerate(reader, start=2):
            if not any(value.strip() for value in values):
                continue
            if len(rows) == MAX_IMPORT_ROWS:
                raise CsvImportError(
                    errors=[_error(number, f"The file has more than {MAX_IMPORT_ROWS} rows.")]
                )
            if len(values) != len(header):
                errors.append(
                    _error(number, f"The row has {len(values)} cells, the header {len(header)}.")
                )
                continue
            rows.append(
                (
                    number,
                    {column: _uncell(value) for column, value in zip(header, values, strict=True)},
                )
            )
    except UnicodeDecodeError:
        raise CsvImportError(errors=[_error(1, "The file is not UTF-8 text.")]) from None
    except csv.Error as error:
        raise CsvImportError(errors=[_error(1, f"The file is not valid CSV: {error}.")]) from None
    finally:
        text.detach()
    return set(header), rows, errors


def _form_errors(number: int, form: forms.Form) -> list[dict[str, Any]]:
    if form.is_valid():
        return []
    return [
        _error(number, str(message), attr)
        for attr, messages in form.errors.items()
        for message in messages
    ]


class _MemberRowForm(forms.Form):
    external_id = forms.RegexField(regex=EXTERNAL_ID_PATTERN, max_length=128)
    display_name = forms.CharField(max_length=150)
    email = forms.EmailField(required=False)
    phone = forms.RegexField(regex=PHONE_PATTERN, max_length=32, required=False)


class _TagRowForm(forms.Form):
    external_id = forms.CharField(max_length=128)
    namespace = forms.SlugField(max_length=64)
    key = forms.RegexField(regex=TAG_KEY_PATTERN, max_length=128)
    value = forms.CharField(max_length=256, required=False)
    category = forms.ChoiceField(choices=TagCategory.choices, required=False)
    expires_at = forms.DateTimeField(required=False)


def _members_by_external_id(external_ids: Sequence[str]) -> dict[str, Member]:
    found: dict[str, Member] = {}
    for chunk in chunked(external_ids, LOOKUP_CHUNK_SIZE):
        found.update(
            (member.external_id, member) for member in Member.objects.filter(external_id__in=chunk)
        )
    return found


# --- Import --------------------------------------------------------------------------------------


def _validated_member_rows(
    rows: Sequence[tuple[int, dict[str, str]]],
) -> tuple[list[dict[str, Any]], list[tuple[int, dict[str, Any]]]]:
    """Row errors and the valid rows' cleaned data; an external_id may appear once."""
    errors: list[dict[str, Any]] = []
    valid: list[tuple[int, dict[str, Any]]] = []
    first_row: dict[str, int] = {}
    for number, row in rows:
        form = _MemberRowForm(data=row)
        row_errors = _form_errors(number, form)
        if not row_errors:
            external_id = form.cleaned_data["external_id"]
            if external_id in first_row:
                row_errors = [
                    _error(number, f"Repeats row {first_row[external_id]}.", "external_id")
                ]
            else:
                first_row[external_id] = number
                valid.append((number, form.cleaned_data))
        errors.extend(row_errors)
    return errors, valid


@transaction.atomic
def members_csv_import(*, file: IO[bytes], actor: Actor, at: datetime) -> MembersImportResult:
    """Create the file's unknown members and update the known ones (columns external_id,
    display_name and optionally email, phone); a column left out is left unchanged.

    :raises CsvImportError: listing every invalid row; then nothing is written.
    """
    columns, rows, errors = _read_rows(
        file=file, required=MEMBER_IMPORT_REQUIRED, optional=MEMBER_IMPORT_OPTIONAL
    )
    row_errors, valid = _validated_member_rows(rows)
    errors.extend(row_errors)
    existing = _members_by_external_id([data["external_id"] for _, data in valid])
    errors.extend(
        _error(number, "An erased member cannot be edited.", "external_id")
        for number, data in valid
        if data["external_id"] in existing and existing[data["external_id"]].is_erased
    )
    if errors:
        raise CsvImportError(errors=sorted(errors, key=lambda error: error["row"]))

    editable = [name for name in ("display_name", *MEMBER_IMPORT_OPTIONAL) if name in columns]
    created = updated = unchanged = 0
    for number, data in valid:
        member = existing.get(data["external_id"])
        changes = {}
        if member is not None:
            changes = {name: data[name] for name in editable if getattr(member, name) != data[name]}
        try:
            if member is None:
                member_create(
                    external_id=data["external_id"],
                    display_name=data["display_name"],
                    email=data["email"],
                    phone=data["phone"],
                    actor=actor,
                    at=at,
                )
                created += 1
            elif changes:
                member_update(member=member, changes=changes, actor=actor, at=at)
                updated += 1
            else:
                unchanged += 1
        except DomainError as error:
            raise CsvImportError(errors=[_error(number, error.detail, "external_id")]) from error
    return MembersImportResult(
        created_count=created, updated_count=updated, unchanged_count=unchanged
    )


def _validated_tag_rows(
    rows: Sequence[tuple[int, dict[str, str]]], *, at: datetime
) -> tuple[list[dict[str, Any]], list[tuple[int, dict[str, Any]]]]:
    """Row errors and the valid rows' cleaned data; a member's tag may appear once."""
    errors: list[dict[str, Any]] = []
    valid: list[tuple[int, dict[str, Any]]] = []
    first_row: dict[tuple[str, str, str], int] = {}
    for number, row in rows:
        form = _TagRowForm(data=row)
        row_errors = _form_errors(number, form)
        if not row_errors:
            data = form.cleaned_data
            tag = (data["external_id"], data["namespace"], data["key"])
            if data["expires_at"] is not None and data["expires_at"] <= at:
                row_errors = [_error(number, "Must be in the future.", "expires_at")]
            elif tag in first_row:
                row_errors = [_error(number, f"Repeats row {first_row[tag]}.", "key")]
            else:
                first_row[tag] = number
                valid.append((number, data))
        errors.extend(row_errors)
    return errors, valid


def _namespace_errors(namespaces: Iterable[str], *, actor: Actor) -> dict[str, str]:
    """Why the actor may not write each namespace it may not write."""
    refused = {}
    for namespace in sorted(set(namespaces)):
        try:
            namespace_check_writable(actor=actor, namespace=namespace)
        except DomainError as error:
            refused[namespace] = error.detail
    return refused


def _grouped_tags(
    valid: Sequence[tuple[int, dict[str, Any]]], *, actor: Actor
) -> tuple[list[dict[str, Any]], dict[str, dict[str, list[TagInput]]], dict[str, int]]:
    """Row errors, the tags by namespace and member, and each member's first row number."""
    refused = _namespace_errors((data["namespace"] for _, data in valid), actor=actor)
    member_ids: dict[str, UUID] = {}
    for chunk in chunked(sorted({data["external_id"] for _, data in valid}), LOOKUP_CHUNK_SIZE):
        member_ids.update(member_ids_by_external_id(external_ids=chunk))

    errors: list[dict[str, Any]] = []
    grouped: dict[str, dict[str, list[TagInput]]] = defaultdict(lambda: defaultdict(list))
    member_row: dict[str, int] = {}
    limit = settings.LOYALTY_MAX_TAGS_PER_NAMESPACE
    for number, data in valid:
        namespace, external_id = data["namespace"], data["external_id"]
        if namespace in refused:
            errors.append(_error(number, refused[namespace], "namespace"))
        elif external_id not in member_ids:
            errors.append(_error(number, "No member with this external_id.", "external_id"))
        elif len(grouped[namespace][external_id]) == limit:
            errors.append(
                _error(number, f"More than {limit} tags for this member in {namespace}.", "key")
            )
        else:
            member_row.setdefault(external_id, number)
            grouped[namespace][external_id].append(
                TagInput(
                    key=data["key"],
                    value=data["value"],
                    category=data["category"] or TagCategory.CUSTOM,
                    expires_at=data["expires_at"],
                )
            )
    return errors, grouped, member_row


@transaction.atomic
def member_tags_csv_import(*, file: IO[bytes], actor: Actor, at: datetime) -> TagsImportResult:
    """Merge the file's tags (columns external_id, namespace, key and optionally value, category,
    expires_at) into the members' tags, one bulk sync per namespace; tags not in the file stay.

    :raises CsvImportError: listing every invalid row; then nothing is written.
    """
    _, rows, errors = _read_rows(
        file=file, required=TAG_IMPORT_REQUIRED, optional=TAG_IMPORT_OPTIONAL
    )
    row_errors, valid = _validated_tag_rows(rows, at=at)
    errors.extend(row_errors)
    group_errors, grouped, member_row = _grouped_tags(valid, actor=actor)
    errors.extend(group_errors)
    if errors:
        raise CsvImportError(errors=sorted(errors, key=lambda error: error["row"]))

    changed: set[UUID | None] = set()
    for namespace, by_member in grouped.items():
        items = [TagSyncItem(external_id=key, tags=tags) for key, tags in by_member.items()]
        for chunk in chunked(items, settings.LOYALTY_MAX_BATCH_ITEMS):
            results = tags_sync(
                namespace=namespace,
                mode=TagSyncMode.MERGE,
                items=chunk,
                actor=actor,
                at=at,
                source=TagSource.CSV_IMPORT,
            )
            for result in results:
                if result.status is TagSyncStatus.NOT_FOUND:  # erased since the check above
                    row = member_row[result.external_id]
                    raise CsvImportError(
                        errors=[_error(row, "No member with this external_id.", "external_id")]
                    )
                if result.status is TagSyncStatus.UPDATED:
                    changed.add(result.member_id)
    return TagsImportResult(row_count=len(valid), changed_member_count=len(changed))
