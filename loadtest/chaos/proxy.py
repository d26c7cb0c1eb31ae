"""TCP proxies in front of Kafka, one per link, that the chaos run can cut and heal.

Run as ``python -m loadtest.chaos.proxy LISTEN:TARGET ...`` (one pair per link, ports on
127.0.0.1). Commands arrive on stdin, one per line, and are answered ``ok`` on stdout:

- ``cut N reset``: close every connection of link N and refuse new ones (accepted, then
  closed at once) until healed: Kafka looks down to that one client.
- ``cut N blackhole``: forward nothing more in either direction on link N; bytes already
  read are held, new connections are accepted and held too. A network partition: requests
  stay unanswered until the client's own timeouts fire.
- ``heal N``: forward again; held bytes and held connections go through, in order.

Why a proxy: every component reaches Kafka at the address the broker advertises, so the
broker of a chaos run has one listener per link, each advertising its proxy's port (see
``loadtest.chaos.cluster``); cutting one link cuts one relay or publisher, and nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, field

__all__ = ["Link", "main"]


@dataclass
class Link:
    """One listening port forwarding to one target port."""

    listen: int
    target: int
    mode: str = "up"  # up | reset | blackhole
    healed: asyncio.Event = field(default_factory=asyncio.Event)
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.healed.set()

    def cut(self, mode: str) -> None:
        self.mode = mode
        self.healed.clear()
        if mode == "reset":
            for writer in list(self.writers):
                with contextlib.suppress(Exception):
                    writer.transport.abort()

    def heal(self) -> None:
        self.mode = "up"
        self.healed.set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            writer.transport.abort()
            return
        await self.healed.wait()  # a new connection during a blackhole waits here
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self.writers.discard(w)
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                if not self.healed.is_set():
                    await self.healed.wait()
                data = await reader.read(65536)
                if not data:
                    break
                if not self.healed.is_set():
                    await self.healed.wait()  # hold what was read during a cut
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()


async def _serve(links: list[Link]) -> None:
    servers = [
        await asyncio.start_server(link.handle, "127.0.0.1", link.listen, backlog=256)
        for link in links
    ]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    while line := await reader.readline():
        words = line.decode().split()
        if not words:
            continue
        try:
            link = links[int(words[1])]
            if words[0] == "cut":
                link.cut(words[2])
            elif words[0] == "heal":
                link.heal()
            else:
                raise ValueError(words[0])
            print("ok", flush=True)
        except (IndexError, ValueError) as exc:
            print(f"error {exc}", flush=True)
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    links = []
    for pair in args:
        listen, _, target = pair.partition(":")
        links.append(Link(int(listen), int(target)))
    try:
        import uvloop

        uvloop.run(_serve(links))
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(_serve(links))
    return 0


if __name__ == "__main__":
    sys.exit(main())
