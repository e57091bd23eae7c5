"""Celery's Redis transport with one Redis client per channel instead of one per command.

kombu's Redis channel builds a new `redis.Redis` for every publish and every acknowledgement
(`Channel.conn_or_acquire`), and building one (its table of response callbacks) costs as much CPU
as the round trip it serves: in profiles under load, 7% of the interactive worker's CPU and 2% of
a web process's. A client is only a front for the channel's connection pool, so one per pool
does the same work. kombu drops its pools after a connection error; a new pool gets a new client.

Used for `redis://` broker URLs (settings.CELERY_BROKER_TRANSPORT); other schemes keep kombu's own.
"""

from __future__ import annotations

import redis
from kombu.transport import redis as kombu_redis


# (kombu's stubs, from celery-types, leave out the Channel's private methods.)
class Channel(kombu_redis.Channel):
    _sync_client: redis.Redis | None = None

    def _create_client(self, asynchronous: bool = False) -> redis.Redis:
        if asynchronous:  # the consumer's own client (BRPOP): kombu already makes it once
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        pool = self.pool
        client = self._sync_client
        if client is None or client.connection_pool is not pool:
            client = self._sync_client = super()._create_client()  # type: ignore[misc]
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel
