from django.urls import path

from analytics.api import views

urlpatterns = [
    path(
        "analytics/tier-distribution/",
        views.AnalyticsTierDistributionView.as_view(),
        name="analytics-tier-distribution",
    ),
    path("analytics/funnel/", views.AnalyticsFunnelView.as_view(), name="analytics-funnel"),
    path(
        "analytics/retention/", views.AnalyticsRetentionView.as_view(), name="analytics-retention"
    ),
    path("analytics/health/", views.AnalyticsHealthView.as_view(), name="analytics-health"),
    path(
        "analytics/tier-movement/",
        views.AnalyticsTierMovementView.as_view(),
        name="analytics-tier-movement",
    ),
    path(
        "analytics/points-flow/",
        views.AnalyticsPointsFlowView.as_view(),
        name="analytics-points-flow",
    ),
]
