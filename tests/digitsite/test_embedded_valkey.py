"""The private Valkey that `make run` and the test suite start when REDIS_URL is unset."""

from __future__ import annotations

import redis

from digitsite.embedded_valkey import start_valkey


def test_starts_serves_persists_and_stops(tmp_path):
    server = start_valkey(tmp_path)
    try:
        client = redis.Redis.from_url(server.url)
        client.set("digit", "7")
        assert client.get("digit") == b"7"
        # Only loopback: a server bound to every interface would be open to the network.
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        client.close()
    finally:
        server.stop()

    assert server.process.poll() is not None
    # The append-only file survives the stop, so a restart keeps queued tasks.
    restarted = start_valkey(tmp_path)
    try:
        assert redis.Redis.from_url(restarted.url).get("digit") == b"7"
    finally:
        restarted.stop()
    assert restarted.process.poll() is not None


def test_refuses_a_taken_port_with_a_clear_error(tmp_path):
    first = start_valkey(tmp_path / "a")
    try:
        try:
            start_valkey(tmp_path / "b", port=first.port)
        except RuntimeError as exc:
            assert "valkey-server exited" in str(exc)
        else:
            raise AssertionError("a second server on a taken port must not report success")
    finally:
        first.stop()
