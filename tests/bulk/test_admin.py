"""The admin: member actions start bulk jobs on any selection (select all across pages
included), the progress page, the items, and the CSV upload for a certification grant."""

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from bulk.models import BulkItem, BulkOperation
from core.models import Job, JobStatus
from members.models import Member
from rewards.models import CertificationGrant, PointsAccount, PointsEntry

pytestmark = pytest.mark.django_db
MEMBERS = "/admin/members/member/"
OPERATIONS = "/admin/bulk/bulkoperation/"
ITEMS = "/admin/bulk/bulkitem/"
CSV_UPLOAD = f"{OPERATIONS}grant-certification-csv/"


def _operator(client: Client, *perms: str) -> User:
    user = User.objects.create_user(f"op-{User.objects.count()}", is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client.force_login(user)
    return user


def _messages(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def _action_names(response: Any) -> set[str]:
    return {name for name, _ in response.context["action_form"].fields["action"].choices}


def test_award_points_on_select_all_across_pages_runs_one_job_over_every_matching_member(
    client: Client,
    bulk_members: Callable[..., list[Member]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    basics = bulk_members(130, prefix="basic")
    koc = bulk_members(3, prefix="koc")
    Member.objects.filter(pk__in=[m.pk for m in koc]).update(tier_id="koc")
    _operator(client, "members.view_member", "rewards.award_points")
    filtered = f"{MEMBERS}?tier__code__exact=basic"
    first_page = [str(member.pk) for member in basics[:100]]
    selection = {"action": "award_points", "select_across": "1", "_selected_action": first_page}

    page = client.post(filtered, {**selection, "index": "0"})
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            filtered, {**selection, "apply": "1", "points": "12", "reason": "manual", "note": ""}
        )

    assert page.status_code == 200
    assert page.templates[0].name == "admin/bulk/action_form.html"
    assert page.context["member_count"] == 130
    assert 'name="select_across" value="1"' in page.content.decode()
    operation = BulkOperation.objects.select_related("job").get()
    assert response.status_code == 302
    assert response["Location"] == f"{OPERATIONS}{operation.pk}/change/"
    assert _messages(response) == ["Award points: started a background job for 130 member(s)."]
    assert (operation.job.status, operation.succeeded_count) == (JobStatus.DONE, 130)
    assert set(PointsAccount.objects.values_list("member_id", flat=True)) == {
        member.pk for member in basics
    }
    assert PointsEntry.objects.count() == 130
    assert operation.job.params["selection"]["admin_filters"] == "tier__code__exact=basic"


def test_the_bulk_actions_replace_the_capped_ones_and_need_their_permissions(
    client: Client, db: Any
) -> None:
    _operator(client, "members.view_member", "rewards.grant_certification")

    response = client.get(MEMBERS)

    actions = _action_names(response)
    assert "grant_certification" in actions
    assert {"award_points", "reassess_tiers"} & actions == set()
    form_action = response.context["cl"].model_admin.get_actions(response.wsgi_request)
    assert form_action["grant_certification"][0].__module__ == "bulk.admin"


def test_a_reassessment_of_the_selection_shows_progress_and_items(
    client: Client,
    bulk_members: Callable[..., list[Member]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    members = bulk_members(3)
    _operator(client, "members.view_member", "tiers.run_reassessment")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            MEMBERS,
            {
                "action": "reassess_tiers",
                "_selected_action": [str(m.pk) for m in members[:2]],
                "apply": "1",
            },
        )
    operation = BulkOperation.objects.get()

    progress = client.get(f"{OPERATIONS}{operation.pk}/change/")
    items = client.get(ITEMS, {"job__id__exact": str(operation.pk)})

    assert progress.status_code == 200
    assert "100% (2 of 2 items)" in progress.content.decode()
    assert items.status_code == 200
    assert [item.member_id for item in items.context["cl"].result_list] == [
        members[0].pk,
        members[1].pk,
    ]


def test_certification_csv_upload_reports_unknown_external_ids(
    client: Client,
    bulk_members: Callable[..., list[Member]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    first, second = bulk_members(2)
    _operator(client, "rewards.grant_certification")
    upload = SimpleUploadedFile(
        "ids.csv",
        f"\ufeffexternal_id\n{first.external_id}\nghost\n{second.external_id}\n".encode(),
        content_type="text/csv",
    )

    page = client.get(CSV_UPLOAD)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            CSV_UPLOAD, {"certification": "onboarding", "evidence": "Guide", "file": upload}
        )

    assert page.status_code == 200
    operation = BulkOperation.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"{OPERATIONS}{operation.pk}/change/"
    assert list(
        BulkItem.objects.order_by("position").values_list("external_id", "status", "outcome")
    ) == [
        (first.external_id, "succeeded", "granted"),
        ("ghost", "failed", "unknown_member"),
        (second.external_id, "succeeded", "granted"),
    ]
    assert CertificationGrant.objects.filter(certification="onboarding").count() == 2
    failed = client.get(ITEMS, {"job__id__exact": str(operation.pk), "status__exact": "failed"})
    assert [item.external_id for item in failed.context["cl"].result_list] == ["ghost"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"external_id\n", "The file names no external id."),
        (b"\xff\xfe\x00bad", "The file is not UTF-8 text."),
    ],
)
def test_a_bad_csv_upload_shows_the_form_again_and_starts_nothing(
    client: Client, db: Any, content: bytes, message: str
) -> None:
    _operator(client, "rewards.grant_certification")

    response = client.post(
        CSV_UPLOAD,
        {"certification": "onboarding", "file": SimpleUploadedFile("ids.csv", content)},
    )

    assert response.status_code == 200
    assert response.context["form"].errors["file"] == [message]
    assert (Job.objects.count(), BulkItem.objects.count()) == (0, 0)


def test_the_csv_upload_needs_the_grant_permission(client: Client, db: Any) -> None:
    _operator(client, "rewards.award_points")

    response = client.get(CSV_UPLOAD)

    assert response.status_code == 403


def test_operators_see_their_own_operations_unless_they_may_view_all(
    client: Client,
    bulk_members: Callable[..., list[Member]],
) -> None:
    members = bulk_members(1)
    owner = _operator(client, "members.view_member", "tiers.run_reassessment")
    client.post(
        MEMBERS,
        {"action": "reassess_tiers", "_selected_action": [str(members[0].pk)], "apply": "1"},
    )
    operation = BulkOperation.objects.get()
    other = Client()
    _operator(other, "rewards.award_points")
    auditor = Client()
    _operator(auditor, "bulk.view_bulkoperation")
    nobody = Client()
    _operator(nobody, "members.view_member")

    assert operation.requested_by_user == owner
    assert list(client.get(OPERATIONS).context["cl"].result_list) == [operation]
    assert list(other.get(OPERATIONS).context["cl"].result_list) == []
    assert other.get(f"{OPERATIONS}{operation.pk}/change/").status_code == 302
    assert list(auditor.get(OPERATIONS).context["cl"].result_list) == [operation]
    assert nobody.get(OPERATIONS).status_code == 403


def test_the_progress_page_reloads_itself_until_the_job_ends(
    client: Client,
    bulk_members: Callable[..., list[Member]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    members = bulk_members(2)
    _operator(client, "members.view_member", "tiers.run_reassessment")
    selection = {"action": "reassess_tiers", "_selected_action": [str(members[0].pk)]}
    client.post(MEMBERS, {**selection, "apply": "1"})  # no commit hooks: stays pending
    with django_capture_on_commit_callbacks(execute=True):
        client.post(MEMBERS, {**selection, "apply": "1"})
    pending, done = BulkOperation.objects.order_by("created_at", "job__created_at")

    pending_page = client.get(f"{OPERATIONS}{pending.pk}/change/").content.decode()
    done_page = client.get(f"{OPERATIONS}{done.pk}/change/").content.decode()
    not_an_id = client.get(f"{OPERATIONS}not-a-uuid/change/")

    assert '<meta http-equiv="refresh" content="5">' in pending_page
    assert "0% (0 of 1 items)" in pending_page
    assert '<meta http-equiv="refresh"' not in done_page
    assert not_an_id.status_code == 302
