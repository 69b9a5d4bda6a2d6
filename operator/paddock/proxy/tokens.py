"""Egress tokens: minted by the proxy for the harness, presented by the sandbox, verified
statelessly.

Format: ``pdk1.<payload>.<mac>``, both parts unpadded base64url. The payload is compact JSON
``{"sid": session, "env": environment, "iat": unix seconds}``; the MAC is HMAC-SHA256 over
``pdk1.<payload>`` with the key from the proxy's token key file. Only the proxy holds the key;
the harness asks the admin listener for tokens. The token alphabet has no ``:``, so it fits the
password part of ``Proxy-Authorization: Basic``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass

VERSION = "pdk1"
MIN_KEY_BYTES = 32
# Clock skew tolerated for tokens minted by another replica whose clock runs ahead.
MAX_SKEW_SECONDS = 300
SESSION_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")


class InvalidToken(Exception):
    """The token is malformed, forged, expired or for another session. The message says which
    and never contains the token."""


@dataclass(frozen=True)
class Claims:
    """What a valid token vouches for."""

    session_id: str
    environment: str
    issued_at: int


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, signed: str) -> bytes:
    return hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()


def mint(key: bytes, session_id: str, environment: str, issued_at: int) -> str:
    """A token for ``session_id`` under ``environment``'s policy."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"token key must be at least {MIN_KEY_BYTES} bytes")
    if not SESSION_ID.fullmatch(session_id):
        raise ValueError("session_id must be 1-128 characters of [A-Za-z0-9_.-]")
    claims = {"sid": session_id, "env": environment, "iat": issued_at}
    payload = _b64encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    signed = f"{VERSION}.{payload}"
    return f"{signed}.{_b64encode(_mac(key, signed))}"


def verify(key: bytes, token: str, *, session_id: str, now: int, max_age: int) -> Claims:
    """The claims of ``token`` if its MAC is valid, it was issued for ``session_id`` and it is
    not older than ``max_age`` seconds; raise `InvalidToken` otherwise."""
    version, _, rest = token.partition(".")
    payload, _, mac = rest.partition(".")
    if version != VERSION or not payload or not mac:
        raise InvalidToken("malformed token")
    try:
        given = _b64decode(mac)
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed token") from None
    # Constant-time comparison before anything in the payload is trusted or even parsed.
    if not hmac.compare_digest(given, _mac(key, f"{version}.{payload}")):
        raise InvalidToken("token signature does not match")
    try:
        data = json.loads(_b64decode(payload))
        claims = Claims(str(data["sid"]), str(data["env"]), int(data["iat"]))
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidToken("malformed token") from None
    if not hmac.compare_digest(claims.session_id.encode(), session_id.encode()):
        raise InvalidToken("token was issued for another session")
    if claims.issued_at > now + MAX_SKEW_SECONDS:
        raise InvalidToken("token is issued in the future")
    if now - claims.issued_at > max_age:
        raise InvalidToken("token has expired")
    return claims
