"""Per-request CPU of Kubernetes clients, against a real kube-apiserver on this machine.

Starts etcd + kube-apiserver the way the tests do (`paddock.testing.controlplane`), then
sends the same requests through each client, ``--concurrency`` at a time:

- `aiohttp`: `paddock.kube.KubeClient` as shipped;
- `httpx`: the same client with its transport (`_send`, `watch_events`) on httpx, as
  `paddock.kube` was before (pool and semaphore of ``--concurrency``): the baseline;
- `kubernetes_asyncio` if it is importable (it is not a dependency of Paddock): once as
  it is meant to be used (answers become its model objects), once raw
  (``_preload_content=False`` and `json.loads`, what Paddock would do with dicts).

Operations: GET of one ConfigMap (``--requests``), LIST of 20 labelled ConfigMaps and merge
PATCH of one ConfigMap (a third as many each), and for the two `paddock.kube` transports the
events of a watch that replays 500 ConfigMaps. For each client and operation it prints this
process's CPU (user + system; the apiserver runs in other processes) per request, the wall
time, and the CPU against the baseline measured in the same run. Each client runs
``--rounds`` times (interleaved); the figures are the round with the least CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from paddock.kube import Answer, ApiError, KubeClient, path, raise_for_status
from paddock.testing.controlplane import ControlPlane

NAMESPACE = "bench-kube"
LISTED = 20
WATCHED = 500


@dataclass
class HttpxKubeClient(KubeClient):
    """`KubeClient` sending through one httpx client, with a semaphore in front of its pool
    (as the httpx `paddock.kube` did: httpcore's pool bookkeeping grows with waiters)."""

    _http: httpx.AsyncClient | None = field(default=None, init=False, repr=False)
    _slots: asyncio.Semaphore | None = field(default=None, init=False, repr=False)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            limits = httpx.Limits(
                max_connections=self.connections, max_keepalive_connections=self.connections
            )
            self._http = httpx.AsyncClient(
                base_url=self.credentials.host,
                verify=self.credentials.ssl_context,
                timeout=self.read_timeout_s,
                limits=limits,
            )
            self._slots = asyncio.Semaphore(self.connections)
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        await super().aclose()

    async def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        body: bytes | None,
        headers: Mapping[str, str],
    ) -> Answer:
        http = self._client()
        assert self._slots is not None
        async with self._slots:
            response = await http.request(method, url, params=params, content=body, headers=headers)
        return Answer(response.status_code, response.content, response.headers.get("Retry-After"))

    async def watch_events(
        self, url: str, params: Mapping[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        headers = await self.credentials.headers()
        async with self._client().stream(
            "GET", url, params=dict(params), headers=headers, timeout=None
        ) as reply:
            if reply.status_code >= 400:
                raise_for_status(reply.status_code, (await reply.aread()).decode())
            async for line in reply.aiter_lines():
                if line:
                    yield json.loads(line)


Operation = Callable[[int], Awaitable[Any]]


@dataclass
class Figures:
    cpu_s: float
    wall_s: float
    count: int

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_s / self.count


async def measure(operation: Operation, count: int, concurrency: int) -> Figures:
    numbers = iter(range(count))

    async def worker() -> None:
        for number in numbers:
            await operation(number)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Figures(time.process_time() - cpu, time.perf_counter() - wall, count)


def kube_operations(kube: KubeClient) -> dict[str, Operation]:
    async def get(_: int) -> None:
        await kube.get("v1", "ConfigMap", NAMESPACE, "probe")

    async def list_(_: int) -> None:
        items = await kube.list("v1", "ConfigMap", NAMESPACE, labels={"bench": "listed"})
        assert len(items) == LISTED

    async def patch(number: int) -> None:
        await kube.patch("v1", "ConfigMap", NAMESPACE, "probe", {"data": {"n": str(number)}})

    async def watch(_: int) -> None:
        params = {"watch": "1", "resourceVersion": "0", "labelSelector": "bench=watched"}
        seen = 0
        async with contextlib.aclosing(
            kube.watch_events(path("v1", "ConfigMap", NAMESPACE), params)
        ) as events:
            async for _event in events:
                seen += 1
                if seen == WATCHED:
                    break

    return {"GET": get, "LIST": list_, "PATCH": patch, "WATCH": watch}


def asyncio_operations(api: Any, *, raw: bool) -> dict[str, Operation]:
    """kubernetes_asyncio's CoreV1Api calls; ``raw``: the answer as bytes, decoded here."""
    extra: dict[str, Any] = {"_preload_content": False} if raw else {}

    async def answer(call: Awaitable[Any]) -> Any:
        result = await call
        if raw:
            async with result:
                return json.loads(await result.read())
        return result

    async def get(_: int) -> None:
        await answer(api.read_namespaced_config_map("probe", NAMESPACE, **extra))

    async def list_(_: int) -> None:
        result = await answer(
            api.list_namespaced_config_map(NAMESPACE, label_selector="bench=listed", **extra)
        )
        assert len(result["items"] if raw else result.items) == LISTED

    async def patch(number: int) -> None:
        body = {"data": {"n": str(number)}}
        await answer(api.patch_namespaced_config_map("probe", NAMESPACE, body, **extra))

    return {"GET": get, "LIST": list_, "PATCH": patch}


async def setup(kubeconfig: str) -> None:
    kube = KubeClient.from_environment(kubeconfig)
    try:
        await kube.create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
        names = [("probe", "probe")]
        names += [(f"listed-{i}", "listed") for i in range(LISTED)]
        names += [(f"watched-{i}", "watched") for i in range(WATCHED)]
        sem = asyncio.Semaphore(16)

        async def create(name: str, label: str) -> None:
            async with sem:
                await kube.create(
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {
                            "name": name,
                            "namespace": NAMESPACE,
                            "labels": {"bench": label},
                        },
                        "data": {"payload": "x" * 512},
                    }
                )

        await asyncio.gather(*(create(n, label) for n, label in names))
    finally:
        await kube.aclose()


@contextlib.asynccontextmanager
async def kubernetes_asyncio_api(kubeconfig: str, concurrency: int) -> AsyncIterator[Any]:
    # Not a dependency: imported by name, so that type checks pass without it.
    client = importlib.import_module("kubernetes_asyncio.client")
    config = importlib.import_module("kubernetes_asyncio.config")

    configuration = client.Configuration()
    await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    configuration.connection_pool_maxsize = concurrency
    async with client.ApiClient(configuration) as api_client:
        yield client.CoreV1Api(api_client)


async def run(kubeconfig: str, requests: int, concurrency: int, rounds: int) -> None:
    await setup(kubeconfig)
    counts = {"GET": requests, "LIST": requests // 3, "PATCH": requests // 3, "WATCH": 5}
    has_asyncio_client = importlib.util.find_spec("kubernetes_asyncio") is not None
    if not has_asyncio_client:
        print("kubernetes_asyncio is not importable: skipped")

    best: dict[tuple[str, str], Figures] = {}

    def keep(client: str, op: str, figures: Figures) -> None:
        if (client, op) not in best or figures.cpu_s < best[client, op].cpu_s:
            best[client, op] = figures

    async def run_all(client: str, operations: dict[str, Operation]) -> None:
        for op, operation in operations.items():
            await measure(operation, min(50, counts[op]), concurrency)  # warm: connections open
            figures = await measure(operation, counts[op], concurrency)
            if op == "WATCH":  # per event
                figures.count *= WATCHED
            keep(client, op, figures)

    for _ in range(rounds):
        for name, cls in (("httpx", HttpxKubeClient), ("aiohttp", KubeClient)):
            kube = cls.from_environment(kubeconfig, connections=concurrency)
            try:
                await run_all(name, kube_operations(kube))
            finally:
                await kube.aclose()
        if has_asyncio_client:
            for raw in (False, True):
                async with kubernetes_asyncio_api(kubeconfig, concurrency) as api:
                    name = "kubernetes_asyncio raw" if raw else "kubernetes_asyncio"
                    await run_all(name, asyncio_operations(api, raw=raw))

    print(
        f"{requests} GETs, {requests // 3} LISTs of {LISTED}, {requests // 3} PATCHes, 5 watches"
        f" of {WATCHED} events (figures per event); {concurrency} at a time;"
        f" best of {rounds} rounds"
    )
    print(f"{'client':<24}{'op':<7}{'CPU ms/req':>11}{'wall s':>9}{'req/s':>8}{'CPU/httpx':>10}")
    for (client, op), figures in best.items():
        baseline = best.get(("httpx", op))
        ratio = f"{figures.cpu_s / baseline.cpu_s:.2f}" if baseline else "-"
        print(
            f"{client:<24}{op:<7}{figures.cpu_ms:>11.3f}{figures.wall_s:>9.2f}"
            f"{figures.count / figures.wall_s:>8.0f}{ratio:>10}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="GETs per client and round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not 1 <= args.requests <= 20000:
        parser.error("--requests must be between 1 and 20000")
    with ControlPlane() as plane:
        asyncio.run(run(str(plane.kubeconfig), args.requests, args.concurrency, args.rounds))


if __name__ == "__main__":
    try:
        main()
    except ApiError as exc:
        raise SystemExit(f"the apiserver refused: {exc}") from exc
