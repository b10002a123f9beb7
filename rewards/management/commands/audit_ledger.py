"""Check every ledger invariant; exits non-zero and lists the violations if any is broken."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from rewards.selectors import ledger_violations


class Command(BaseCommand):
    help = (
        "Audit the points ledger (balance = entries, chains, lots, debt, conservation against "
        "the system accounts, reversals, lifetime)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        violations = ledger_violations()
        for violation in violations[:100]:
            self.stderr.write(f"{violation['invariant']}: {violation['row']}")
        if violations:
            raise CommandError(f"{len(violations)} ledger violations.")
        self.stdout.write("Ledger audit: no violations.")
