"""The admin as an operator tool: members, tags, CSV export and import, partners and their keys."""

import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from core.actors import system_actor
from core.models import IdempotencyRecord, Partner, PartnerAPIKey
from members.csv_io import members_csv_rows
from members.models import Identity, LifecycleStage, Member, MemberTag, TagChange
from members.services import (
    TagInput,
    TagSyncItem,
    TagSyncMode,
    identities_replace,
    tags_sync,
)
from tiers.models import Tier

CHANGELIST = "/admin/members/member/"
IMPORT = "/admin/members/member/import-csv/"
JOINED = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
KEY_IN_MESSAGE = re.compile(r"Key: ([A-Za-z0-9]+\.[A-Za-z0-9]+)")


def _messages(response):
    return [str(message) for message in get_messages(response.wsgi_request)]


def _change_url(member):
    return reverse("admin:members_member_change", args=[member.pk])


def _member_form(member, **overrides):
    """The member change form as the browser posts it, with both inlines' management forms."""
    data = {
        "display_name": member.display_name,
        "email": member.email,
        "phone": member.phone,
        "user": "",
        "identities-TOTAL_FORMS": "0",
        "identities-INITIAL_FORMS": "0",
        "identities-MIN_NUM_FORMS": "0",
        "identities-MAX_NUM_FORMS": "1000",
        "tags-TOTAL_FORMS": "0",
        "tags-INITIAL_FORMS": "0",
        "tags-MIN_NUM_FORMS": "0",
        "tags-MAX_NUM_FORMS": "0",
    }
    data.update(overrides)
    return data


def _tag(member, namespace, key, value="", **fields):
    tags_sync(
        namespace=namespace,
        mode=TagSyncMode.MERGE,
        items=[TagSyncItem(external_id=member.external_id, tags=[TagInput(key, value, **fields)])],
        actor=system_actor("tests"),
        at=timezone.now(),
    )


def _upload(content, name="upload.csv"):
    return SimpleUploadedFile(name, content.encode(), content_type="text/csv")


def _csv(response):
    return b"".join(response.streaming_content).decode()


# --- Access --------------------------------------------------------------------------------------


def test_non_staff_user_is_redirected_to_the_admin_login(client, db):
    user = User.objects.create_user("plain", password="pw-plain-123")
    client.force_login(user)

    response = client.get(CHANGELIST)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={CHANGELIST}"


# --- Member list and pages -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/admin/members/member/add/",
        IMPORT,
        "/admin/members/identity/",
        "/admin/members/membertag/",
        "/admin/members/membertag/add/",
        "/admin/members/tagchange/",
        "/admin/core/partner/add/",
        "/admin/core/partnerapikey/",
        "/admin/core/partnerapikey/add/",
        "/admin/core/idempotencyrecord/",
        "/admin/tiers/tier/",
        "/admin/tiers/tier/basic/change/",
    ],
)
def test_admin_pages_load(admin_client, db, url):
    response = admin_client.get(url)

    assert response.status_code == 200


def test_partner_and_tag_change_pages_load(admin_client, make_member, make_partner):
    partner, _ = make_partner("Shop")
    _tag(make_member("ext-1"), partner.namespace, "vip")

    partner_page = admin_client.get(f"/admin/core/partner/{partner.pk}/change/")
    tag_page = admin_client.get(f"/admin/members/membertag/{MemberTag.objects.get().pk}/change/")

    assert (partner_page.status_code, tag_page.status_code) == (200, 200)


def test_changelist_searches_by_identity_and_filters_by_tier_stage_join_date_and_erasure(
    admin_client, make_member
):
    found = make_member("ext-1", display_name="Ann", joined_at=JOINED)
    make_member("ext-2", display_name="Bob", joined_at=JOINED)
    identities_replace(
        member=found, identities=[("wechat", "openid-1")], actor=system_actor("t"), at=JOINED
    )

    response = admin_client.get(
        CHANGELIST,
        {
            "q": "openid-1",
            "tier__code__exact": "basic",
            "lifecycle_stage__exact": "new",
            "joined_at__gte": "2025-01-01 00:00:00+00:00",
            "joined_at__lt": "2025-01-03 00:00:00+00:00",
            "erased": "no",
        },
    )

    assert response.status_code == 200
    assert [member.pk for member in response.context["cl"].result_list] == [found.pk]


def test_changelist_links_to_the_import_page(admin_client, db):
    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    assert f'href="{IMPORT}"'.encode() in response.content


def test_member_change_page_loads(admin_client, make_member):
    member = make_member("ext-1", display_name="Ann")

    response = admin_client.get(_change_url(member))

    assert response.status_code == 200
    assert b"ext-1" in response.content


def test_tier_and_lifecycle_cannot_be_changed_from_the_member_form(admin_client, make_member):
    member = make_member("ext-1", display_name="Ann")

    response = admin_client.post(
        _change_url(member),
        _member_form(
            member,
            display_name="Ann Lee",
            tier="kol",
            lifecycle_stage="active",
            external_id="hijacked",
        ),
    )

    assert response.status_code == 302
    member.refresh_from_db()
    assert member.display_name == "Ann Lee"
    assert member.tier_id == "basic"
    assert member.lifecycle_stage == LifecycleStage.NEW
    assert member.external_id == "ext-1"


def test_adding_a_member_registers_it_at_the_bottom_rung(admin_client, db):
    response = admin_client.post(
        "/admin/members/member/add/",
        {
            "external_id": "ext-9",
            "display_name": "Nina",
            "email": "nina@example.com",
            "phone": "",
            "joined_at_0": "2025-01-02",
            "joined_at_1": "03:04:05",
            "user": "",
            "identities-TOTAL_FORMS": "1",
            "identities-INITIAL_FORMS": "0",
            "identities-MIN_NUM_FORMS": "0",
            "identities-MAX_NUM_FORMS": "1000",
            "identities-0-provider": "wechat",
            "identities-0-value": "openid-9",
            "tags-TOTAL_FORMS": "0",
            "tags-INITIAL_FORMS": "0",
            "tags-MIN_NUM_FORMS": "0",
            "tags-MAX_NUM_FORMS": "0",
        },
    )

    assert response.status_code == 302
    member = Member.objects.get()
    assert (member.external_id, member.display_name, member.email) == (
        "ext-9",
        "Nina",
        "nina@example.com",
    )
    assert member.tier_id == "basic"
    assert member.lifecycle_stage == LifecycleStage.NEW
    assert member.joined_at == JOINED
    assert list(Identity.objects.values_list("member", "provider", "value")) == [
        (member.pk, "wechat", "openid-9")
    ]


def test_identities_edited_inline_are_replaced_through_the_service(admin_client, make_member):
    member = make_member("ext-1", display_name="Ann")
    identities_replace(
        member=member, identities=[("wechat", "old")], actor=system_actor("t"), at=JOINED
    )
    old = Identity.objects.get()

    response = admin_client.post(
        _change_url(member),
        _member_form(
            member,
            **{
                "identities-TOTAL_FORMS": "2",
                "identities-INITIAL_FORMS": "1",
                "identities-0-id": str(old.pk),
                "identities-0-member": str(member.pk),
                "identities-0-provider": "wechat",
                "identities-0-value": "old",
                "identities-0-DELETE": "on",
                "identities-1-member": str(member.pk),
                "identities-1-provider": "shop",
                "identities-1-value": "s-1",
            },
        ),
    )

    assert response.status_code == 302
    assert list(Identity.objects.values_list("member", "provider", "value")) == [
        (member.pk, "shop", "s-1")
    ]


def test_member_login_account_is_linked_from_the_form(admin_client, make_member):
    member = make_member("ext-1", display_name="Ann")
    login = User.objects.create_user("ann-login")

    response = admin_client.post(_change_url(member), _member_form(member, user=str(login.pk)))

    assert response.status_code == 302
    member.refresh_from_db()
    assert member.user_id == login.pk


def test_a_staff_account_cannot_become_a_member_login(admin_client, make_member):
    member = make_member("ext-1", display_name="Ann")
    staff = User.objects.create_user("staff-2", is_staff=True)

    response = admin_client.post(_change_url(member), _member_form(member, user=str(staff.pk)))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["user"] == [
        "Select a valid choice. That choice is not one of the available choices."
    ]
    member.refresh_from_db()
    assert member.user_id is None


def test_members_cannot_be_deleted_from_the_admin(admin_client, make_member):
    member = make_member("ext-1")

    response = admin_client.get(reverse("admin:members_member_delete", args=[member.pk]))
    changelist = admin_client.get(CHANGELIST)

    assert response.status_code == 403
    assert "delete_selected" not in [
        name for name, _ in changelist.context["action_form"].fields["action"].choices
    ]
    assert Member.objects.filter(pk=member.pk).exists()


def test_erase_action_asks_first_then_erases_personal_data_and_keeps_the_row(
    admin_client, make_member, make_partner
):
    partner, _ = make_partner("Shop")
    member = make_member("ext-1", display_name="Ann", email="ann@example.com")
    _tag(member, partner.namespace, "vip")
    identities_replace(
        member=member, identities=[("wechat", "openid-1")], actor=system_actor("t"), at=JOINED
    )
    kept = make_member("ext-2", display_name="Bob")
    action = {"action": "erase_personal_data", "_selected_action": [str(member.pk)]}

    confirmation = admin_client.post(CHANGELIST, {**action, "index": "0"})
    member.refresh_from_db()
    display_name_before_confirming = member.display_name
    response = admin_client.post(CHANGELIST, {**action, "confirm": "yes"})

    assert confirmation.status_code == 200
    assert confirmation.templates[0].name == "admin/members/member/erase_confirmation.html"
    assert display_name_before_confirming == "Ann"
    assert response.status_code == 302
    member.refresh_from_db()
    assert member.display_name == "Erased member"
    assert member.external_id == f"erased:{member.pk}"
    assert member.email == ""
    assert member.erased_at is not None
    assert Member.objects.count() == 2
    assert MemberTag.objects.filter(member=member).count() == 0
    assert Identity.objects.filter(member=member).count() == 0
    kept.refresh_from_db()
    assert (kept.display_name, kept.erased_at) == ("Bob", None)


def test_an_erased_member_is_read_only(admin_client, make_member):
    member = make_member("ext-1", display_name="Ann")
    admin_client.post(
        CHANGELIST,
        {"action": "erase_personal_data", "_selected_action": [str(member.pk)], "confirm": "yes"},
    )
    member.refresh_from_db()

    response = admin_client.post(_change_url(member), _member_form(member, display_name="Back"))

    assert response.status_code == 302
    member.refresh_from_db()
    assert member.display_name == "Erased member"


# --- CSV export ----------------------------------------------------------------------------------


def test_members_csv_export_streams_the_selected_members_with_their_tags(
    admin_client, make_member, make_partner
):
    partner, _ = make_partner("Shop")
    ann = make_member(
        "ext-1", display_name="Ann", email="ann@example.com", phone="+86 138", joined_at=JOINED
    )
    bob = make_member("ext-2", display_name="=HYPERLINK(1)", joined_at=JOINED)
    make_member("ext-3", display_name="Not selected", joined_at=JOINED)
    _tag(ann, partner.namespace, "vip", "gold")
    _tag(ann, partner.namespace, "age", "30")

    response = admin_client.post(
        CHANGELIST,
        {
            "action": "export_members_csv",
            "_selected_action": [str(bob.pk), str(ann.pk)],
            "index": "0",
        },
    )

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(
        r'attachment; filename="members-\d{8}-\d{6}\.csv"', response["Content-Disposition"]
    )
    assert _csv(response) == (
        "\ufeffid,external_id,display_name,email,phone,tier,lifecycle_stage,joined_at,tags,"
        "points_available,points_pending,points_lifetime_earned\r\n"
        f"{ann.pk},ext-1,Ann,ann@example.com,+86 138,basic,new,2025-01-02T03:04:05+00:00,"
        "shop:age=30;shop:vip=gold,0,0,0\r\n"
        f"{bob.pk},ext-2,'=HYPERLINK(1),,,basic,new,2025-01-02T03:04:05+00:00,,0,0,0\r\n"
    )


def test_members_csv_rows_read_in_two_queries_whatever_the_number_of_members(
    make_member, make_partner, django_assert_num_queries
):
    partner, _ = make_partner("Shop")
    for number in range(5):
        _tag(make_member(f"ext-{number}"), partner.namespace, "vip")

    with django_assert_num_queries(2):  # one chunk of members, one of their tags
        rows = list(members_csv_rows(members=Member.objects.all()))

    assert len(rows) == 6


def test_tags_csv_export_has_one_row_per_tag(admin_client, make_member, make_partner):
    partner, _ = make_partner("Shop")
    ann = make_member("ext-1")
    bob = make_member("ext-2")
    expires_at = datetime(2099, 1, 1, tzinfo=UTC)
    _tag(ann, partner.namespace, "vip", "gold", category="shopping", expires_at=expires_at)
    _tag(bob, partner.namespace, "new")

    response = admin_client.post(
        CHANGELIST,
        {
            "action": "export_tags_csv",
            "_selected_action": [str(ann.pk), str(bob.pk)],
            "index": "0",
        },
    )

    assert response.status_code == 200
    assert _csv(response) == (
        "\ufeffexternal_id,namespace,key,value,category,expires_at\r\n"
        "ext-1,shop,vip,gold,shopping,2099-01-01T00:00:00+00:00\r\n"
        "ext-2,shop,new,,custom,\r\n"
    )


# --- CSV import ----------------------------------------------------------------------------------


def test_members_csv_import_creates_new_and_updates_known_members(admin_client, make_member):
    known = make_member("ext-1", display_name="Ann", email="ann@example.com", phone="123")
    same = make_member("ext-2", display_name="Bob")
    content = (
        "external_id,display_name,email\n"
        "ext-1,Ann Lee,ann.lee@example.com\n"
        "ext-2,Bob,\n"
        "ext-3,'=Cleo,cleo@example.com\n"
    )

    response = admin_client.post(IMPORT, {"kind": "members", "file": _upload(content)}, follow=True)

    assert response.redirect_chain == [(CHANGELIST, 302)]
    assert _messages(response) == ["Members imported: 1 created, 1 updated, 1 unchanged."]
    known.refresh_from_db()
    assert (known.display_name, known.email, known.phone) == (
        "Ann Lee",
        "ann.lee@example.com",
        "123",
    )
    same.refresh_from_db()
    assert same.updated_at == same.created_at
    created = Member.objects.get(external_id="ext-3")
    assert (created.display_name, created.email, created.phone) == ("=Cleo", "cleo@example.com", "")
    assert (created.tier_id, created.lifecycle_stage) == ("basic", LifecycleStage.NEW)


def test_tags_csv_import_merges_tags_by_namespace(admin_client, make_member, make_partner):
    shop, _ = make_partner("Shop")
    make_partner("CRM")
    ann = make_member("ext-1")
    make_member("ext-2")
    _tag(ann, shop.namespace, "kept", "yes")
    _tag(ann, shop.namespace, "vip", "silver")
    content = (
        "\ufeffexternal_id,namespace,key,value,category,expires_at\n"
        "ext-1,shop,vip,gold,shopping,2099-01-01T00:00:00+00:00\n"
        "ext-2,shop,new,,,\n"
        "ext-2,crm,segment,b2b,custom,\n"
    )

    response = admin_client.post(IMPORT, {"kind": "tags", "file": _upload(content)}, follow=True)

    assert response.redirect_chain == [(CHANGELIST, 302)]
    assert _messages(response) == ["Tags imported: 3 row(s), 2 member(s) changed."]
    assert list(
        MemberTag.objects.order_by("member__external_id", "namespace", "key").values_list(
            "member__external_id", "namespace", "key", "value", "category", "expires_at", "source"
        )
    ) == [
        ("ext-1", "shop", "kept", "yes", "custom", None, "tag_sync"),
        (
            "ext-1",
            "shop",
            "vip",
            "gold",
            "shopping",
            datetime(2099, 1, 1, tzinfo=UTC),
            "csv_import",
        ),
        ("ext-2", "crm", "segment", "b2b", "custom", None, "csv_import"),
        ("ext-2", "shop", "new", "", "custom", None, "csv_import"),
    ]
    assert sorted(
        TagChange.objects.filter(source="csv_import").values_list(
            "member__external_id", "namespace", "key", "action"
        )
    ) == [
        ("ext-1", "shop", "vip", "updated"),
        ("ext-2", "crm", "segment", "added"),
        ("ext-2", "shop", "new", "added"),
    ]


def test_a_members_csv_with_invalid_rows_imports_nothing_and_lists_every_error(
    admin_client, make_member
):
    known = make_member("ext-1", display_name="Ann")
    content = (
        "external_id,display_name,email\n"
        "ext-1,Ann Lee,\n"
        "ext-2,Bob,not-an-email\n"
        "has space,Cleo,\n"
        "ext-1,Again,\n"
    )

    response = admin_client.post(IMPORT, {"kind": "members", "file": _upload(content)})

    assert response.status_code == 200
    assert _messages(response) == [
        "The file has 3 error(s); nothing was imported.",
        "Row 3, email: Enter a valid email address.",
        "Row 4, external_id: Enter a valid value.",
        "Row 5, external_id: Repeats row 2.",
    ]
    known.refresh_from_db()
    assert known.display_name == "Ann"
    assert Member.objects.count() == 1


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ("ext-1,nobody,vip,,,", "Row 3, namespace: No partner owns the namespace 'nobody'."),
        ("ext-1,system,vip,,,", "Row 3, namespace: The system namespace is computed by the API."),
        ("ext-9,shop,vip,,,", "Row 3, external_id: No member with this external_id."),
        (
            "ext-1,shop,vip,,gold,",
            "Row 3, category: Select a valid choice. gold is not one of the available choices.",
        ),
        ("ext-1,shop,vip,,,2000-01-01T00:00:00Z", "Row 3, expires_at: Must be in the future."),
        ("ext-1,shop,ok,,", "Row 3: The row has 5 cells, the header 6."),
    ],
)
def test_a_tags_csv_with_an_invalid_row_imports_nothing(
    admin_client, make_member, make_partner, row, error
):
    make_partner("Shop")
    make_member("ext-1")
    content = f"external_id,namespace,key,value,category,expires_at\next-1,shop,first,,,\n{row}\n"

    response = admin_client.post(IMPORT, {"kind": "tags", "file": _upload(content)})

    assert response.status_code == 200
    assert _messages(response) == ["The file has 1 error(s); nothing was imported.", error]
    assert MemberTag.objects.count() == 0
    assert TagChange.objects.count() == 0


def test_a_csv_with_unknown_columns_is_refused_whole(admin_client, make_member):
    make_member("ext-1", display_name="Ann")
    content = "external_id,display_name,tier\next-1,Ann,kol\n"

    response = admin_client.post(IMPORT, {"kind": "members", "file": _upload(content)})

    assert _messages(response) == [
        "The file has 1 error(s); nothing was imported.",
        "Row 1: Unknown columns: tier. Allowed: external_id, display_name, email, phone.",
    ]
    assert Member.objects.get().tier_id == "basic"


# --- Tags ----------------------------------------------------------------------------------------


def test_adding_a_tag_in_the_admin_goes_through_the_tag_sync(
    admin_client, admin_user, make_member, make_partner
):
    make_partner("Shop")
    member = make_member("ext-1")

    response = admin_client.post(
        "/admin/members/membertag/add/",
        {
            "member": str(member.pk),
            "namespace": "shop",
            "key": "vip",
            "value": "gold",
            "category": "shopping",
        },
    )

    assert response.status_code == 302
    tag = MemberTag.objects.get()
    assert (tag.namespace, tag.key, tag.value, tag.category, tag.source) == (
        "shop",
        "vip",
        "gold",
        "shopping",
        "admin",
    )
    assert tag.written_by == f"operator:{admin_user.pk}"
    assert list(TagChange.objects.values_list("action", "source", "actor")) == [
        ("added", "admin", f"operator:{admin_user.pk}")
    ]


def test_editing_a_tag_in_the_admin_updates_it_through_the_tag_sync(
    admin_client, admin_user, make_member, make_partner
):
    partner, _ = make_partner("Shop")
    _tag(make_member("ext-1"), partner.namespace, "vip", "silver")
    tag = MemberTag.objects.get()

    response = admin_client.post(
        f"/admin/members/membertag/{tag.pk}/change/",
        {"key": "renamed", "value": "gold", "category": "custom"},
    )

    assert response.status_code == 302
    tag.refresh_from_db()
    assert (tag.key, tag.value, tag.source) == ("vip", "gold", "admin")
    assert list(
        TagChange.objects.filter(action="updated").values_list("old_value", "new_value", "actor")
    ) == [
        (
            {"value": "silver", "category": "custom", "expires_at": None},
            {"value": "gold", "category": "custom", "expires_at": None},
            f"operator:{admin_user.pk}",
        )
    ]


def test_an_operator_cannot_write_the_system_namespace_in_the_admin(admin_client, make_member):
    member = make_member("ext-1")

    response = admin_client.post(
        "/admin/members/membertag/add/",
        {"member": str(member.pk), "namespace": "system", "key": "vip", "category": "custom"},
        follow=True,
    )

    assert _messages(response) == ["The system namespace is computed by the API."]
    assert MemberTag.objects.count() == 0


def test_tag_changes_are_read_only(admin_client, db):
    response = admin_client.get("/admin/members/tagchange/add/")

    assert response.status_code == 403


# --- Partners and keys ---------------------------------------------------------------------------


def test_creating_a_partner_sets_scopes_and_shows_its_first_key_once(admin_client, db):
    before = timezone.now()

    response = admin_client.post(
        "/admin/core/partner/add/",
        {"name": "Demo Shop", "namespace": "", "scopes": ["members:read", "tags:write"]},
        follow=True,
    )
    again = admin_client.get("/admin/core/partner/")

    partner = Partner.objects.get()
    assert (partner.name, partner.namespace, partner.scopes, partner.is_active) == (
        "Demo Shop",
        "demo-shop",
        ["members:read", "tags:write"],
        True,
    )
    assert before <= partner.created_at <= timezone.now()
    [message] = [text for text in _messages(response) if "Key:" in text]
    key = KEY_IN_MESSAGE.search(message).group(1)
    assert PartnerAPIKey.objects.get_from_key(key).partner == partner
    assert key.encode() not in again.content


def test_editing_a_partner_changes_scopes_but_never_the_namespace(admin_client, make_partner):
    partner, _ = make_partner("Shop", scopes=["members:read"])

    response = admin_client.post(
        f"/admin/core/partner/{partner.pk}/change/",
        {
            "name": "Shop",
            "namespace": "other",
            "scopes": ["events:write"],
            "is_active": "",
            "api_keys-TOTAL_FORMS": "1",
            "api_keys-INITIAL_FORMS": "1",
            "api_keys-MIN_NUM_FORMS": "0",
            "api_keys-MAX_NUM_FORMS": "0",
        },
    )

    assert response.status_code == 302
    partner.refresh_from_db()
    assert (partner.namespace, partner.scopes, partner.is_active) == (
        "shop",
        ["events:write"],
        False,
    )


def test_issue_key_action_shows_the_key_once_and_stores_only_its_hash(admin_client, make_partner):
    partner, _ = make_partner("Shop")

    response = admin_client.post(
        "/admin/core/partner/",
        {"action": "issue_api_key", "_selected_action": [str(partner.pk)], "index": "0"},
    )
    shown = admin_client.get("/admin/core/partner/")
    shown_again = admin_client.get("/admin/core/partner/")

    assert response.status_code == 302
    key = KEY_IN_MESSAGE.search(shown.content.decode()).group(1)
    assert key.encode() not in shown_again.content
    issued = PartnerAPIKey.objects.get_from_key(key)
    assert issued.partner == partner
    assert key not in (issued.hashed_key, issued.id)
    assert PartnerAPIKey.objects.filter(partner=partner).count() == 2


def test_partner_api_key_admin_issues_a_hashed_key(admin_client, make_partner):
    partner, _ = make_partner("Shop")

    response = admin_client.post(
        "/admin/core/partnerapikey/add/",
        {"partner": str(partner.pk), "name": "crm sync", "expiry_date_0": "", "expiry_date_1": ""},
        follow=True,
    )

    [message] = [text for text in _messages(response) if "Key:" in text]
    issued = PartnerAPIKey.objects.get_from_key(KEY_IN_MESSAGE.search(message).group(1))
    assert (issued.partner, issued.name, issued.revoked) == (partner, "crm sync", False)


def test_idempotency_records_are_read_only(admin_client, db):
    record = IdempotencyRecord.objects.create(
        owner="partner:1",
        key="k-1",
        method="POST",
        path="/api/v1/members/",
        fingerprint="f",
        response_status=201,
        response_body={},
        created_at=timezone.now(),
    )

    listing = admin_client.get("/admin/core/idempotencyrecord/", {"q": "k-1"})
    add = admin_client.get("/admin/core/idempotencyrecord/add/")
    delete = admin_client.get(f"/admin/core/idempotencyrecord/{record.pk}/delete/")

    assert listing.status_code == 200
    assert list(listing.context["cl"].result_list) == [record]
    assert (add.status_code, delete.status_code) == (403, 403)


# --- Tiers ---------------------------------------------------------------------------------------


def test_tier_code_is_read_only_after_creation(admin_client, db):
    response = admin_client.post(
        "/admin/tiers/tier/koc/change/",
        {"code": "renamed", "name": "Key opinion consumer", "rank": "2", "expected_share": "0.1"},
    )

    assert response.status_code == 302
    tier = Tier.objects.get(code="koc")
    assert (tier.name, tier.expected_share) == ("Key opinion consumer", Decimal("0.1"))
    assert not Tier.objects.filter(code="renamed").exists()
