"""Post expiry entries for lots past their expiry date (the daily job, runnable by hand)."""

from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone
from tqdm import tqdm

from rewards.services.jobs import points_expire


class Command(BaseCommand):
    help = "Expire points whose lots are past expires_at. Safe to re-run or run twice at once."

    def handle(self, *args: Any, **options: Any) -> None:
        with tqdm(desc="members", unit="member", file=self.stderr) as bar:
            expired = points_expire(at=timezone.now(), progress=bar.update)
        self.stdout.write(f"Expired {expired} lots.")
