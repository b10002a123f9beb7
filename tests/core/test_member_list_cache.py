"""The member list from cached parts (core/read_cache.py): every entry is a member's cached
document and an unfiltered page is cached whole, yet every write shows in the very next page.
Each test runs on the per-process cache and, with ``REDIS_URL``, on Redis, where a cached page
is checked by a script inside Redis."""

from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from core.actors import system_actor
from core.read_cache import all_reads_changed, roster_page
from members.models import Member
from members.services import identities_replace, member_erase, member_update
from tiers.services.promotions import tier_promote

ACTOR = system_actor("tests")
MEMBERS = "/api/v1/members/"


@pytest.fixture(params=["memory", "redis"])
def cache_backend(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        request.getfixturevalue("redis_cache")
    return request.param


def _page(client: APIClient, query: str = "") -> dict[str, Any]:
    response = client.get(MEMBERS + query)
    assert response.status_code == 200, response.content
    return response.json()


def _entry(page: dict[str, Any], member: Member) -> dict[str, Any]:
    return next(item for item in page["results"] if item["id"] == str(member.pk))


def _renamed_in_the_admin(member: Member) -> None:
    fresh = Member.objects.get(pk=member.pk)
    fresh.display_name = "Edited in the admin"
    fresh.save()


# Each write, and what the member's entry must show of it next.
WRITES: dict[str, tuple[Callable[[Member], Any], Callable[[dict[str, Any]], bool]]] = {
    "profile": (
        lambda m: member_update(
            member=m, changes={"display_name": "Renamed"}, actor=ACTOR, at=timezone.now()
        ),
        lambda entry: entry["display_name"] == "Renamed",
    ),
    "identities": (
        lambda m: identities_replace(
            member=m, identities=[("wechat", "openid-9")], actor=ACTOR, at=timezone.now()
        ),
        lambda entry: [i["value"] for i in entry["identities"]] == ["openid-9"],
    ),
    "promotion": (
        lambda m: tier_promote(
            member=m, tier="koc", reason="tests", actor=ACTOR, at=timezone.now()
        ),
        lambda entry: entry["tier"] == "koc",
    ),
    "erasure": (
        lambda m: member_erase(member=m, actor=ACTOR, at=timezone.now()),
        lambda entry: entry["erased_at"] is not None,
    ),
    "saved by the ORM (the admin's change form)": (
        _renamed_in_the_admin,
        lambda entry: entry["display_name"] == "Edited in the admin",
    ),
}


@pytest.mark.parametrize("write", list(WRITES))
@pytest.mark.parametrize("query", ["", "?page_size=5", "?lifecycle_stage=new"])
def test_every_write_shows_in_the_next_page(
    make_member, operator_client, cache_backend, write, query
) -> None:
    members = [make_member() for _ in range(3)]
    act, shows = WRITES[write]
    before = _page(operator_client, query)
    assert _page(operator_client, query) == before  # served from the cache
    assert not shows(_entry(before, members[1]))

    act(members[1])

    after = _page(operator_client, query)
    assert shows(_entry(after, members[1])), write
    assert _entry(after, members[0]) == _entry(before, members[0])


def test_a_repeat_page_costs_no_query(
    make_member, operator_client, cache_backend, django_assert_num_queries
) -> None:
    for _ in range(4):
        make_member()
    first = _page(operator_client, "?page_size=3")

    with django_assert_num_queries(0):  # the page and the operator are both cached
        assert _page(operator_client, "?page_size=3") == first


def test_a_new_member_heads_the_first_page_at_once(
    make_member, operator_client, cache_backend
) -> None:
    older = make_member()
    assert [item["id"] for item in _page(operator_client)["results"]] == [str(older.pk)]

    newer = make_member()

    assert [item["id"] for item in _page(operator_client)["results"]] == [
        str(newer.pk),
        str(older.pk),
    ]


def test_a_deleted_member_leaves_the_page_at_once(
    make_member, operator_client, cache_backend
) -> None:
    kept, deleted = make_member(), make_member()
    assert len(_page(operator_client)["results"]) == 2

    Member.objects.filter(pk=deleted.pk).delete()

    assert [item["id"] for item in _page(operator_client)["results"]] == [str(kept.pk)]


def test_each_cursor_and_page_size_is_a_page_of_its_own(
    make_member, operator_client, cache_backend
) -> None:
    members = [make_member() for _ in range(5)]
    first = _page(operator_client, "?page_size=2")
    second = _page(operator_client, "?" + first["next"].split("?", 1)[1])
    newest_first = [str(member.pk) for member in reversed(members)]

    assert [item["id"] for item in first["results"]] == newest_first[:2]
    assert [item["id"] for item in second["results"]] == newest_first[2:4]
    assert _page(operator_client, "?page_size=3")["results"][2]["id"] == newest_first[2]


def test_everyones_token_rebuilds_every_page(make_member, cache_backend) -> None:
    member = make_member()
    renders: list[int] = []

    def page() -> bytes:
        return roster_page(
            page_key="probe",
            kind="probe",
            member_ids=lambda: [member.pk],
            build_many=lambda ids: dict.fromkeys(ids, b"{}"),
            render=lambda documents: renders.append(len(documents)) or b"[]",
        )

    page()
    page()
    all_reads_changed()
    page()

    assert renders == [1, 1]


def test_a_cached_page_is_still_refused_to_a_member(
    member, other_member, member_client, operator_client, cache_backend
) -> None:
    assert len(_page(operator_client)["results"]) == 2

    assert member_client.get(MEMBERS).status_code == 403


def test_with_the_cache_down_the_list_is_built_from_the_database(
    make_member, operator_client
) -> None:
    from unittest import mock

    from django.core.cache import cache
    from redis import ConnectionError as RedisConnectionError

    member = make_member()
    down = RedisConnectionError("Redis is down")
    with (
        mock.patch.object(cache, "get", side_effect=down),
        mock.patch.object(cache, "get_many", side_effect=down),
        mock.patch.object(cache, "set", side_effect=down),
    ):
        assert _page(operator_client)["results"][0]["id"] == str(member.pk)
        assert _page(operator_client, "?tier=basic")["results"][0]["id"] == str(member.pk)


@pytest.mark.parametrize("query", ["", "?lifecycle_stage=new"])
def test_a_member_deleted_while_the_page_is_built_is_left_out(
    make_member, operator_client, cache_backend, query
) -> None:
    from unittest import mock

    from members.api.views import MemberListCreateView

    kept, deleted = make_member(), make_member()
    build = MemberListCreateView._entries_build

    def deleted_first(view: Any, member_ids: Any) -> Any:
        Member.objects.filter(pk=deleted.pk).delete()
        return build(view, member_ids)

    with mock.patch.object(MemberListCreateView, "_entries_build", deleted_first):
        page = _page(operator_client, query)

    assert [item["id"] for item in page["results"]] == [str(kept.pk)]
    assert [item["id"] for item in _page(operator_client, query)["results"]] == [str(kept.pk)]
