"""``python -m paddock.proxy --config FILE``: run the credential proxy until SIGTERM/SIGINT.

Exit status 2 for an invalid config, 1 if a listener cannot be bound. The audit trail goes to
stdout, operational messages to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from paddock.proxy.config import ConfigError
from paddock.proxy.server import ProxyServer


async def _run(config: Path) -> None:
    server = ProxyServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await server.start()
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m paddock.proxy", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="the proxy's YAML config file")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(_run(args.config))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
