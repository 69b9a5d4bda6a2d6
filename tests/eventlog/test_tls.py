"""An external Redis over TLS: `connect` with a rediss:// URL checks the server's
certificate against the CA bundle it is given (a file, or PEM text from an environment
variable, as harness pods get it), and the event log works through it. The shared
redis-server (Debian's, built with TLS) listens with a certificate from a CA of its own."""

from __future__ import annotations

import ssl

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError

from paddock.eventlog import (
    EventLog,
    RedisSettings,
    TextBlock,
    UserMessageEvent,
    connect,
    new_session_id,
)
from paddock.testing.certs import TinyCA
from paddock.testing.redis import RedisServer


async def test_the_log_works_over_tls_with_the_ca_file(redis_server: RedisServer) -> None:
    settings = RedisSettings(redis_server.rediss_url, ca_file=str(redis_server.ca_file))
    client = connect(settings)
    try:
        log = EventLog(client, "default")
        session = new_session_id()
        await log.create_session(session, agent="default/coder")
        sent = await log.send(session, [UserMessageEvent(content=[TextBlock(text="over TLS")])])
        assert await log.replay(session) == sent
        # It really is TLS: the connection is an SSL one.
        connection = await client.connection_pool.get_connection()
        try:
            assert connection._writer.get_extra_info("ssl_object") is not None
        finally:
            await client.connection_pool.release(connection)
    finally:
        await client.aclose()


async def test_settings_from_the_environment_carry_user_password_and_ca_pem(
    redis_server: RedisServer,
) -> None:
    assert redis_server.ca_file is not None
    url = redis_server.rediss_url.replace(f"paddock-operator:{redis_server.operator_password}@", "")
    settings = RedisSettings.from_env(
        {
            "PADDOCK_REDIS_URL": url,
            "PADDOCK_REDIS_USERNAME": "paddock-operator",
            "PADDOCK_REDIS_PASSWORD": redis_server.operator_password,
            "PADDOCK_REDIS_CA_PEM": redis_server.ca_file.read_text(),
        }
    )
    assert redis_server.operator_password not in repr(settings)
    client = connect(settings)
    try:
        assert await client.acl_whoami() == "paddock-operator"
    finally:
        await client.aclose()


async def test_a_password_file_is_read(redis_server: RedisServer, tmp_path) -> None:
    secret = tmp_path / "password"
    secret.write_text(redis_server.gateway_password + "\n")
    settings = RedisSettings.from_env(
        {
            "PADDOCK_REDIS_URL": redis_server.plain_url,
            "PADDOCK_REDIS_USERNAME": "paddock-gateway",
            "PADDOCK_REDIS_PASSWORD_FILE": str(secret),
        }
    )
    client = connect(settings)
    try:
        assert await client.get("paddock:t:default:probe") is None  # logged in as the gateway
        with pytest.raises(NoPermissionError):
            await client.get("paddock:operator:leader")
    finally:
        await client.aclose()


async def test_a_server_certificate_from_another_ca_is_refused(
    redis_server: RedisServer, tmp_path
) -> None:
    other = tmp_path / "other-ca.crt"
    other.write_bytes(TinyCA("someone else").cert_pem)
    client = connect(RedisSettings(redis_server.rediss_url, ca_file=str(other)))
    try:
        with pytest.raises(RedisConnectionError) as refused:
            await client.ping()
        assert isinstance(refused.value.__cause__ or refused.value.__context__, ssl.SSLError) or (
            "certificate verify failed" in str(refused.value)
        ), refused.value
    finally:
        await client.aclose()


async def test_a_host_name_the_certificate_does_not_name_is_refused(
    redis_server: RedisServer,
) -> None:
    # The certificate names localhost only: 127.0.0.1 is the same server under an address
    # the certificate does not carry.
    url = redis_server.rediss_url.replace("@localhost:", "@127.0.0.1:")
    client = connect(RedisSettings(url, ca_file=str(redis_server.ca_file)))
    try:
        with pytest.raises(RedisConnectionError, match=r"(?i)certificate|hostname|IP address"):
            await client.ping()
    finally:
        await client.aclose()


def test_a_ca_bundle_without_tls_is_a_configuration_error(redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match="rediss://"):
        connect(RedisSettings(redis_server.url, ca_file=str(redis_server.ca_file)))
