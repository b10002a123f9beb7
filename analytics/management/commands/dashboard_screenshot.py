"""Take a screenshot of the analytics dashboard of a running server (docs/dashboard.png).

    DEBUG=true .venv/bin/python manage.py seed_demo
    DEBUG=true .venv/bin/python manage.py runserver 127.0.0.1:8765 &
    DEBUG=true .venv/bin/python manage.py dashboard_screenshot --url http://127.0.0.1:8765

Logs in through the admin's form with the demo operator (``seed_demo`` prints it), waits until
every chart is drawn and saves a full-page PNG. Uses Debian's Chromium (``apt-get install
chromium``) through Playwright; Playwright never downloads a browser here.
"""

from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse

# Headless and quiet: no GPU, no sandbox (containers, CI), nothing fetched in the background.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEFAULT_CHROMIUM = "/usr/bin/chromium"
READY_SELECTOR = "body[data-dashboard-ready=true]"
TIMEOUT_MS = 30_000


class Command(BaseCommand):
    help = "Save a screenshot of the admin's analytics dashboard served at --url."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8765", help="The running server.")
        parser.add_argument("--username", default="operator")
        parser.add_argument("--password", default="operator-demo-password")
        parser.add_argument(
            "--output", type=Path, default=Path(settings.BASE_DIR) / "docs" / "dashboard.png"
        )
        parser.add_argument("--chromium", default=DEFAULT_CHROMIUM)
        parser.add_argument("--width", type=int, default=1400)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            from playwright.sync_api import Error, sync_playwright
        except ImportError as error:
            raise CommandError("playwright is not installed (requirements-dev.txt)") from error
        if not Path(options["chromium"]).exists():
            raise CommandError(f"no Chromium at {options['chromium']} (apt-get install chromium)")
        base = options["url"].rstrip("/")
        dashboard = reverse("admin:analytics_dashboard")
        output: Path = options["output"]
        output.parent.mkdir(parents=True, exist_ok=True)
        with TemporaryDirectory(prefix="dashboard-profile-") as profile, sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=options["chromium"],
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport={"width": options["width"], "height": 900},
            )
            try:
                page = context.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(f"{base}{reverse('admin:login')}?next={dashboard}")
                page.fill("#id_username", options["username"])
                page.fill("#id_password", options["password"])
                with page.expect_navigation():
                    page.click("input[type=submit]")
                if urlsplit(page.url).path != dashboard:
                    raise CommandError(
                        f"could not log in as {options['username']} (landed on {page.url})"
                    )
                page.wait_for_selector(READY_SELECTOR)
                page.screenshot(path=str(output), full_page=True)
            except Error as error:
                raise CommandError(f"could not capture the dashboard: {error}") from error
            finally:
                context.close()
        self.stdout.write(f"Saved {output}")
