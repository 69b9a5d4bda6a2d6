"""Where the apiserver is and how to authenticate: the one loader of every Kubernetes client
of Paddock (operator, gateway, runner).

The `kubernetes` package (which resolves kubeconfigs) is imported only when credentials are
loaded: importing it costs half a second, and the harness imports `paddock.kube` for
`retry_after` alone.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from kubernetes import client as k8s_client

SERVICE_HOST_ENV = "KUBERNETES_SERVICE_HOST"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = "~/.kube/config"


class _TokenFile:
    """A bearer token file (the ServiceAccount token the kubelet rotates), re-read whenever
    it changed: the kubelet swaps a ``..data`` symlink (new inode) or rewrites the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, int, int, int] | None = None
        self._token = ""

    def token(self) -> str:
        """The current token. Raises OSError if the file was never readable; after that, a
        read that fails (a rotation caught half-way) keeps the last token."""
        try:
            stat = os.stat(self.path)  # follows the symlinks
            signature = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
            # A file changed within the last two seconds may change again within the same
            # mtime tick: read it every time until it is older.
            recent = time.time() - stat.st_mtime < 2
            if signature != self._signature or recent:
                self._token = self.path.read_text().strip()
                self._signature = signature
        except OSError:
            if not self._token:
                raise
        return self._token


@dataclass
class Credentials:
    """The apiserver's address, TLS settings and bearer token. Kubeconfigs are resolved by
    the `kubernetes` package (client certificates, tokens, exec plugins); in a pod, the
    ServiceAccount.

    The bearer token is asked for on every request (`headers`), never cached by the caller:
    a token file (the in-cluster ServiceAccount's, or a kubeconfig's ``tokenFile``) is
    re-read when it changes, and an exec plugin's token is refreshed by the `kubernetes`
    package when it expires."""

    host: str
    ssl_context: ssl.SSLContext
    configuration: k8s_client.Configuration | None = None
    """The kubeconfig's resolved configuration (its token and refresh hook), if any."""
    token_file: Path | None = None
    """The bearer token file, re-read as it changes: the in-cluster ServiceAccount token,
    or a kubeconfig user's ``tokenFile``."""
    _token_file: _TokenFile | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.token_file is not None:
            self._token_file = _TokenFile(self.token_file)

    @classmethod
    def load(cls, kubeconfig: str | None = None) -> Credentials:
        """``kubeconfig`` if given; else the in-cluster ServiceAccount when running in a pod;
        else $KUBECONFIG or ~/.kube/config."""
        if kubeconfig is None and os.environ.get(SERVICE_HOST_ENV):
            return cls.in_cluster()
        from kubernetes import client as k8s_client
        from kubernetes import config as k8s_config

        configuration = k8s_client.Configuration()
        # The package reads $KUBECONFIG once at import; read it now.
        config_file = kubeconfig or os.environ.get("KUBECONFIG")
        k8s_config.load_kube_config(config_file=config_file, client_configuration=configuration)
        token_file = _kubeconfig_token_file(config_file)
        return cls(configuration.host, _tls(configuration), configuration, token_file)

    @classmethod
    def in_cluster(
        cls,
        token_file: Path = SERVICE_ACCOUNT / "token",
        ca_file: Path = SERVICE_ACCOUNT / "ca.crt",
        environ: Mapping[str, str] = os.environ,
    ) -> Credentials:
        """The pod's ServiceAccount: the apiserver from ``KUBERNETES_SERVICE_HOST``/``_PORT``,
        the cluster CA and the token file (re-read as it rotates)."""
        from kubernetes import client as k8s_client
        from kubernetes.config import incluster_config

        configuration = k8s_client.Configuration()
        loader = incluster_config.InClusterConfigLoader(
            token_filename=str(token_file),
            cert_filename=str(ca_file),
            try_refresh_token=False,
            environ=environ,
        )
        loader.load_and_set(configuration)
        return cls(configuration.host, _tls(configuration), token_file=token_file)

    def authorization(self) -> str | None:
        """The ``Authorization`` value for the next request, None without a token. May run
        an exec plugin (blocking): call `async_authorization` on an event loop."""
        if self._token_file is not None:
            token = self._token_file.token()
            return f"Bearer {token}" if token else None
        if self.configuration is None:
            return None
        value = self.configuration.get_api_key_with_prefix("BearerToken")
        if not value:
            return None
        return str(value) if str(value).lower().startswith("bearer ") else f"Bearer {value}"

    async def async_authorization(self) -> str | None:
        """`authorization`, with a refresh hook (an exec plugin may run a command) off the
        event loop."""
        # kubernetes declares the hook as always None (its __init__ sets it so); loaders set it.
        refresh: object = self.configuration is not None and self.configuration.refresh_api_key_hook
        if self._token_file is None and refresh:
            return await asyncio.to_thread(self.authorization)
        return self.authorization()

    async def headers(self) -> dict[str, str]:
        """The authentication headers of the next request."""
        value = await self.async_authorization()
        return {"Authorization": value} if value else {}


def _kubeconfig_token_file(config_file: str | None) -> Path | None:
    """The current user's ``tokenFile`` (absolute), which the `kubernetes` package reads only
    once; None if the user has none, or a ``token`` (which wins, as in kubectl), or the
    kubeconfig is a merged list of files."""
    name = config_file or os.path.expanduser(DEFAULT_KUBECONFIG)
    if os.pathsep in name:
        return None
    path = Path(name)
    data = yaml.safe_load(path.read_text()) or {}
    current = data.get("current-context")
    contexts = {c.get("name"): c.get("context") or {} for c in data.get("contexts") or []}
    users = {u.get("name"): u.get("user") or {} for u in data.get("users") or []}
    user = users.get(contexts.get(current, {}).get("user"), {})
    if "token" in user or not user.get("tokenFile"):
        return None
    return path.parent / Path(user["tokenFile"]).expanduser()


def _tls(configuration: k8s_client.Configuration) -> ssl.SSLContext:
    """The TLS context of a resolved configuration: its CA, client certificate, and
    ``insecure-skip-tls-verify``."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context
