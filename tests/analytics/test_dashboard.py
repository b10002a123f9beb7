"""The analytics dashboard in the admin: who may see it, what it shows, and what it costs."""

import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from members.models import LifecycleStage, Member, MemberDailyActivity
from rewards.services.earning import business_date_of

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/analytics/communityalert/dashboard/"
# Four for the session, the user and the permissions; the rest are the six selectors' aggregate
# queries (a dozen today). The count must not grow with the data either (see the test).
QUERY_BUDGET = 20
CANVASES = (
    "chart-distribution",
    "chart-funnel",
    "chart-health",
    "chart-movement",
    "chart-points",
)


def _staff(username: str, *perms: str, is_staff: bool = True) -> User:
    user = User.objects.create_user(username, password="pw-dashboard-123", is_staff=is_staff)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


@pytest.fixture
def analyst_client(db: Any) -> Client:
    """A staff operator holding only the analytics permission."""
    client = Client()
    client.force_login(_staff("analyst", "analytics.view_analytics"))
    return client


def _data(response: Any) -> dict[str, Any]:
    content = response.content.decode()
    start = content.index('<script id="dashboard-data" type="application/json">')
    start = content.index(">", start) + 1
    return json.loads(content[start : content.index("</script>", start)])


@pytest.fixture
def populated(make_member: Callable[..., Member]) -> dict[str, list[Member]]:
    """Members in three tiers and two lifecycle stages, with recent activity."""
    now = timezone.now()
    today = business_date_of(now)
    members = {
        "basic": [make_member(at=now - timedelta(days=10)) for _ in range(3)],
        "active": [make_member(at=now - timedelta(days=20)) for _ in range(2)],
        "koc": [make_member(at=now - timedelta(days=30))],
    }
    for code, group in members.items():
        Member.objects.filter(pk__in=[m.pk for m in group]).update(tier_id=code)
    Member.objects.filter(pk=members["basic"][0].pk).update(lifecycle_stage=LifecycleStage.SILENT)
    MemberDailyActivity.objects.bulk_create(
        MemberDailyActivity(
            member=member, business_date=today - timedelta(days=day), interactions=2, posts=1
        )
        for group in members.values()
        for member in group
        for day in range(0, 14, 2)
    )
    return members


# --- Access -----------------------------------------------------------------------------------


def test_the_dashboard_url_is_named_in_the_admin() -> None:
    assert reverse("admin:analytics_dashboard") == DASHBOARD


def test_anonymous_is_sent_to_the_admin_login(client: Client) -> None:
    response = client.get(DASHBOARD)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert "next=" in response["Location"]


def test_a_user_who_is_not_staff_is_sent_to_the_login_even_with_the_permission(
    client: Client,
) -> None:
    client.force_login(_staff("member-user", "analytics.view_analytics", is_staff=False))

    response = client.get(DASHBOARD)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_staff_without_the_analytics_permission_get_403(client: Client) -> None:
    client.force_login(_staff("clerk", "members.view_member"))

    response = client.get(DASHBOARD)

    assert response.status_code == 403
    assert b"chart-distribution" not in response.content


def test_a_superuser_sees_the_dashboard(client: Client, superuser: User) -> None:
    client.force_login(superuser)

    assert client.get(DASHBOARD).status_code == 200


def test_the_admin_index_links_to_the_dashboard_only_for_those_allowed(
    client: Client, analyst_client: Client
) -> None:
    client.force_login(_staff("clerk", "members.view_member"))

    assert DASHBOARD in analyst_client.get(reverse("admin:index")).content.decode()
    assert DASHBOARD in analyst_client.get("/admin/analytics/").content.decode()
    clerk_index = client.get(reverse("admin:index"))
    assert clerk_index.status_code == 200
    assert DASHBOARD not in clerk_index.content.decode()


def test_the_permission_also_opens_the_alert_history(analyst_client: Client) -> None:
    response = analyst_client.get(reverse("admin:analytics_communityalert_changelist"))

    assert response.status_code == 200
    assert DASHBOARD in response.content.decode()


# --- Content ----------------------------------------------------------------------------------


def test_an_empty_database_renders_every_chart(analyst_client: Client) -> None:
    response = analyst_client.get(DASHBOARD)

    assert response.status_code == 200
    content = response.content.decode()
    for canvas in CANVASES:
        assert f'<canvas id="{canvas}"' in content
    assert "analytics/vendor/chart.umd.min.js" in content
    assert "analytics/dashboard.js" in content
    assert "cdn" not in content.lower()
    data = _data(response)
    assert data["distribution"]["total"] == 0
    assert [tier["code"] for tier in data["distribution"]["tiers"]] == [
        "basic",
        "active",
        "koc",
        "kol",
    ]
    assert [step["count"] for step in data["funnel"]["steps"]] == [0, 0, 0, 0, 0]
    assert data["health"]["alerts"] == []
    assert len(data["movement"]) == 12
    assert len(data["points"]) == 12
    assert "No alerts this week." in content
    # Every cohort is empty: the retention table has no shaded cells.
    assert re.search(r'class="heat-\d', content) is None


def test_the_page_carries_each_analytic(
    analyst_client: Client, populated: dict[str, list[Member]]
) -> None:
    response = analyst_client.get(DASHBOARD)

    assert response.status_code == 200
    data = _data(response)
    counts = {tier["code"]: tier["count"] for tier in data["distribution"]["tiers"]}
    assert counts == {"basic": 3, "active": 2, "koc": 1, "kol": 0}
    assert data["distribution"]["total"] == 6
    basic = data["distribution"]["tiers"][0]
    assert basic["share"] == pytest.approx(0.5)
    assert basic["gap"] == pytest.approx(basic["share"] - basic["expected_share"])
    # Everyone joined within the default 90-day window and interacted.
    registered = data["funnel"]["steps"][0]
    assert registered == {
        "key": "registered",
        "label": "Registered",
        "count": 6,
        "share_of_registered": 1.0,
        "step_conversion": None,
    }
    assert data["health"]["silent_count"] == 1
    assert data["retention"]["weeks"] == 8
    assert sum(cohort["size"] for cohort in data["retention"]["cohorts"]) == 6
    content = response.content.decode()
    assert "heat-" in content  # the retention heatmap cells


def test_a_tier_link_lands_on_the_member_list_filtered_by_that_tier(
    analyst_client: Client, superuser: User, populated: dict[str, list[Member]]
) -> None:
    data = _data(analyst_client.get(DASHBOARD))
    active = next(tier for tier in data["distribution"]["tiers"] if tier["code"] == "active")
    assert active["url"] == reverse("admin:members_member_changelist") + "?tier__code__exact=active"
    assert f'href="{active["url"]}"' in analyst_client.get(DASHBOARD).content.decode()

    operator = Client()
    operator.force_login(superuser)
    response = operator.get(active["url"])

    assert response.status_code == 200
    listed = {member.pk for member in response.context["cl"].result_list}
    assert listed == {member.pk for member in populated["active"]}


def test_the_silent_count_links_to_the_silent_members(
    analyst_client: Client, superuser: User, populated: dict[str, list[Member]]
) -> None:
    url = _data(analyst_client.get(DASHBOARD))["health"]["links"]["silent"]
    operator = Client()
    operator.force_login(superuser)

    listed = operator.get(url).context["cl"].result_list

    assert [member.pk for member in listed] == [populated["basic"][0].pk]


def test_the_funnel_takes_a_date_range(
    analyst_client: Client, populated: dict[str, list[Member]]
) -> None:
    today = business_date_of(timezone.now())
    start = today - timedelta(days=15)

    response = analyst_client.get(DASHBOARD, {"joined_from": start, "joined_to": today})

    assert response.status_code == 200
    funnel = _data(response)["funnel"]
    assert funnel["joined_from"] == start.isoformat()
    # Only the three basic members joined in the last fifteen days.
    assert funnel["steps"][0]["count"] == 3
    assert f'value="{start.isoformat()}"' in response.content.decode()


def test_other_query_parameters_are_ignored(analyst_client: Client) -> None:
    response = analyst_client.get(DASHBOARD, {"utm_source": "mail"})

    assert response.status_code == 200
    assert 'class="errorlist' not in response.content.decode()


@pytest.mark.parametrize(
    "query",
    [
        {"joined_from": "2026-05-10", "joined_to": "2026-05-01"},
        {"joined_from": "not-a-date", "joined_to": "2026-05-01"},
        {"joined_from": "1900-01-01", "joined_to": "1900-02-01"},
        {"joined_from": "2020-01-01", "joined_to": "2026-01-01"},
        {"joined_from": "2026-05-01"},
    ],
)
def test_a_bad_date_range_is_a_400_showing_the_error_and_the_default_window(
    analyst_client: Client, query: dict[str, str]
) -> None:
    response = analyst_client.get(DASHBOARD, query)

    assert response.status_code == 400
    assert 'class="errorlist' in response.content.decode()
    funnel = _data(response)["funnel"]
    today = business_date_of(timezone.now())
    assert funnel["joined_to"] == today.isoformat()
    assert funnel["joined_from"] == (today - timedelta(days=89)).isoformat()


def test_the_embedded_data_cannot_break_out_of_its_script(
    analyst_client: Client, make_member: Callable[..., Member]
) -> None:
    from tiers.models import Tier

    Tier.objects.filter(code="basic").update(name="</script><script>alert(1)</script>")

    content = analyst_client.get(DASHBOARD).content.decode()

    assert "<script>alert(1)" not in content
    assert "\\u003C/script\\u003E" in content


# --- Cost ------------------------------------------------------------------------------------


def _queries(client: Client) -> int:
    """The SELECTs one page view runs (on PostgreSQL each selector also wraps its reads in a
    savepoint with ``SET LOCAL``, which are not reads)."""
    with CaptureQueriesContext(connection) as captured:
        assert client.get(DASHBOARD).status_code == 200
    return sum(query["sql"].lstrip().upper().startswith("SELECT") for query in captured)


def test_the_query_count_is_bounded_and_independent_of_the_data(
    analyst_client: Client, make_member: Callable[..., Member]
) -> None:
    empty = _queries(analyst_client)
    now = timezone.now()
    today = business_date_of(now)
    for index in range(12):
        member = make_member(at=now - timedelta(days=index * 5))
        MemberDailyActivity.objects.create(
            member=member, business_date=today - timedelta(days=index), interactions=1, posts=1
        )
    populated = _queries(analyst_client)

    assert populated == empty
    assert empty <= QUERY_BUDGET
