from django.urls import path

from tiers.api.views import TierListView

urlpatterns = [path("tiers/", TierListView.as_view(), name="tier-list")]
