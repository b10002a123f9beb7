from django.urls import path

from tiers.api import views

urlpatterns = [
    path("tiers/", views.TierListView.as_view(), name="tier-list"),
    path("members/<uuid:member_id>/tier/", views.MemberTierView.as_view(), name="member-tier"),
    path(
        "members/<uuid:member_id>/tier-history/",
        views.MemberTierHistoryView.as_view(),
        name="member-tier-history",
    ),
    path(
        "members/<uuid:member_id>/promotions/",
        views.MemberPromotionView.as_view(),
        name="member-promotions",
    ),
    path("me/tier/", views.MeTierView.as_view(), name="me-tier"),
    path("nominations/", views.NominationListCreateView.as_view(), name="nomination-list"),
    path(
        "nominations/<int:nomination_id>/",
        views.NominationDetailView.as_view(),
        name="nomination-detail",
    ),
    path(
        "nominations/<int:nomination_id>/review/",
        views.NominationReviewView.as_view(),
        name="nomination-review",
    ),
    path(
        "nominations/<int:nomination_id>/withdrawal/",
        views.NominationWithdrawalView.as_view(),
        name="nomination-withdrawal",
    ),
    path("tier-rule-sets/", views.TierRuleSetListCreateView.as_view(), name="tier-rule-set-list"),
    path(
        "tier-rule-sets/<int:rule_set_id>/",
        views.TierRuleSetDetailView.as_view(),
        name="tier-rule-set-detail",
    ),
    path(
        "tier-rule-sets/<int:rule_set_id>/publication/",
        views.TierRuleSetPublicationView.as_view(),
        name="tier-rule-set-publication",
    ),
    path(
        "tier-reassessments/",
        views.TierReassessmentListCreateView.as_view(),
        name="tier-reassessment-list",
    ),
    path(
        "tier-reassessments/<uuid:job_id>/",
        views.TierReassessmentDetailView.as_view(),
        name="tier-reassessment-detail",
    ),
    path("tier-simulations/", views.TierSimulationView.as_view(), name="tier-simulations"),
]
