"""Per-client rate limits: keyed by member, partner or operator, never by a shared IP."""

import logging
from typing import Any

import redis
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from core.api.authentication import MemberPrincipal, PartnerPrincipal
from core.api.permissions import role_of

logger = logging.getLogger(__name__)


class ClientRateThrottle(SimpleRateThrottle):
    """One bucket per client; the rate depends on the client's role (settings, per minute)."""

    def __init__(self) -> None:
        # The rate is chosen per request from the client's role, in allow_request.
        pass

    def allow_request(self, request: Request, view: Any) -> bool:
        self.scope = role_of(request.user)
        self.rate = api_settings.DEFAULT_THROTTLE_RATES[self.scope]
        self.num_requests, self.duration = self.parse_rate(self.rate)
        try:
            return super().allow_request(request, view)
        except (redis.RedisError, OSError):
            # The cache (Redis) is down: serve without the limit rather than fail every request;
            # the database, not the cache, guards every invariant.
            logger.warning("Rate limit not applied: the cache is unavailable.", exc_info=True)
            return True

    def get_cache_key(self, request: Request, view: Any) -> str:
        user = request.user
        if isinstance(user, MemberPrincipal):
            ident = str(user.member_id)
        elif isinstance(user, PartnerPrincipal):
            ident = str(user.partner.pk)
        elif user is not None and user.is_authenticated:
            ident = str(user.pk)
        else:
            ident = self.get_ident(request)
        return f"throttle:{self.scope}:{ident}"
