"""`python -m paddock.runner`: run the pods of a cluster's apiserver as local processes.

Needs root (network namespaces, bind mounts, switching uids) and iproute2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

from paddock.kube import KubeClient
from paddock.runner.network import PodNetwork
from paddock.runner.node import Runner


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m paddock.runner",
        description="Local pod runner: a development stand-in for a kubelet.",
    )
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG")
    parser.add_argument(
        "--namespace", action="append", default=[], help="namespace to serve (repeat); default all"
    )
    parser.add_argument("--state-dir", type=Path, default=Path("/var/lib/paddock-runner"))
    parser.add_argument("--bridge", default="paddock0", help="the host bridge of the pod network")
    parser.add_argument(
        "--pod-cidr", default="10.244.0.0/16", help="pod addresses; the first is the host's"
    )
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="IMAGE=PYTHON",
        help="run containers of IMAGE with PYTHON standing in for the image's python "
        "(repeat); other images run with the runner's own Python",
    )
    args = parser.parse_args(argv)
    images = {}
    for item in args.image:
        image, _, python = item.partition("=")
        if not image or not python:
            parser.error(f"--image {item!r}: expected IMAGE=PYTHON")
        images[image] = python
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line a request drowns the story
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("ip", "mount", "unshare")):
        sys.exit(
            "paddock runner: needs root, iproute2 and util-linux (it makes network, mount and "
            "PID namespaces)"
        )
    # Only root enters the state directory: containers see their own volumes through bind
    # mounts into their root filesystem, never the directory that holds every pod's.
    args.state_dir.mkdir(parents=True, exist_ok=True)
    args.state_dir.chmod(0o700)
    asyncio.run(_serve(args, images))


async def _serve(args: argparse.Namespace, images: dict[str, str]) -> None:
    kube = KubeClient.from_environment(args.kubeconfig)
    runner = Runner(
        kube, PodNetwork(args.bridge, args.pod_cidr), args.state_dir, args.namespace, images
    )
    task = asyncio.create_task(runner.run())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        await kube.aclose()


if __name__ == "__main__":
    main()
