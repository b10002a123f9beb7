"""Award the automatic badges every member qualifies for (the daily catch-up job, by hand)."""

from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone
from tqdm import tqdm

from rewards.services.honors import badges_award_catch_up


class Command(BaseCommand):
    help = (
        "Award the automatic badges (first post, check-in streaks, tiers reached, certifications "
        "held) that members qualify for and do not hold yet."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        with tqdm(desc="members", unit="member", file=self.stderr) as bar:
            awarded = badges_award_catch_up(at=timezone.now(), progress=bar.update)
        self.stdout.write(f"{awarded} badges awarded.")
