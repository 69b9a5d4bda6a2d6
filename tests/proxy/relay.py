"""A byte relay between a TCP port and a Unix socket, for the network-namespace test.

``python relay.py LISTEN CONNECT`` where each side is ``tcp:HOST:PORT`` or ``unix:PATH``.
Prints ``ready`` once listening. A Unix socket crosses network namespaces, so a sandbox in a
namespace with nothing but loopback can reach exactly one thing outside: what this relays to.
"""

from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


async def _open(spec: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    kind, _, address = spec.partition(":")
    if kind == "unix":
        return await asyncio.open_unix_connection(address)
    host, _, port = address.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def main(listen: str, target: str) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await _open(target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        up_writer.close()
        writer.close()

    kind, _, address = listen.partition(":")
    if kind == "unix":
        server = await asyncio.start_unix_server(handle, address)
    else:
        host, _, port = address.rpartition(":")
        server = await asyncio.start_server(handle, host, int(port))
    print("ready", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
