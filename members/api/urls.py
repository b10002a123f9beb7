from django.urls import path

from members.api import auth_views, views

urlpatterns = [
    path("auth/token/", auth_views.TokenObtainView.as_view(), name="auth-token"),
    path("auth/token/refresh/", auth_views.TokenRefreshView.as_view(), name="auth-token-refresh"),
    path("auth/member-tokens/", auth_views.MemberTokenView.as_view(), name="auth-member-tokens"),
    path("members/", views.MemberListCreateView.as_view(), name="member-list"),
    path("members/export/", views.MemberExportView.as_view(), name="member-export"),
    path("members/<uuid:member_id>/", views.MemberDetailView.as_view(), name="member-detail"),
    path(
        "members/<uuid:member_id>/identities/",
        views.MemberIdentitiesView.as_view(),
        name="member-identities",
    ),
    path("members/<uuid:member_id>/tags/", views.MemberTagsView.as_view(), name="member-tags"),
    path(
        "members/<uuid:member_id>/tags/<slug:namespace>/",
        views.MemberNamespaceTagsView.as_view(),
        name="member-namespace-tags",
    ),
    path("tag-sync/", views.TagSyncView.as_view(), name="tag-sync"),
    path("me/", views.MeView.as_view(), name="me"),
    path("events/", views.EventIngestView.as_view(), name="events"),
    path("me/events/", views.MeEventIngestView.as_view(), name="me-events"),
    path(
        "members/<uuid:member_id>/events/",
        views.MemberEventListView.as_view(),
        name="member-events",
    ),
    path(
        "members/<uuid:member_id>/metrics/",
        views.MemberMetricsView.as_view(),
        name="member-metrics",
    ),
]
