from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from core.api.views import HealthView

api_v1 = [
    path("", include("members.api.urls")),
    path("", include("tiers.api.urls")),
    path("", include("rewards.api.urls")),
    path("", include("core.api.urls")),
    path("", include("analytics.api.urls")),
    path("", include("bulk.api.urls")),
]

urlpatterns = [
    # The analytics dashboard's short address (the page itself hangs off its ModelAdmin).
    path(
        "admin/analytics/dashboard/",
        RedirectView.as_view(pattern_name="admin:analytics_dashboard", query_string=True),
    ),
    path("admin/", admin.site.urls),
    path("health/", HealthView.as_view(), name="health"),
    path("api/v1/", include((api_v1, "v1"))),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
]

handler404 = "core.api.views.problem_not_found"
handler500 = "core.api.views.problem_server_error"
