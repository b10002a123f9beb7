"""The analytics dashboard in the Django admin: one page of charts over the analytics selectors.

The page reads only: each chart is one call to ``analytics.selectors`` (set-based aggregates), the
results go to the browser as one JSON document (``json_script``) and ``dashboard.js`` draws them
with the vendored Chart.js. Tier bars and lifecycle counts link to the member list, filtered.
"""

from dataclasses import asdict
from datetime import date, datetime, timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from analytics import selectors
from rewards.services.earning import business_date_of

DASHBOARD_PERMISSION = "analytics.view_analytics"
# The funnel's window (default and longest: LOYALTY_ANALYTICS_FUNNEL_*_DAYS, as in the API) lies
# between these dates.
EARLIEST_DATE = date(2000, 1, 1)
LATEST_DATE = date(2100, 12, 31)
# Weekly charts: cohorts followed for this many weeks; flows over this many weeks.
RETENTION_WEEKS = 8
WEEKLY_CHART_WEEKS = 12
# Retention cells are shaded in this many steps (CSS classes heat-0 .. heat-10).
HEAT_STEPS = 10
LIFECYCLE_LINKS = (("silent", "silent_count"), ("dormant", "dormant_count"))


class FunnelRangeForm(forms.Form):
    """The funnel's join-date window (GET). Other parameters are ignored, as on any page."""

    joined_from = forms.DateField(
        label="Joined from", widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
    )
    joined_to = forms.DateField(
        label="to", widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        start, end = cleaned.get("joined_from"), cleaned.get("joined_to")
        if start is None or end is None:
            return cleaned
        if not (EARLIEST_DATE <= start <= LATEST_DATE and EARLIEST_DATE <= end <= LATEST_DATE):
            raise forms.ValidationError(
                f"Dates must lie between {EARLIEST_DATE:%Y-%m-%d} and {LATEST_DATE:%Y-%m-%d}."
            )
        if start > end:
            raise forms.ValidationError("The start date must not be after the end date.")
        longest = settings.LOYALTY_ANALYTICS_FUNNEL_MAX_DAYS
        if (end - start).days >= longest:
            raise forms.ValidationError(f"The window may span at most {longest} days.")
        return cleaned


def default_funnel_range(at: datetime) -> tuple[date, date]:
    today = business_date_of(at)
    return today - timedelta(days=settings.LOYALTY_ANALYTICS_FUNNEL_DEFAULT_DAYS - 1), today


def dashboard_view(request: HttpRequest, *, admin_site: admin.AdminSite) -> HttpResponse:
    """The dashboard page. The caller wraps it in ``admin_site.admin_view`` (staff login)."""
    if not request.user.has_perm(DASHBOARD_PERMISSION):
        raise PermissionDenied
    at = timezone.now()
    joined_from, joined_to = default_funnel_range(at)
    asked = any(name in request.GET for name in FunnelRangeForm.base_fields)
    form = FunnelRangeForm(
        request.GET if asked else None,
        initial={"joined_from": joined_from, "joined_to": joined_to},
    )
    status = 200
    if form.is_bound:
        if form.is_valid():
            joined_from = form.cleaned_data["joined_from"]
            joined_to = form.cleaned_data["joined_to"]
        else:
            # The page still renders (default window) with the errors shown; nothing else changes.
            status = 400
    data = dashboard_data(at=at, joined_from=joined_from, joined_to=joined_to)
    context = {
        **admin_site.each_context(request),
        "title": "Analytics dashboard",
        "form": form,
        "data": data,
        "health": data["health"],
        "funnel": data["funnel"],
        "retention_rows": _retention_rows(data["retention"]),
        "retention_weeks": range(data["retention"]["weeks"]),
    }
    return TemplateResponse(request, "admin/analytics/dashboard.html", context, status=status)


def dashboard_data(*, at: datetime, joined_from: date, joined_to: date) -> dict[str, Any]:
    """Everything the page shows, JSON-ready: one selector call per chart."""
    distribution = selectors.tier_distribution(at=at)
    funnel = selectors.funnel(joined_from=joined_from, joined_to=joined_to, at=at)
    retention = selectors.retention(weeks=RETENTION_WEEKS, at=at)
    health = selectors.health(at=at)
    movement = selectors.tier_movement_weekly(weeks=WEEKLY_CHART_WEEKS, at=at)
    points = selectors.points_flow_weekly(weeks=WEEKLY_CHART_WEEKS, at=at)

    members_url = reverse("admin:members_member_changelist")
    tiers = [
        {**asdict(share), "url": f"{members_url}?{urlencode({'tier__code__exact': share.code})}"}
        for share in distribution.tiers
    ]
    health_data = asdict(health)
    health_data["links"] = {
        stage: f"{members_url}?{urlencode({'lifecycle_stage__exact': stage})}"
        for stage, _ in LIFECYCLE_LINKS
    }
    return {
        "as_of": at,
        "distribution": {**asdict(distribution), "tiers": tiers},
        "funnel": asdict(funnel),
        "retention": asdict(retention),
        "health": health_data,
        "movement": [asdict(week) for week in movement],
        "points": [asdict(week) for week in points],
    }


def _retention_rows(retention: dict[str, Any]) -> list[dict[str, Any]]:
    """The heatmap table: each cell's percentage and its shade class; weeks not yet reached
    (past the cohort's age) and empty cohorts are left blank."""
    rows = []
    for cohort in retention["cohorts"]:
        # An empty cohort has no retention to show: its weeks are left blank.
        shares = cohort["retention"] if cohort["size"] else []
        cells = [
            {
                "percent": round(share * 100),
                "heat": f"heat-{min(HEAT_STEPS, max(0, round(share * HEAT_STEPS)))}",
            }
            for share in shares
        ]
        blanks = max(0, retention["weeks"] - len(cells))
        rows.append(
            {
                "week_start": cohort["week_start"],
                "size": cohort["size"],
                "cells": cells,
                "blanks": range(blanks),
            }
        )
    return rows
