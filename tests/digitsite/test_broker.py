"""The broker transport (digitsite/broker.py): one Redis client per channel, messages still flow."""

from __future__ import annotations

import uuid

from kombu import Connection
from kombu.simple import SimpleQueue

from digitsite import broker
from digitsite.celery import app


def test_celery_uses_the_transport_for_a_redis_broker(redis_url: str) -> None:
    with app.connection_for_write() as connection:
        assert isinstance(connection.default_channel, broker.Channel)


def test_a_channel_keeps_one_client_until_its_pool_is_dropped(redis_url: str) -> None:
    with Connection(redis_url, transport=broker.Transport) as connection:
        channel = connection.default_channel
        first = channel._create_client()
        assert channel._create_client() is first
        # kombu drops its pools after a connection error: the client must follow the new pool.
        channel._disconnect_pools()
        again = channel._create_client()
        assert again is not first
        assert again.connection_pool is channel.pool


def test_messages_published_and_acknowledged_through_it_arrive_once(redis_url: str) -> None:
    name = f"test-broker-{uuid.uuid4().hex}"
    with Connection(redis_url, transport=broker.Transport) as connection:
        queue: SimpleQueue = connection.SimpleQueue(name)
        try:
            for n in range(3):
                queue.put({"n": n})
            received, tags = [], []
            for _ in range(3):
                message = queue.get(timeout=5)
                received.append(message.payload["n"])
                tags.append(message.delivery_tag)
                message.ack()
            assert received == [0, 1, 2]
            # Nothing left queued, nor unacknowledged for a restore to send again.
            channel = connection.default_channel
            client = channel._create_client()
            assert client.llen(name) == 0
            assert client.hmget(channel.unacked_key, tags) == [None, None, None]
        finally:
            queue.close()
