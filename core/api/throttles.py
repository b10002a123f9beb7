"""Per-client rate limits: keyed by member, partner or operator, never by a shared IP."""

import logging
from typing import Any

import redis
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from core.api.authentication import MemberPrincipal, PartnerPrincipal
from core.api.permissions import role_of
from core.cache_client import redis_backend, redis_client

logger = logging.getLogger(__name__)


class ClientRateThrottle(SimpleRateThrottle):
    """One bucket per client; the rate depends on the client's role (settings, per minute).

    A sliding-window counter rather than DRF's log of request times: the client's requests are
    counted per fixed window with an atomic increment, and the limit applies to the current
    window's count plus the previous window's, weighted by how much of it the sliding window
    still covers. Constant work per request whatever the rate (DRF's log reads and rewrites
    every timestamp of the window, thousands at an operator's rate), and concurrent requests
    never overwrite each other's count. With Redis the count is one pipelined round trip.
    Refused requests count too, so a client hammering past its limit stays limited.
    """

    def __init__(self) -> None:
        # The rate is chosen per request from the client's role, in allow_request.
        self.wait_seconds = 0.0

    def allow_request(self, request: Request, view: Any) -> bool:
        self.scope = role_of(request.user)
        self.rate = api_settings.DEFAULT_THROTTLE_RATES[self.scope]
        self.num_requests, self.duration = self.parse_rate(self.rate)
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        try:
            return self._allow(key)
        except (redis.RedisError, OSError):
            # The cache (Redis) is down: serve without the limit rather than fail every request;
            # the database, not the cache, guards every invariant.
            logger.warning("Rate limit not applied: the cache is unavailable.", exc_info=True)
            return True

    def _allow(self, key: str) -> bool:
        now = self.timer()
        window, offset = divmod(now, self.duration)
        current, previous = self._counts(
            f"{key}:{int(window)}", f"{key}:{int(window) - 1}", timeout=2 * self.duration
        )
        used = previous * (1 - offset / self.duration) + current
        if used <= self.num_requests:
            return True
        # Until the current window ends; by then the previous window weighs nothing and the
        # current one starts to fade.
        self.wait_seconds = self.duration - offset
        return False

    def _counts(self, current: str, previous: str, *, timeout: int) -> tuple[int, int]:
        """Count this request in ``current``; the counts of ``current`` and ``previous``."""
        backend = redis_backend()
        if backend is not None:
            current_key, previous_key = backend.make_key(current), backend.make_key(previous)
            pipeline = redis_client(backend).pipeline(transaction=False)
            pipeline.incr(current_key)
            pipeline.expire(current_key, timeout)
            pipeline.get(previous_key)
            count, _, earlier = pipeline.execute()
            return int(count), int(earlier or 0)
        count = 1 if self.cache.add(current, 1, timeout=timeout) else self.cache.incr(current)
        return count, int(self.cache.get(previous, 0))

    def wait(self) -> float:
        return max(1.0, self.wait_seconds)

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
