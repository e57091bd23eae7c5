"""Django's default cache, shared by every web process through Redis.

DRF keeps its throttle counts in this cache. `make run` starts several gunicorn processes, so a
per-process cache (locmem) would let a client through N times the configured rate; in Redis they
all count the same requests.

The cache lives on the broker's server but in another database (CACHE_REDIS_DB, derived from
REDIS_URL) unless CACHE_URL names another place. Its clear() deletes only keys under its own
KEY_PREFIX, never FLUSHDB (what Django's RedisCache.clear() runs): even where the cache is made to
share a database with the Celery broker, clearing it leaves the queued tasks alone.
"""

from __future__ import annotations

import itertools
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import environ
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.core.exceptions import ImproperlyConfigured

# Keys deleted per UNLINK while clearing.
_CLEAR_BATCH = 500
# Seconds a cache call may wait for Redis: throttling must not hold a request long when Redis is
# down (the throttles then let requests through; recognizer/api/throttles.py).
CACHE_SOCKET_TIMEOUT = 1.0


class ClientPerPool(RedisCacheClient):
    """Django's client, with one redis.Redis per connection pool instead of one per cache call.

    Building a redis.Redis (its table of response callbacks) cost as much CPU as the round trip
    itself, and the throttles make two calls on every drawing. (Django gives each thread its own
    cache object, so a client is never shared between threads.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[bool, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        # Keyed by `write` as Django picks the pool by it (with several LOCATIONs, reads then stay
        # on the one replica drawn first; the service names one server).
        client = self._clients.get(write)
        if client is None:
            client = self._clients[write] = super().get_client(key, write=write)
        return client


class SharedRedisCache(RedisCache):
    """Django's RedisCache whose clear() removes this cache's keys only (its KEY_PREFIX), with a
    client reused across calls (ClientPerPool)."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = ClientPerPool
        if not self.key_prefix:
            raise ImproperlyConfigured(
                "SharedRedisCache needs a KEY_PREFIX: clear() deletes the keys under it"
            )

    def clear(self) -> None:
        client = self._cache.get_client(write=True)
        # make_key() writes "<prefix>:<version>:<key>"; the prefix is matched literally.
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self.key_prefix) + ":*"
        keys = client.scan_iter(match=pattern, count=1000)
        while batch := list(itertools.islice(keys, _CLEAR_BATCH)):
            client.unlink(*batch)


def with_db(url: str, db: int) -> str:
    """A redis:// (rediss://, valkey://) URL naming database `db` instead of its own."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def url_db(url: str) -> int:
    """The database number a Redis URL names (0 when it names none)."""
    path = urlsplit(url).path.strip("/")
    return int(path) if path else 0


def cache_settings(
    *, redis_url: str, cache_url: str, cache_db: int, key_prefix: str
) -> dict[str, Any]:
    """CACHES["default"]: CACHE_URL's cache when set (redis://, valkey://, locmemcache://, dummycache://),
    else Redis database `cache_db` on REDIS_URL's server, which must not be the broker's."""
    if not cache_url:
        if cache_db == url_db(redis_url):
            raise ImproperlyConfigured(
                f"CACHE_REDIS_DB={cache_db} is the Celery broker's database (REDIS_URL): a cache "
                "must not share it; set CACHE_REDIS_DB to another number, or CACHE_URL"
            )
        cache_url = with_db(redis_url, cache_db)
    config: dict[str, Any] = environ.Env.cache_url_config(cache_url)
    if urlsplit(cache_url).scheme in ("redis", "rediss", "valkey", "valkeys"):
        location = urlunsplit(urlsplit(cache_url)._replace(scheme=_redis_scheme(cache_url)))
        config = {
            "BACKEND": "digitsite.cache.SharedRedisCache",
            "LOCATION": location,
            "OPTIONS": {
                "socket_connect_timeout": CACHE_SOCKET_TIMEOUT,
                "socket_timeout": CACHE_SOCKET_TIMEOUT,
            },
        }
    config["KEY_PREFIX"] = key_prefix
    return config


def _redis_scheme(url: str) -> str:
    # redis-py knows redis:// and rediss:// (TLS); valkey:// is the same protocol.
    return "rediss" if urlsplit(url).scheme in ("rediss", "valkeys") else "redis"
