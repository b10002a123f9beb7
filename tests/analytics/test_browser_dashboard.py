"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright.

An operator logs in through the admin's form, every chart is drawn with no script error and no
failed request, and a click on a tier's bar lands on the member list filtered by that tier.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; Playwright never downloads a browser
here; `make test` installs it when missing). Without it the test fails, never skips.
"""

import os
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.utils import timezone

from analytics.management.commands.dashboard_screenshot import CHROMIUM_FLAGS
from core.actors import system_actor
from members.models import Member
from members.services import member_create

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("LOYALTY_CHROMIUM", "/usr/bin/chromium")
DASHBOARD = "/admin/analytics/communityalert/dashboard/"
PASSWORD = "pw-browser-check-123"
TIMEOUT_MS = 30_000


def _unavailable(reason: str) -> NoReturn:
    # Never a skip: `make test` installs Debian's Chromium when it is missing.
    pytest.fail(f"the browser check needs Debian's Chromium and Playwright: {reason}")


def _is_favicon(url: str) -> bool:
    """The browser asks every site for /favicon.ico on its own; the admin has none."""
    return urlsplit(url).path == "/favicon.ico"


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium and Playwright are here, or the test fails."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the machine
        _unavailable("playwright is not installed (requirements-dev.txt)")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
def browser_page(chromium: str, tmp_path: Path) -> Iterator[Any]:
    """A page in a fresh Chromium profile, recording script errors and failed requests."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.problems = []  # type: ignore[attr-defined]
        page.on(
            "console",
            lambda message: (
                message.type == "error"
                and not _is_favicon(message.location.get("url", ""))
                and page.problems.append(f"console: {message.text} {message.location}")
            ),
        )
        page.on("pageerror", lambda error: page.problems.append(f"script: {error}"))
        page.on(
            "requestfailed",
            lambda request: page.problems.append(f"failed: {request.url} {request.failure}"),
        )
        page.on(
            "response",
            lambda response: (
                response.status >= 400
                and page.problems.append(f"HTTP {response.status}: {response.url}")
            ),
        )
        try:
            yield page
        finally:
            context.close()


@pytest.fixture
def operator(settings: Any) -> User:
    # The test server speaks plain HTTP: let the session and CSRF cookies travel over it.
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    user = User.objects.create_user("analyst", password=PASSWORD, is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="analytics", codename="view_analytics"),
        Permission.objects.get(content_type__app_label="members", codename="view_member"),
    )
    return user


@pytest.fixture
def tiered_members(db: Any) -> dict[str, set[str]]:
    """Members in three tiers (created before the browser starts: the ORM is not used while the
    browser's event loop runs in this thread)."""
    at = timezone.now()
    wanted = {"basic": 3, "active": 2, "koc": 1}
    external_ids: dict[str, set[str]] = {}
    for code, count in wanted.items():
        external_ids[code] = set()
        for index in range(count):
            member = member_create(
                external_id=f"browser-{code}-{index}",
                display_name=f"{code.title()} {index}",
                actor=system_actor("tests"),
                at=at,
            )
            Member.objects.filter(pk=member.pk).update(tier_id=code)
            external_ids[code].add(member.external_id)
    return external_ids


def test_the_dashboard_draws_every_chart_and_a_tier_bar_opens_its_members(
    live_server: Any,
    operator: User,
    tiered_members: dict[str, set[str]],
    browser_page: Any,
) -> None:
    page = browser_page
    page.goto(f"{live_server.url}/admin/login/?next={DASHBOARD}")
    page.fill("#id_username", operator.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"**{DASHBOARD}")
    page.wait_for_selector("body[data-dashboard-ready=true]")

    drawn = page.evaluate(
        """() => Array.from(document.querySelectorAll("canvas")).map(
            (canvas) => [canvas.id, Boolean(window.Chart.getChart(canvas))])"""
    )
    assert dict(drawn) == {
        "chart-distribution": True,
        "chart-funnel": True,
        "chart-health": True,
        "chart-movement": True,
        "chart-points": True,
    }
    shares = page.evaluate(
        """() => {
            const chart = window.Chart.getChart("chart-distribution");
            return Object.fromEntries(chart.data.labels.map(
                (label, index) => [label, chart.data.datasets[0].data[index]]));
        }"""
    )
    assert shares == pytest.approx({"Basic": 0.5, "Active": 1 / 3, "KOC": 1 / 6, "KOL": 0.0})

    # The "Active" column: its bar's x, half way up the plot area.
    point = page.evaluate(
        """() => {
            const chart = window.Chart.getChart("chart-distribution");
            const index = chart.data.labels.indexOf("Active");
            const bar = chart.getDatasetMeta(0).data[index];
            return {x: bar.x, y: (chart.chartArea.top + chart.chartArea.bottom) / 2};
        }"""
    )
    box = page.locator("#chart-distribution").bounding_box()
    page.mouse.click(box["x"] + point["x"], box["y"] + point["y"])
    page.wait_for_url("**/admin/members/member/?tier__code__exact=active")

    listed = set(
        page.locator(
            "#result_list td.field-external_id, #result_list th.field-external_id"
        ).all_inner_texts()
    )
    assert listed == tiered_members["active"]
    assert page.problems == []


def test_the_screenshot_command_saves_the_dashboard_as_a_png(
    live_server: Any, operator: User, chromium: str, tmp_path: Path
) -> None:
    output = tmp_path / "dashboard.png"
    stdout = StringIO()

    call_command(
        "dashboard_screenshot",
        url=live_server.url,
        username=operator.username,
        password=PASSWORD,
        output=output,
        chromium=chromium,
        stdout=stdout,
    )

    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert output.stat().st_size > 20_000  # the charts, not a blank or an error page
    assert f"Saved {output}" in stdout.getvalue()


def test_the_screenshot_command_reports_a_failed_login(
    live_server: Any, operator: User, chromium: str, tmp_path: Path
) -> None:
    with pytest.raises(CommandError, match="could not log in"):
        call_command(
            "dashboard_screenshot",
            url=live_server.url,
            username=operator.username,
            password="wrong-password",
            output=tmp_path / "dashboard.png",
            chromium=chromium,
            stdout=StringIO(),
        )
    assert not (tmp_path / "dashboard.png").exists()
