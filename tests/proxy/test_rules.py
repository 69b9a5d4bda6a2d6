"""The pure rules under the listeners: address classes, tokens, allowlists, config checks."""

from __future__ import annotations

import ipaddress
import re

import pytest

from paddock.proxy import tokens
from paddock.proxy.addresses import classify, normalize_host
from paddock.proxy.config import ConfigError, EnvironmentPolicy, parse_config
from paddock.proxy.policy import check_host, decide

KEY = b"k" * 32
BASE = "api_key_file: /k\ntoken_key_file: /t\n"


@pytest.mark.parametrize(
    ("address", "category"),
    [
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("2002:7f00:1::", "loopback"),  # 6to4 around 127.0.0.1
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 around 127.0.0.1
        ("10.0.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.1", "private"),
        ("fd12::1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "cgnat"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("239.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("::7f00:1", "loopback"),  # IPv4-compatible, deprecated, around 127.0.0.1
        ("::8.8.8.8", "ipv4-translation"),  # refused whatever it embeds
        ("fec0::a9fe:a9fe", "site-local"),  # Python's ipaddress calls it global
        ("192.0.2.1", "documentation"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_addresses_are_classified(address: str, category: str | None) -> None:
    assert classify(ipaddress.ip_address(address)) == category


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("Example.COM.", "example.com"),
        ("[::FFFF:127.0.0.1]", "::ffff:7f00:1"),
        ("a..b", None),
        ("a b", None),
        ("a%2eb", None),
        ("-a.com", None),
        ("x\n", None),
    ],
)
def test_hosts_are_normalized_or_rejected(text: str, normalized: str | None) -> None:
    assert normalize_host(text) == normalized


class TestTokens:
    def test_a_token_verifies_for_its_session(self) -> None:
        token = tokens.mint(KEY, "sesn_1", "default", issued_at=1000)
        claims = tokens.verify(KEY, token, session_id="sesn_1", now=1010, max_age=60)
        assert claims == tokens.Claims("sesn_1", "default", 1000)

    @pytest.mark.parametrize(
        ("key", "session", "now", "message"),
        [
            (b"x" * 32, "sesn_1", 1010, "token signature does not match"),
            (KEY, "sesn_2", 1010, "token was issued for another session"),
            (KEY, "sesn_1", 1061, "token has expired"),
            (KEY, "sesn_1", 600, "token is issued in the future"),
        ],
    )
    def test_invalid_tokens_say_why(self, key: bytes, session: str, now: int, message: str) -> None:
        token = tokens.mint(KEY, "sesn_1", "default", issued_at=1000)
        with pytest.raises(tokens.InvalidToken, match=message):
            tokens.verify(key, token, session_id=session, now=now, max_age=60)

    def test_short_keys_and_odd_session_ids_are_refused(self) -> None:
        with pytest.raises(ValueError, match="at least 32 bytes"):
            tokens.mint(b"short", "sesn_1", "default", issued_at=0)
        with pytest.raises(ValueError, match="session_id"):
            tokens.mint(KEY, "a:b", "default", issued_at=0)


class TestAllowlist:
    policy = EnvironmentPolicy(
        mode="limited", allowed_domains=["github.com", "*.pkg.dev"], allow_package_managers=True
    )

    @pytest.mark.parametrize(
        ("host", "rule"),
        [
            ("github.com", "allowlist:github.com"),
            ("api.github.com", None),
            ("eu.pkg.dev", "allowlist:*.pkg.dev"),
            ("a.b.pkg.dev", "allowlist:*.pkg.dev"),
            ("pkg.dev", None),
            ("evilpkg.dev", None),
            ("pypi.org", "package-registry"),
        ],
    )
    def test_hosts_match_exactly_or_as_subdomains(self, host: str, rule: str | None) -> None:
        decision = check_host("default", self.policy, host)
        assert decision.allowed == (rule is not None)
        if rule is not None:
            assert decision.rule == rule

    async def test_literal_addresses_are_judged_after_the_allowlist(self) -> None:
        config = parse_config(BASE + "environments: {e: {mode: open}}\n")
        decision = await decide(config, "e", "169.254.169.254", 80)
        assert (decision.allowed, decision.rule) == (False, "address:metadata")
        assert (await decide(config, "e", "1.1.1.1", 443)).addresses == (
            ipaddress.ip_address("1.1.1.1"),
        )
        assert (await decide(config, "e", "1.1.1.1", 6379)).rule == "blocked-port"
        assert (await decide(config, "e", "1.1.1.1", 8082)).rule == "proxy-port"


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("nonsense: 1\n", "nonsense: Extra inputs are not permitted"),
        (
            "environments: {e: {mode: open, allowed_domains: [a.com]}}\n",
            "may only be set when mode is 'limited'",
        ),
        (
            "environments: {e: {mode: limited, allowed_domains: ['http://a.com']}}\n",
            "should match pattern",
        ),
        (
            "listeners: {admin: {host: 0.0.0.0, port: 9}}\n",
            "listeners: admin must listen on a loopback address",
        ),
        ("address_exceptions: ['8.8.8.8:53']\n", "8.8.8.8:53 is public"),
        (
            "address_exceptions: ['127.0.0.1:8081']\n",
            "names a blocked port or one of the proxy's own ports",
        ),
        ("address_exceptions: ['localhost:80']\n", "'localhost:80' is not ip:port"),
        (
            "credentials: [{host: a.com, secret_file: /a}, {host: a.com, secret_file: /b}]\n",
            "only once",
        ),
        (
            "credentials: [{host: a.com, secret_file: /a, api_routes: [{methods: [TRACE], path_prefix: /}]}]\n",
            "credentials.0.api_routes.0.methods.0: Input should be 'GET'",
        ),
        (
            "credentials: [{host: a.com, secret_file: /a, api_routes: [{methods: [GET], path_prefix: /a/../}]}]\n",
            "should match pattern",
        ),
        (
            "credentials: [{host: a.com, secret_file: /a, api_routes: [{methods: [GET], path_prefix: /api}]}]\n",
            "should match pattern",
        ),
    ],
)
def test_bad_configs_are_explained(yaml_text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(BASE + yaml_text)


def test_a_config_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        parse_config("[1, 2]\n")


def test_exceptions_parse_both_address_families() -> None:
    config = parse_config(
        BASE + "address_exceptions: ['127.0.0.1:8443', '[::1]:8443', '10.0.0.5:80']\n"
    )
    assert [str(e) for e in config.address_exceptions] == [
        "127.0.0.1:8443",
        "[::1]:8443",
        "10.0.0.5:80",
    ]
