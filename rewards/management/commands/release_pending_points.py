"""Make pending points available once their hold (e.g. the return window) has ended."""

from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone
from tqdm import tqdm

from rewards.services.jobs import points_release_pending


class Command(BaseCommand):
    help = "Release pending points whose pending_until has passed."

    def handle(self, *args: Any, **options: Any) -> None:
        with tqdm(desc="members", unit="member", file=self.stderr) as bar:
            released = points_release_pending(at=timezone.now(), progress=bar.update)
        self.stdout.write(f"Released {released} lots.")
