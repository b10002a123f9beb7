from django.urls import path

from rewards.api import views

urlpatterns = [
    path(
        "members/<uuid:member_id>/points/", views.MemberPointsView.as_view(), name="member-points"
    ),
    path(
        "members/<uuid:member_id>/points/entries/",
        views.MemberPointsEntriesView.as_view(),
        name="member-points-entries",
    ),
    path(
        "members/<uuid:member_id>/points/awards/",
        views.MemberPointsAwardView.as_view(),
        name="member-points-awards",
    ),
    path(
        "members/<uuid:member_id>/points/deductions/",
        views.MemberPointsDeductionView.as_view(),
        name="member-points-deductions",
    ),
    path(
        "points/entries/<int:entry_id>/reversal/",
        views.PointsEntryReversalView.as_view(),
        name="points-entry-reversal",
    ),
    path(
        "points/award-batches/", views.PointsAwardBatchView.as_view(), name="points-award-batches"
    ),
    path("me/points/", views.MePointsView.as_view(), name="me-points"),
    path("me/points/entries/", views.MePointsEntriesView.as_view(), name="me-points-entries"),
    path("me/check-ins/", views.MeCheckInView.as_view(), name="me-check-ins"),
    path("certifications/", views.CertificationListView.as_view(), name="certification-list"),
    path(
        "members/<uuid:member_id>/certifications/",
        views.MemberCertificationsView.as_view(),
        name="member-certifications",
    ),
    path(
        "members/<uuid:member_id>/certifications/<slug:code>/",
        views.MemberCertificationView.as_view(),
        name="member-certification",
    ),
]
