"""`python -m paddock.sandbox`: serve the sandbox API.

python -m paddock.sandbox --port 8080 --workdir /workspace --token-file /var/run/paddock/token
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from paddock.sandbox.packages import (
    INSTALL_FAILED_EXIT,
    PLAN_ENV,
    InstallFailed,
    install,
    plan_from_env,
)
from paddock.sandbox.server import DEFAULT_OUTPUTS_DIR, Settings, create_app

TOKEN_FILE_ENV = "PADDOCK_SANDBOX_TOKEN_FILE"
log = logging.getLogger("paddock.sandbox")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m paddock.sandbox", description=__doc__)
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on")
    parser.add_argument("--workdir", type=Path, default=Path("/workspace"), help="where tools work")
    parser.add_argument(
        "--token-file",
        type=Path,
        default=os.environ.get(TOKEN_FILE_ENV),
        help=f"file holding this sandbox's bearer token (default: ${TOKEN_FILE_ENV})",
    )
    parser.add_argument(
        "--clone-timeout",
        type=float,
        default=300.0,
        help="seconds allowed for cloning one repository",
    )
    parser.add_argument(
        "--outputs-dir",
        type=Path,
        default=DEFAULT_OUTPUTS_DIR,
        help="where the agent leaves files for the user, collected after each turn",
    )
    args = parser.parse_args(argv)
    if args.token_file is None:
        parser.error(f"a token is required: pass --token-file or set {TOKEN_FILE_ENV}")
    try:
        token = Path(args.token_file).read_text().strip()
    except OSError as exc:
        parser.error(f"cannot read the token file: {exc}")
    if not token:
        parser.error(f"the token file {args.token_file} is empty")

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if os.getpid() == 1:
        _serve_under_init()
    try:
        packages = plan_from_env(os.environ)
    except ValueError as exc:
        parser.error(f"${PLAN_ENV} is not a package plan: {exc}")
    if packages is not None:
        # Before listening: the pod is Ready, so claimable, only with its packages in place.
        try:
            seconds = asyncio.run(install(packages))
        except InstallFailed as exc:
            # The log's tail becomes the pod's termination message, shown in the status.
            print(f"package install failed: {exc}", file=sys.stderr, flush=True)
            sys.exit(INSTALL_FAILED_EXIT)
        log.info("packages installed in %.1fs", seconds)
    settings = Settings(
        workdir=args.workdir.absolute(),
        token=token,
        clone_timeout=args.clone_timeout,
        outputs_dir=args.outputs_dir.absolute(),
        packages=packages,
    )
    log.info("serving %s on %s:%d", settings.workdir, args.host, args.port)
    web.run_app(create_app(settings), host=args.host, port=args.port, print=None)


def _serve_under_init() -> None:
    """As PID 1 (a container without an init), fork: the child returns and serves, the
    parent forwards signals to it and reaps every orphan. Without this, processes orphaned
    by killed commands would stay zombies for the life of the pod. Never returns in the
    parent: it exits with the server's status."""
    server = os.fork()
    if server == 0:
        return

    def forward(number: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):  # the server may have just exited
            os.kill(server, number)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, forward)
    while True:
        pid, status = os.wait()
        if pid == server:
            code = os.waitstatus_to_exitcode(status)
            sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
