"""The sandbox ("hands"): a small HTTP server that runs the built-in toolset (bash, read,
write, edit, glob, grep) in a disposable pod, and the client the harness uses to reach it.

`python -m paddock.sandbox` starts the server; `SandboxClient` talks to it. The contract is in docs/sandbox.md.
"""

from paddock.sandbox.client import (
    SandboxAlreadyBound,
    SandboxClient,
    SandboxError,
    SandboxUnavailable,
    SandboxUnreachable,
)
from paddock.sandbox.packages import INSTALL_FAILED_EXIT, PLAN_ENV, PackagePlan

__all__ = [
    "INSTALL_FAILED_EXIT",
    "PLAN_ENV",
    "PackagePlan",
    "SandboxAlreadyBound",
    "SandboxClient",
    "SandboxError",
    "SandboxUnavailable",
    "SandboxUnreachable",
]
