"""Create the periodic schedules declared in code that the database lacks."""

from typing import Any

from django.core.management.base import BaseCommand

from core.schedules import schedules_sync


class Command(BaseCommand):
    help = "Create missing periodic schedules (never overwrites an operator's edits)."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"Created {schedules_sync()} periodic schedules.")
