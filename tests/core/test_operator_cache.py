"""Operators looked up once and cached with their permissions (core.api.authentication.
operator_get): a deactivated operator, a permission taken away (directly or from a group) or a
deleted user counts from the very next request."""

import pytest
from django.contrib.auth.models import Group, Permission, User
from rest_framework.test import APIClient

from core.api.tokens import operator_token_pair

MEMBERS = "/api/v1/members/?lifecycle_stage=new"  # filtered: never cached whole


@pytest.fixture(params=["memory", "redis"])
def cache_backend(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        request.getfixturevalue("redis_cache")
    return request.param


def _view_member() -> Permission:
    return Permission.objects.get(content_type__app_label="members", codename="view_member")


@pytest.fixture
def operator(db) -> User:
    user = User.objects.create_user("op-cached", is_staff=True)
    user.user_permissions.add(_view_member())
    return user


@pytest.fixture
def client(operator: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {operator_token_pair(operator)['access']}")
    return client


def test_a_cached_operator_costs_no_user_or_permission_query(
    client, cache_backend, django_assert_num_queries
) -> None:
    with django_assert_num_queries(4):  # the user, their permissions (user, groups), the page
        assert client.get(MEMBERS).status_code == 200

    with django_assert_num_queries(1):  # the page
        assert client.get(MEMBERS).status_code == 200


def test_a_deactivated_operator_is_refused_at_once(operator, client, cache_backend) -> None:
    assert client.get(MEMBERS).status_code == 200

    operator.is_active = False
    operator.save()

    assert client.get(MEMBERS).status_code == 401


def test_an_operator_no_longer_staff_is_refused_at_once(operator, client, cache_backend) -> None:
    assert client.get(MEMBERS).status_code == 200

    operator.is_staff = False
    operator.save()

    assert client.get(MEMBERS).status_code == 401


def test_a_permission_taken_away_counts_at_once(operator, client, cache_backend) -> None:
    assert client.get(MEMBERS).status_code == 200

    operator.user_permissions.remove(_view_member())

    assert client.get(MEMBERS).status_code == 403


@pytest.mark.parametrize("taken_away", ["from the group", "by leaving the group"])
def test_a_permission_held_through_a_group_counts_at_once(
    operator, client, cache_backend, taken_away
) -> None:
    operator.user_permissions.clear()
    group = Group.objects.create(name="viewers")
    group.permissions.add(_view_member())
    operator.groups.add(group)
    assert client.get(MEMBERS).status_code == 200

    if taken_away == "from the group":
        group.permissions.remove(_view_member())
    else:
        operator.groups.remove(group)

    assert client.get(MEMBERS).status_code == 403


def test_a_deleted_operator_is_refused_at_once(operator, client, cache_backend) -> None:
    assert client.get(MEMBERS).status_code == 200

    operator.delete()

    assert client.get(MEMBERS).status_code == 401
