"""Direct access to the Redis behind Django's cache, for the few hot paths that need one round
trip where the cache API would make several (the rate limit, the read documents' tokens)."""

from typing import Any

import redis
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.redis import RedisCache


def redis_backend() -> RedisCache | None:
    """The default cache when it is Redis (else ``None``: per-process memory, in tests)."""
    backend = caches[DEFAULT_CACHE_ALIAS]
    return backend if isinstance(backend, RedisCache) else None


def redis_client(backend: RedisCache) -> redis.Redis:
    """The backend's client, made once per backend instance (the cache API builds a client
    object for every operation; its connection pool is shared either way)."""
    client = backend.__dict__.get("_loyalty_client")
    if client is None:
        client = backend._cache.get_client(write=True)
        backend.__dict__["_loyalty_client"] = client
    return client


def redis_get_many(backend: RedisCache, keys: list[str]) -> dict[str, Any]:
    """``cache.get_many`` in one MGET on the cached client, values decoded as the cache API
    stores them."""
    values = redis_client(backend).mget([backend.make_key(key) for key in keys])
    loads = backend._cache._serializer.loads
    return {key: loads(value) for key, value in zip(keys, values, strict=True) if value is not None}
