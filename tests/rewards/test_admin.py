"""The admin as an operator tool for the ledger: read-only pages, points actions, earning rules."""

from datetime import UTC, datetime

import pytest
import time_machine
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from core.actors import system_actor
from members.services import member_erase
from rewards.models import (
    DailyEarning,
    EarningRule,
    EntryKind,
    LotConsumption,
    PointsAccount,
    PointsEntry,
    Reason,
    SystemAccountBalance,
)
from rewards.selectors import ledger_violations
from rewards.services.earning import checkin_create
from rewards.services.ledger import points_award, points_deduct, system_account_shard

MEMBERS = "/admin/members/member/"
ENTRIES = "/admin/rewards/pointsentry/"
RULES = "/admin/rewards/earningrule/"
SYSTEM_ACCOUNTS = "/admin/rewards/systemaccountbalance/"
SYSTEM = system_actor("tests")
SET_UP_AT = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)  # 12:00 in Asia/Shanghai
ACTION_AT = datetime(2026, 3, 11, 5, 30, tzinfo=UTC)


def _messages(response):
    return [str(message) for message in get_messages(response.wsgi_request)]


def _action_names(response):
    return [name for name, _ in response.context["action_form"].fields["action"].choices]


def _available(member):
    return PointsAccount.objects.get(pk=member.pk).available


def _operator(client, *perms):
    """Log a staff user in who holds exactly these permissions (``app.codename``)."""
    user = User.objects.create_user(f"op-{User.objects.count()}", is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client.force_login(user)
    return user


def _award(member, points, **fields):
    return points_award(
        member=member,
        points=points,
        reason=fields.pop("reason", Reason.MANUAL),
        actor=SYSTEM,
        at=fields.pop("at", SET_UP_AT),
        **fields,
    )


@pytest.fixture
def ledger(make_member):
    """Ann: +100 manual, -30 manual, +5 check-in. Bob: +50 manual."""
    ann = make_member("ext-ann", display_name="Ann")
    bob = make_member("ext-bob", display_name="Bob")
    ann_earn = _award(ann, 100)
    ann_deduction = points_deduct(
        member=ann, points=30, reason=Reason.MANUAL, actor=SYSTEM, at=SET_UP_AT
    )
    check_in = checkin_create(member=ann, actor=SYSTEM, at=SET_UP_AT).check_in
    bob_earn = _award(bob, 50)
    return {
        "ann": ann,
        "bob": bob,
        "ann_earn": ann_earn,
        "ann_deduction": ann_deduction,
        "check_in": check_in,
        "bob_earn": bob_earn,
    }


# --- Read-only ledger ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        pytest.param(
            "pointsentry",
            {
                "q": "ext-ann",
                "kind__exact": "earn",
                "reason__exact": "manual",
                "created_at__gte": "2026-03-10 00:00:00+00:00",
                "created_at__lt": "2026-03-11 00:00:00+00:00",
            },
            lambda ledger: [ledger["ann_earn"].pk],
            id="entries by member, kind, reason and date",
        ),
        pytest.param(
            "pointsentry",
            {"q": "checkin:"},
            lambda ledger: [ledger["check_in"].entry_id],
            id="entries by the beginning of a reference",
        ),
        pytest.param(
            "pointsentry",
            {"q": "ext-ann", "kind__exact": "adjust"},
            lambda ledger: [ledger["ann_deduction"].pk],
            id="entries: a deduction",
        ),
        pytest.param(
            "pointsentry",
            {"q": "ext-ann", "counter_account__exact": "adjustment"},
            lambda ledger: [ledger["ann_deduction"].pk],
            id="entries by counter account",
        ),
        pytest.param(
            "pointsaccount",
            {"q": "ext-bob"},
            lambda ledger: [ledger["bob"].pk],
            id="accounts by member",
        ),
        pytest.param(
            "systemaccountbalance",
            {"account__exact": "adjustment", "balance__gt": "0"},
            lambda ledger: [
                SystemAccountBalance.objects.get(
                    account="adjustment", shard=system_account_shard(ledger["ann"].pk)
                ).pk
            ],
            id="system account shards by account",
        ),
        pytest.param(
            "pointslot",
            {"q": "ext-ann", "is_pending__exact": "0"},
            lambda ledger: [ledger["check_in"].entry_id, ledger["ann_earn"].pk],
            id="lots by member and pending",
        ),
        pytest.param(
            "lotconsumption",
            {"q": "ext-ann", "entry__kind__exact": "adjust"},
            lambda ledger: [LotConsumption.objects.get(entry=ledger["ann_deduction"]).pk],
            id="consumptions by member and entry kind",
        ),
        pytest.param(
            "checkin",
            {"q": "ext-ann", "business_date__gte": "2026-03-10", "business_date__lt": "2026-03-11"},
            lambda ledger: [ledger["check_in"].pk],
            id="check-ins by member and date",
        ),
        pytest.param(
            "dailyearning",
            {"q": "checkin", "business_date__gte": "2026-03-10", "business_date__lt": "2026-03-11"},
            lambda ledger: [DailyEarning.objects.get(member=ledger["ann"]).pk],
            id="daily earnings by event type and date",
        ),
        pytest.param(
            "earningrule",
            {"q": "post", "is_active__exact": "1"},
            lambda ledger: [EarningRule.objects.get(event_type="post").pk],
            id="earning rules by event type and activity",
        ),
    ],
)
def test_ledger_changelists_filter_and_search(admin_client, ledger, path, params, expected):
    response = admin_client.get(f"/admin/rewards/{path}/", params)

    assert response.status_code == 200
    assert [row.pk for row in response.context["cl"].result_list] == expected(ledger)
    assert ledger_violations() == []


@pytest.mark.parametrize(
    "path",
    [
        "pointsentry",
        "pointsaccount",
        "systemaccountbalance",
        "pointslot",
        "lotconsumption",
        "checkin",
        "dailyearning",
    ],
)
def test_ledger_changelists_offer_no_add_and_no_actions(admin_client, ledger, path):
    response = admin_client.get(f"/admin/rewards/{path}/")

    assert response.status_code == 200
    assert response.context["has_add_permission"] is False
    assert response.context["action_form"] is None


@pytest.mark.parametrize(
    ("path", "pk_of"),
    [
        ("pointsentry", lambda ledger: ledger["ann_earn"].pk),
        ("pointsaccount", lambda ledger: ledger["ann"].pk),
        (
            "systemaccountbalance",
            lambda ledger: (
                SystemAccountBalance.objects.filter(account="issuance")
                .exclude(balance=0)
                .first()
                .pk
            ),
        ),
        ("pointslot", lambda ledger: ledger["ann_earn"].pk),
        ("lotconsumption", lambda ledger: LotConsumption.objects.get().pk),
        ("checkin", lambda ledger: ledger["check_in"].pk),
        ("dailyearning", lambda ledger: DailyEarning.objects.get().pk),
    ],
)
def test_ledger_change_pages_are_view_only(admin_client, ledger, path, pk_of):
    response = admin_client.get(f"/admin/rewards/{path}/{pk_of(ledger)}/change/")

    assert response.status_code == 200
    assert response.context["has_change_permission"] is False
    assert response.context["has_delete_permission"] is False


def test_system_accounts_changelist_sums_each_account_over_its_shards(admin_client, ledger):
    response = admin_client.get(SYSTEM_ACCOUNTS)

    assert response.status_code == 200
    # Ann +100 -30 +5 (check-in), Bob +50: 155 issued, 30 adjusted back.
    assert response.context["system_accounts"] == [
        ("Issuance", -155),
        ("Redemption", 0),
        ("Expiry", 0),
        ("Adjustment", 30),
    ]
    assert response.context["system_total"] == -125
    assert b'id="system-account-totals"' in response.content
    assert ledger_violations() == []


def test_an_entry_cannot_be_added_changed_or_deleted(admin_client, ledger):
    entry = ledger["ann_earn"]
    change_url = reverse("admin:rewards_pointsentry_change", args=[entry.pk])
    posted = {
        "member": str(entry.member_id),
        "version": "1",
        "kind": "earn",
        "points": "1000",
        "balance_after": "1000",
        "reason": "manual",
        "actor": "operator:1",
        "created_at_0": "2026-03-10",
        "created_at_1": "04:00:00",
    }

    change = admin_client.post(change_url, posted)
    delete_page = admin_client.get(reverse("admin:rewards_pointsentry_delete", args=[entry.pk]))
    delete = admin_client.post(
        reverse("admin:rewards_pointsentry_delete", args=[entry.pk]), {"post": "yes"}
    )
    add = admin_client.post(reverse("admin:rewards_pointsentry_add"), posted)

    assert (change.status_code, delete_page.status_code, delete.status_code) == (403, 403, 403)
    assert add.status_code == 403
    entry.refresh_from_db()
    assert (entry.points, entry.balance_after, entry.actor) == (100, 100, "system:tests")
    assert PointsEntry.objects.count() == 4
    assert _available(ledger["ann"]) == 75
    assert ledger_violations() == []


def test_the_entries_changelist_runs_the_same_queries_for_1_and_50_rows(admin_client, make_member):
    members = [make_member(f"ext-{index}") for index in range(5)]
    _award(members[0], 10)
    admin_client.get(ENTRIES)  # warm the session and content types

    with CaptureQueriesContext(connection) as one_row:
        admin_client.get(ENTRIES)
    for index in range(49):
        _award(members[index % 5], 10)
    with CaptureQueriesContext(connection) as fifty_rows:
        response = admin_client.get(ENTRIES)

    assert len(response.context["cl"].result_list) == 50
    assert len(fifty_rows) == len(one_row)
    assert ledger_violations() == []


# --- Member actions: award and deduct ------------------------------------------------------------


def test_award_action_asks_for_the_points_first(client, superuser, make_member):
    ann = make_member("ext-ann", display_name="Ann")
    client.force_login(superuser)

    response = client.post(
        MEMBERS, {"action": "award_points", "index": "0", "_selected_action": [str(ann.pk)]}
    )

    assert response.status_code == 200
    assert response.templates[0].name == "admin/bulk/action_form.html"
    assert response.context["member_count"] == 1
    assert list(response.context["form"].fields) == ["points", "reason", "note", "expires_at"]
    assert b'name="apply"' in response.content
    assert PointsEntry.objects.count() == 0


def test_award_action_posts_the_exact_points_to_each_selected_member(
    client, superuser, make_member, django_capture_on_commit_callbacks
):
    ann = make_member("ext-ann", display_name="Ann")
    bob = make_member("ext-bob", display_name="Bob")
    carl = make_member("ext-carl", display_name="Carl")
    _award(bob, 5)
    client.force_login(superuser)

    with (
        time_machine.travel(ACTION_AT, tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = client.post(
            MEMBERS,
            {
                "action": "award_points",
                "_selected_action": [str(ann.pk), str(bob.pk)],
                "apply": "Award points",
                "points": "25",
                "reason": "correction",
                "note": "Missed purchase",
            },
        )

    assert response.status_code == 302
    assert _messages(response) == ["Award points: started a background job for 2 member(s)."]
    assert (_available(ann), _available(bob)) == (25, 30)
    assert not PointsAccount.objects.filter(pk=carl.pk).exists()
    entry = PointsEntry.objects.get(member=ann)
    assert (entry.kind, entry.points, entry.balance_after, entry.version) == ("earn", 25, 25, 1)
    assert (entry.reason, entry.note) == (Reason.CORRECTION, "Missed purchase")
    assert entry.actor == f"operator:{superuser.pk}"
    assert entry.created_at == ACTION_AT
    assert PointsEntry.objects.filter(member=bob, actor=f"operator:{superuser.pk}").count() == 1
    assert ledger_violations() == []


def test_deduct_action_reports_a_member_short_of_points_and_deducts_the_others(
    client, superuser, make_member
):
    ann = make_member("ext-ann", display_name="Ann")
    bob = make_member("ext-bob", display_name="Bob")
    _award(ann, 100)
    _award(bob, 10)
    client.force_login(superuser)

    response = client.post(
        MEMBERS,
        {
            "action": "deduct_points",
            "_selected_action": [str(ann.pk), str(bob.pk)],
            "apply": "Deduct points",
            "points": "30",
            "reason": "manual",
            "note": "",
        },
    )

    assert response.status_code == 302
    assert _messages(response) == [
        "ext-bob: 30 points requested, 10 available.",
        "Deducted 30 points from 1 member(s).",
    ]
    assert (_available(ann), _available(bob)) == (70, 10)
    deduction = PointsEntry.objects.get(member=ann, kind=EntryKind.ADJUST)
    assert (deduction.points, deduction.balance_after, deduction.reason) == (-30, 70, "manual")
    assert deduction.actor == f"operator:{superuser.pk}"
    assert PointsEntry.objects.filter(member=bob).count() == 1
    assert PointsAccount.objects.get(pk=bob.pk).version == 1
    assert ledger_violations() == []


@pytest.mark.parametrize(
    ("points", "reason"),
    [("0", "manual"), ("-5", "manual"), ("abc", "manual"), ("10", "purchase"), ("", "manual")],
)
def test_points_action_with_an_invalid_form_shows_it_again_and_posts_nothing(
    client, superuser, make_member, points, reason
):
    ann = make_member("ext-ann", display_name="Ann")
    client.force_login(superuser)

    response = client.post(
        MEMBERS,
        {
            "action": "award_points",
            "_selected_action": [str(ann.pk)],
            "apply": "Award points",
            "points": points,
            "reason": reason,
        },
    )

    assert response.status_code == 200
    assert response.templates[0].name == "admin/bulk/action_form.html"
    assert response.context["form"].errors
    assert PointsEntry.objects.count() == 0
    assert not PointsAccount.objects.filter(pk=ann.pk).exists()


def test_points_actions_skip_erased_members(
    client, superuser, make_member, django_capture_on_commit_callbacks
):
    ann = make_member("ext-ann", display_name="Ann")
    gone = make_member("ext-gone", display_name="Gone")
    member_erase(member=gone, actor=SYSTEM, at=SET_UP_AT)
    client.force_login(superuser)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            MEMBERS,
            {
                "action": "award_points",
                "_selected_action": [str(ann.pk), str(gone.pk)],
                "apply": "Award points",
                "points": "10",
                "reason": "manual",
            },
        )

    assert response.status_code == 302
    # Erased members are left out of the job's selection.
    assert _messages(response) == ["Award points: started a background job for 1 member(s)."]
    assert _available(ann) == 10
    assert PointsEntry.objects.filter(member=gone).count() == 0
    assert ledger_violations() == []


def test_points_action_on_erased_members_only_asks_nothing(client, superuser, make_member):
    gone = make_member("ext-gone", display_name="Gone")
    member_erase(member=gone, actor=SYSTEM, at=SET_UP_AT)
    client.force_login(superuser)

    response = client.post(
        MEMBERS, {"action": "deduct_points", "index": "0", "_selected_action": [str(gone.pk)]}
    )

    assert response.status_code == 302
    assert _messages(response) == ["The selected members are erased; their points cannot change."]
    assert PointsEntry.objects.count() == 0


def test_deduct_action_refuses_more_members_than_the_limit(
    client, superuser, make_member, monkeypatch
):
    # The award action is a background job on any selection (tests/bulk); deducting is capped.
    monkeypatch.setattr("members.admin.MAX_POINTS_ACTION_MEMBERS", 1)
    ann = make_member("ext-ann", display_name="Ann")
    bob = make_member("ext-bob", display_name="Bob")
    client.force_login(superuser)

    response = client.post(
        MEMBERS,
        {
            "action": "deduct_points",
            "_selected_action": [str(ann.pk), str(bob.pk)],
            "apply": "Deduct points",
            "points": "10",
            "reason": "manual",
        },
    )

    assert response.status_code == 302
    assert _messages(response) == ["Select at most 1 members; nothing was posted."]
    assert PointsEntry.objects.count() == 0


@pytest.mark.parametrize(
    ("perms", "visible"),
    [
        pytest.param(("members.view_member",), set(), id="operator without points permissions"),
        pytest.param(
            ("members.view_member", "rewards.award_points"),
            {"award_points"},
            id="operator who may award",
        ),
        pytest.param(
            ("members.view_member", "rewards.deduct_points"),
            {"deduct_points"},
            id="operator who may deduct",
        ),
    ],
)
def test_points_actions_are_offered_only_with_their_permission(client, db, perms, visible):
    _operator(client, *perms)

    response = client.get(MEMBERS)

    assert response.status_code == 200
    assert set(_action_names(response)) & {"award_points", "deduct_points"} == visible


def test_an_operator_without_the_award_permission_cannot_run_the_action(client, make_member):
    ann = make_member("ext-ann", display_name="Ann")
    _operator(client, "members.view_member", "rewards.deduct_points")

    response = client.post(
        MEMBERS,
        {
            "action": "award_points",
            "_selected_action": [str(ann.pk)],
            "apply": "Award points",
            "points": "10",
            "reason": "manual",
        },
    )

    assert response.status_code == 302
    assert _messages(response) == ["No action selected."]
    assert PointsEntry.objects.count() == 0
    assert not PointsAccount.objects.filter(pk=ann.pk).exists()


def test_an_operator_with_the_award_permission_awards_as_themselves(
    client, make_member, django_capture_on_commit_callbacks
):
    ann = make_member("ext-ann", display_name="Ann")
    operator = _operator(client, "members.view_member", "rewards.award_points")

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            MEMBERS,
            {
                "action": "award_points",
                "_selected_action": [str(ann.pk)],
                "apply": "Award points",
                "points": "7",
                "reason": "manual",
            },
        )

    assert response.status_code == 302
    assert _available(ann) == 7
    assert PointsEntry.objects.get(member=ann).actor == f"operator:{operator.pk}"
    assert ledger_violations() == []


# --- Earning rules -------------------------------------------------------------------------------


def _rule_form(rule, **overrides):
    data = {
        "event_type": rule.event_type,
        "points": str(rule.points),
        "daily_cap": "" if rule.daily_cap is None else str(rule.daily_cap),
        "hourly_limit": "" if rule.hourly_limit is None else str(rule.hourly_limit),
        "min_tier": "",
        "pending_days": str(rule.pending_days),
        "expiry_days": "" if rule.expiry_days is None else str(rule.expiry_days),
        "is_active": "on",
    }
    data.update(overrides)
    return data


def test_editing_an_earning_rule_updates_it_and_its_updated_at(admin_client, db):
    rule = EarningRule.objects.get(event_type="post")

    with time_machine.travel(ACTION_AT, tick=False):
        response = admin_client.post(
            f"{RULES}{rule.pk}/change/",
            _rule_form(rule, points="30", daily_cap="150", expiry_days="90"),
        )

    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.points, rule.daily_cap, rule.hourly_limit) == (30, 150, 10)
    assert (rule.expiry_days, rule.is_active, rule.updated_at) == (90, True, ACTION_AT)


def test_earning_rules_are_edited_in_the_list(admin_client, db):
    rule = EarningRule.objects.get(event_type="post")
    untouched = EarningRule.objects.get(event_type="like").updated_at

    with time_machine.travel(ACTION_AT, tick=False):
        response = admin_client.post(
            f"{RULES}?q=post",
            {
                "form-TOTAL_FORMS": "1",
                "form-INITIAL_FORMS": "1",
                "form-MIN_NUM_FORMS": "0",
                "form-MAX_NUM_FORMS": "1000",
                "form-0-id": str(rule.pk),
                "form-0-points": "25",
                "form-0-daily_cap": "",
                "form-0-hourly_limit": "3",
                "_save": "Save",
            },
        )

    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.points, rule.daily_cap, rule.hourly_limit) == (25, None, 3)
    assert (rule.is_active, rule.updated_at) == (False, ACTION_AT)
    assert EarningRule.objects.get(event_type="like").updated_at == untouched


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"points": "0"}, "points", id="zero points"),
        pytest.param({"pending_days": "30", "expiry_days": "30"}, "pending_days", id="pending"),
        pytest.param({"pending_days": "365"}, "pending_days", id="pending past default expiry"),
    ],
)
def test_an_invalid_earning_rule_edit_changes_nothing(admin_client, db, overrides, field):
    rule = EarningRule.objects.get(event_type="post")
    before = EarningRule.objects.values().get(pk=rule.pk)

    response = admin_client.post(f"{RULES}{rule.pk}/change/", _rule_form(rule, **overrides))

    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == [field]
    assert EarningRule.objects.values().get(pk=rule.pk) == before


def test_an_earning_rule_with_zero_points_is_refused_in_the_list(admin_client, db):
    rule = EarningRule.objects.get(event_type="post")
    before = EarningRule.objects.values().get(pk=rule.pk)

    response = admin_client.post(
        f"{RULES}?q=post",
        {
            "form-TOTAL_FORMS": "1",
            "form-INITIAL_FORMS": "1",
            "form-MIN_NUM_FORMS": "0",
            "form-MAX_NUM_FORMS": "1000",
            "form-0-id": str(rule.pk),
            "form-0-points": "0",
            "form-0-daily_cap": "100",
            "form-0-hourly_limit": "10",
            "form-0-is_active": "on",
            "_save": "Save",
        },
    )

    assert response.status_code == 200
    assert response.context["cl"].formset.errors == [
        {"points": ["Ensure this value is greater than or equal to 1."]}
    ]
    assert EarningRule.objects.values().get(pk=rule.pk) == before


def test_the_earning_rule_add_page_loads(admin_client, db):
    response = admin_client.get(f"{RULES}add/")

    assert response.status_code == 200
    assert "updated_at" not in response.context["adminform"].form.fields


def test_the_rule_list_shows_the_rules_by_event_type(admin_client, db):
    response = admin_client.get(RULES)

    assert response.status_code == 200
    assert [row.event_type for row in response.context["cl"].result_list] == [
        "checkin",
        "comment",
        "course_completed",
        "like",
        "post",
        "purchase",
        "share",
    ]
