"""Announce expired certifications and reassess their members (the daily job, by hand)."""

from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone
from tqdm import tqdm

from rewards.services.certifications import certifications_expire


class Command(BaseCommand):
    help = "Announce certifications that expired (once each) and reassess their members' tiers."

    def handle(self, *args: Any, **options: Any) -> None:
        with tqdm(desc="grants", unit="grant", file=self.stderr) as bar:
            expired = certifications_expire(at=timezone.now(), progress=bar.update)
        self.stdout.write(f"{expired} expired certifications announced.")
