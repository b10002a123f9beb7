"""Generate synthetic members and activity at benchmark scale (see bench/README.md)."""

import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from tqdm import tqdm

from members.load_data import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_PREFIX,
    DEFAULT_SEED,
    DEFAULT_WRITERS,
    LoadDataExistsError,
    LoadDataOptionError,
    load_data_generate,
)


class Command(BaseCommand):
    help = (
        "Write N synthetic members with identities, tags, certifications, daily activity "
        "rollups over the last --days days and a consistent points ledger, skewed like a real "
        "community (mostly passive, few very active). COPY on PostgreSQL. Deterministic per "
        "--seed and --as-of. For benchmarks: refuses to run with DEBUG off unless --yes is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--members", type=int, required=True, help="How many members.")
        parser.add_argument("--days", type=int, default=90, help="Days of activity (90).")
        parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
        parser.add_argument(
            "--as-of",
            help="Generate as if now were this moment (ISO 8601 with a UTC offset); the same "
            "--members, --seed and --as-of give the same rows. Default: now.",
        )
        parser.add_argument(
            "--prefix",
            default=DEFAULT_PREFIX,
            help=f"External id prefix ({DEFAULT_PREFIX!r}), so runs can sit beside other data.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            help=f"Members per transaction ({DEFAULT_BATCH_SIZE:,}).",
        )
        parser.add_argument(
            "--writers",
            type=int,
            default=DEFAULT_WRITERS,
            help=f"PostgreSQL connections copying batches in parallel ({DEFAULT_WRITERS}).",
        )
        parser.add_argument(
            "--truncate",
            "--replace",
            action="store_true",
            dest="replace",
            help="First delete the members with this prefix and every row referring to them.",
        )
        parser.add_argument(
            "--no-fk-checks",
            action="store_false",
            dest="foreign_key_checks",
            help="PostgreSQL, superuser: skip the foreign key triggers while copying and "
            "deleting (as pg_restore --disable-triggers does): about 45%% less PostgreSQL work, "
            "and --truncate several times faster.",
        )
        parser.add_argument(
            "--yes", action="store_true", help="Run even though DEBUG is off (production-like)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if (
            options["members"] < 0
            or min(options["days"], options["batch_size"], options["writers"]) < 1
        ):
            raise CommandError("--members must be >= 0, --days, --batch-size and --writers >= 1.")
        if not options["prefix"]:
            raise CommandError("--prefix must not be empty.")
        at = timezone.now()
        if options["as_of"]:
            at = parse_datetime(options["as_of"])
            if at is None or timezone.is_naive(at):
                raise CommandError("--as-of must be an ISO 8601 date and time with a UTC offset.")
        database = connection.settings_dict["NAME"]
        if not settings.DEBUG and not options["yes"]:
            raise CommandError(
                f"DEBUG is off, so {database!r} may be a production database: this writes "
                f"{options['members']:,} synthetic members into it. Pass --yes if that is meant."
            )

        started = time.perf_counter()
        with tqdm(total=options["members"], desc="members", unit="member", file=self.stderr) as bar:
            try:
                result = load_data_generate(
                    members=options["members"],
                    days=options["days"],
                    at=at,
                    seed=options["seed"],
                    prefix=options["prefix"],
                    replace=options["replace"],
                    batch_size=options["batch_size"],
                    writers=options["writers"],
                    foreign_key_checks=options["foreign_key_checks"],
                    progress=bar.update,
                )
            except LoadDataExistsError as error:
                raise CommandError(f"{error.detail} (--truncate replaces them)") from error
            except LoadDataOptionError as error:
                raise CommandError(error.detail) from error
        seconds = time.perf_counter() - started

        shares = ", ".join(
            f"{segment} {count / max(1, result.members):.0%}"
            for segment, count in result.segments.items()
        )
        self.stdout.write(
            f"{result.members:,} members, {result.rollup_rows:,} rollup rows "
            f"({result.rollup_rows / max(1, result.members):.1f} per member), "
            f"{result.points_entries:,} points entries, {result.tags:,} tags, "
            f"{result.certification_grants:,} certification grants"
            + (f"; {result.deleted_members:,} members replaced" if options["replace"] else "")
            + f"\n{seconds:.1f} s: {result.rollup_rows / seconds:,.0f} rollup rows/s, "
            f"{result.rows / seconds:,.0f} rows/s over all {result.rows:,} rows\n"
            f"segments: {shares}"
        )
