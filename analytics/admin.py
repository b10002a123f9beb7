"""The operator's view of the analytics: the raised community alerts (read-only) and the
dashboard page, which hangs off the alerts' admin so the default admin site serves it."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path

from analytics.admin_views import DASHBOARD_PERMISSION, dashboard_view
from analytics.models import CommunityAlert
from core.admin_base import ReadOnlyModelAdmin


@admin.register(CommunityAlert)
class CommunityAlertAdmin(ReadOnlyModelAdmin):
    """Alerts are written by the daily health job only."""

    list_display = ("business_date", "code", "value", "threshold", "message", "created_at")
    list_filter = ("code", ("business_date", admin.DateFieldListFilter))
    date_hierarchy = "business_date"
    ordering = ("-business_date", "code")

    def has_view_permission(self, request: HttpRequest, obj: CommunityAlert | None = None) -> bool:
        return request.user.has_perm(DASHBOARD_PERMISSION) or super().has_view_permission(
            request, obj
        )

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "dashboard/",
                self.admin_site.admin_view(self.dashboard_view),
                name="analytics_dashboard",
            ),
            *super().get_urls(),
        ]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        return dashboard_view(request, admin_site=self.admin_site)
