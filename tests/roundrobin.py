"""A loopback TCP round-robin balancer for tests: ``python -m tests.roundrobin UPSTREAM_PORT...``.

Each accepted connection goes to the next upstream port in turn; an upstream that refuses the
connection (its process is gone) is skipped for the next one, as a load balancer's retry of a
failed connect does. Bytes are copied both ways until either side closes, then both are closed:
a stream whose API process dies ends for its client, who reconnects. It prints its port on the
first line of stdout once listening. :class:`RoundRobin` starts and stops it from a test.

Everything here runs on the proxy's one event loop (no shared state but the turn counter).
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from pathlib import Path

HOST = "127.0.0.1"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def serve(upstreams: list[int]) -> None:
    turn = itertools.count()

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        first = next(turn)
        for step in range(len(upstreams)):
            try:
                up_reader, up_writer = await asyncio.open_connection(HOST, upstreams[(first + step) % len(upstreams)])
                break
            except OSError:
                continue
        else:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, up_writer), _pipe(up_reader, client_writer))

    server = await asyncio.start_server(handle, HOST, 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


class RoundRobin:
    """The balancer in a subprocess of its own (it copies every byte: keep it off the test's CPU)."""

    def __init__(self, upstreams: list[int]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.roundrobin", *map(str, upstreams)],
                                     stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the round-robin proxy exited with {self.proc.wait()}")
        self.port = int(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


if __name__ == "__main__":
    try:
        asyncio.run(serve([int(port) for port in sys.argv[1:]]))
    except KeyboardInterrupt:
        pass
