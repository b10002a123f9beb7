"""The real URLs plus the reference route the award endpoint is measured against."""

from django.urls import path

from bench.reference_views import ReferenceAwardView, ReferenceMeView
from loyalty.urls import handler404, handler500
from loyalty.urls import urlpatterns as loyalty_urlpatterns

__all__ = ["handler404", "handler500", "urlpatterns"]

urlpatterns = [
    *loyalty_urlpatterns,
    path(
        "bench/reference-award/<uuid:member_id>/",
        ReferenceAwardView.as_view(),
        name="bench-reference-award",
    ),
    path("bench/reference-me/", ReferenceMeView.as_view(), name="bench-reference-me"),
]
