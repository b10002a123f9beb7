from django.urls import path

from bulk.api import views

urlpatterns = [
    path(
        "bulk-operations/", views.BulkOperationListCreateView.as_view(), name="bulk-operation-list"
    ),
    path(
        "bulk-operations/<uuid:job_id>/",
        views.BulkOperationDetailView.as_view(),
        name="bulk-operation-detail",
    ),
    path(
        "bulk-operations/<uuid:job_id>/items/",
        views.BulkItemListView.as_view(),
        name="bulk-operation-items",
    ),
]
