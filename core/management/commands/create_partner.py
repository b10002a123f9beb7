"""Create a partner and print its API key (shown once) as the last line of the output."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from core.exceptions import DomainError
from core.models import Scope
from core.services import partner_create


class Command(BaseCommand):
    help = "Create a partner with scopes; prints its API key (shown once) as the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--scopes",
            default="",
            help=f"Comma-separated scopes out of: {', '.join(Scope.values)}.",
        )
        parser.add_argument("--namespace", default=None, help="Tag namespace (default: from name).")

    def handle(self, *args: Any, **options: Any) -> None:
        scopes = [scope.strip() for scope in options["scopes"].split(",") if scope.strip()]
        try:
            partner, key = partner_create(
                name=options["name"],
                scopes=scopes,
                namespace=options["namespace"],
                at=timezone.now(),
            )
        except DomainError as error:
            raise CommandError(error.detail) from error
        self.stderr.write(
            f"Created partner {partner.name!r} (namespace {partner.namespace!r}, "
            f"scopes {', '.join(partner.scopes) or 'none'}). Its API key, shown once:"
        )
        self.stdout.write(key)
