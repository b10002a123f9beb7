"""Idempotency-Key: replays, conflicting replays, stored domain refusals, concurrent duplicates."""

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from core.api.tokens import operator_token_pair
from core.models import IdempotencyRecord
from members.models import Member
from tests.helpers import assert_problem

MEMBERS = "/api/v1/members/"
BODY = {"external_id": "idem-1", "display_name": "Ann"}


def test_replay_returns_the_first_response_and_changes_nothing(operator_client):
    first = operator_client.post(MEMBERS, BODY, HTTP_IDEMPOTENCY_KEY="k-1")

    replay = operator_client.post(MEMBERS, BODY, HTTP_IDEMPOTENCY_KEY="k-1")

    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json()
    assert replay["Idempotent-Replayed"] == "true"
    assert Member.objects.count() == 1


def test_same_key_with_a_different_body_is_422(operator_client):
    operator_client.post(MEMBERS, BODY, HTTP_IDEMPOTENCY_KEY="k-1")

    response = operator_client.post(
        MEMBERS, {**BODY, "display_name": "Bob"}, HTTP_IDEMPOTENCY_KEY="k-1"
    )

    assert_problem(response, 422, "idempotency_key_reused")
    assert list(Member.objects.values_list("display_name", flat=True)) == ["Ann"]


def test_keys_are_scoped_per_client(operator_client, partner_client):
    operator_client.post(MEMBERS, BODY, HTTP_IDEMPOTENCY_KEY="shared")

    response = partner_client.post(
        MEMBERS, {"external_id": "idem-2", "display_name": "Bo"}, HTTP_IDEMPOTENCY_KEY="shared"
    )

    assert response.status_code == 201
    assert Member.objects.count() == 2


def test_domain_refusal_is_stored_and_replayed(operator_client, make_member):
    make_member("idem-1")

    first = operator_client.post(MEMBERS, BODY, HTTP_IDEMPOTENCY_KEY="k-2")
    Member.objects.filter(external_id="idem-1").delete()
    replay = operator_client.post(MEMBERS, BODY, HTTP_IDEMPOTENCY_KEY="k-2")

    assert_problem(first, 409, "member_exists")
    assert_problem(replay, 409, "member_exists")
    assert replay.json() == first.json()
    assert Member.objects.count() == 0


def test_validation_error_stores_no_key_so_a_corrected_retry_works(operator_client):
    bad = operator_client.post(MEMBERS, {"external_id": "idem-1"}, HTTP_IDEMPOTENCY_KEY="k-3")

    assert_problem(bad, 400)
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9"])
def test_malformed_keys_are_400(operator_client, key):
    response = operator_client.post(MEMBERS, BODY, HTTP_IDEMPOTENCY_KEY=key)

    assert_problem(response, 400, "validation_error")
    assert Member.objects.count() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_have_one_effect(superuser):
    token = operator_token_pair(superuser)["access"]
    threads = 8
    barrier = threading.Barrier(threads)
    statuses: list[int] = []
    bodies: list[dict] = []

    def send() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        try:
            barrier.wait()
            response = client.post(MEMBERS, BODY, HTTP_IDEMPOTENCY_KEY="race")
            statuses.append(response.status_code)
            bodies.append(response.json())
        finally:
            connection.close()

    workers = [threading.Thread(target=send) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert statuses == [201] * threads
    assert len({body["id"] for body in bodies}) == 1
    assert Member.objects.count() == 1
    assert IdempotencyRecord.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_of_one_external_id_without_key_create_one(superuser):
    token = operator_token_pair(superuser)["access"]
    threads = 8
    barrier = threading.Barrier(threads)
    statuses: list[int] = []

    def send() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        try:
            barrier.wait()
            statuses.append(client.post(MEMBERS, BODY).status_code)
        finally:
            connection.close()

    workers = [threading.Thread(target=send) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert sorted(statuses) == [201] + [409] * (threads - 1)
    assert Member.objects.count() == 1
