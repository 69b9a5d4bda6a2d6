"""What the three listeners share: the current config and the secrets it names.

Secrets are read at the moment they are used (through `SecretFiles`, which re-reads a file only
when it changed), so a rotated Secret takes effect on the next request. The config is replaced
as a whole by the server when its file changes.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from functools import partial

from paddock.proxy import tokens
from paddock.proxy.config import Credential, ProxyConfig
from paddock.proxy.files import SecretFiles, SecretUnavailable
from paddock.proxy.policy import host_matches
from paddock.proxy.vaults import VaultCredentials


class Runtime:
    """The proxy's current state. Every method reads the config as it is right now."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.secrets = SecretFiles()
        self._vaults: VaultCredentials | None = None

    def api_key(self) -> str:
        """The Claude API key. Raises `SecretUnavailable`."""
        return self.secrets.header_value(self.config.api_key_file)

    def _token_key(self) -> bytes:
        key = self.secrets.get(self.config.token_key_file)
        if len(key) < tokens.MIN_KEY_BYTES:
            raise SecretUnavailable(
                f"{self.config.token_key_file}: shorter than {tokens.MIN_KEY_BYTES} bytes"
            )
        return key

    def mint_token(self, session_id: str, environment: str) -> str:
        """An egress token for the session. Raises `SecretUnavailable`, or ValueError for a
        session id outside `tokens.SESSION_ID` or an environment this proxy does not know."""
        if environment not in self.config.environments:
            raise ValueError(f'environment "{environment}" is not configured on this proxy')
        return tokens.mint(self._token_key(), session_id, environment, int(time.time()))

    def verify_token(self, session_id: str, token: str) -> tokens.Claims:
        """The claims of a presented token. Raises `tokens.InvalidToken` or
        `SecretUnavailable`."""
        return tokens.verify(
            self._token_key(),
            token,
            session_id=session_id,
            now=int(time.time()),
            max_age=self.config.token_max_age_seconds,
        )

    def vaults(self) -> VaultCredentials:
        """The vault credentials of the current config. Kept while the config is, and built
        from the previous ones when it changes, so refreshed OAuth tokens survive reloads."""
        if self._vaults is None or self._vaults.config is not self.config:
            self._vaults = VaultCredentials(self.config, self.secrets, previous=self._vaults)
        return self._vaults

    def credential_for(self, host: str) -> Credential | None:
        """The credential configured for ``host``: an exact entry first, else the longest
        matching wildcard."""
        matches = [c for c in self.config.credentials if host_matches(host, c.host)]
        matches.sort(key=lambda c: (c.host.startswith("*."), -len(c.host)))
        return matches[0] if matches else None

    def authorization(self, credential: Credential) -> str:
        """The ``Authorization`` value that carries ``credential``. Raises `SecretUnavailable`."""
        token = self.secrets.header_value(credential.secret_file)
        if credential.scheme == "bearer":
            return f"Bearer {token}"
        return "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()

    def problems(self) -> list[str]:
        """Why the proxy cannot serve right now (unreadable secrets); empty when ready."""
        problems = []
        checks: list[Callable[[], object]] = [self.api_key, self._token_key]
        checks += [
            partial(self.secrets.header_value, c.secret_file) for c in self.config.credentials
        ]
        for check in checks:
            try:
                check()
            except SecretUnavailable as exc:
                problems.append(str(exc))
        return problems
