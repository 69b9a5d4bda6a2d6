"""The credential proxy: the only container that holds secrets, a sidecar of every harness pod.

Three listeners (see `docs/proxy.md`): the Claude API reverse proxy that adds the API key, the
authenticated egress proxy that is the sandboxes' only way out, and a loopback admin listener
that mints egress tokens. Run it with ``python -m paddock.proxy --config FILE``.
"""

from paddock.proxy.tokens import mint as mint_token

__all__ = ["mint_token"]
