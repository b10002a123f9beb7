"""Partner API keys checked once and cached (core.api.authentication.partner_key_get): a
revoked key, an expired one or a switched-off partner is refused on the very next request."""

from datetime import timedelta

import time_machine
from django.utils import timezone

from core.models import PartnerAPIKey
from core.services import partner_keys_revoke

MEMBERS = "/api/v1/members/"


def test_a_cached_key_costs_no_lookup(make_partner, django_assert_num_queries) -> None:
    _, client = make_partner()
    assert client.get(MEMBERS).status_code == 200

    with django_assert_num_queries(1):  # the page's members (no filter); no key row
        assert client.get(MEMBERS + "?lifecycle_stage=new").status_code == 200


def test_revoked_keys_are_refused_at_once(make_partner) -> None:
    partner, client = make_partner()
    assert client.get(MEMBERS).status_code == 200

    partner_keys_revoke(partner=partner)

    assert client.get(MEMBERS).status_code in (401, 403)


def test_a_key_revoked_in_the_admin_is_refused_at_once(make_partner) -> None:
    partner, client = make_partner()
    assert client.get(MEMBERS).status_code == 200
    key = PartnerAPIKey.objects.get(partner=partner)

    key.revoked = True
    key.save()

    assert client.get(MEMBERS).status_code in (401, 403)


def test_a_switched_off_partner_is_refused_at_once(make_partner) -> None:
    partner, client = make_partner()
    assert client.get(MEMBERS).status_code == 200

    partner.is_active = False
    partner.save()

    assert client.get(MEMBERS).status_code in (401, 403)


def test_a_cached_key_still_expires_on_time(make_partner) -> None:
    partner, client = make_partner()
    key = PartnerAPIKey.objects.get(partner=partner)
    key.expiry_date = timezone.now() + timedelta(minutes=5)
    key.save()
    assert client.get(MEMBERS).status_code == 200

    with time_machine.travel(timezone.now() + timedelta(minutes=6)):
        assert client.get(MEMBERS).status_code in (401, 403)


def test_a_wrong_key_with_a_known_prefix_is_refused(make_partner) -> None:
    from rest_framework.test import APIClient

    partner, client = make_partner()
    assert client.get(MEMBERS).status_code == 200
    prefix = PartnerAPIKey.objects.get(partner=partner).prefix
    forged = APIClient()
    forged.credentials(HTTP_AUTHORIZATION=f"Api-Key {prefix}.not-the-secret")

    assert forged.get(MEMBERS).status_code in (401, 403)
