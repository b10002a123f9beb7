from django.urls import path

from rewards.api import credential_views, honor_views, views

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

urlpatterns += [
    path("rewards/", views.RewardListView.as_view(), name="reward-list"),
    path("rewards/<int:reward_id>/", views.RewardDetailView.as_view(), name="reward-detail"),
    path(
        "rewards/<int:reward_id>/redemptions/",
        views.RewardRedemptionCreateView.as_view(),
        name="reward-redemptions",
    ),
    path("redemptions/", views.RedemptionListView.as_view(), name="redemption-list"),
    path(
        "redemptions/<uuid:redemption_id>/",
        views.RedemptionDetailView.as_view(),
        name="redemption-detail",
    ),
    path("me/rewards/", views.MeRewardsView.as_view(), name="me-rewards"),
    path("me/redemptions/", views.MeRedemptionsView.as_view(), name="me-redemptions"),
]

# Verifiable credentials (rewards/api/credential_views.py).
urlpatterns += [
    path(
        "members/<uuid:member_id>/certifications/<slug:code>/credential/",
        credential_views.MemberCertificationCredentialView.as_view(),
        name="member-certification-credential",
    ),
    path(
        "me/certifications/<slug:code>/credential/",
        credential_views.MeCertificationCredentialView.as_view(),
        name="me-certification-credential",
    ),
    path(
        "credentials/issuer/",
        credential_views.CredentialIssuerView.as_view(),
        name="credential-issuer",
    ),
    path(
        "credentials/verifications/",
        credential_views.CredentialVerificationView.as_view(),
        name="credential-verifications",
    ),
    path("benefits/", honor_views.BenefitListView.as_view(), name="benefit-list"),
    path("badges/", honor_views.BadgeListView.as_view(), name="badge-list"),
    path(
        "members/<uuid:member_id>/badges/",
        honor_views.MemberBadgesView.as_view(),
        name="member-badges",
    ),
    path("honors/wall/", honor_views.HonorsWallView.as_view(), name="honors-wall"),
]

# Badges and titles as verifiable credentials (rewards/api/credential_views.py).
urlpatterns += [
    path(
        "members/<uuid:member_id>/badges/<slug:code>/credential/",
        credential_views.MemberBadgeCredentialView.as_view(),
        name="member-badge-credential",
    ),
    path(
        "me/badges/<slug:code>/credential/",
        credential_views.MeBadgeCredentialView.as_view(),
        name="me-badge-credential",
    ),
]
