"""A loopback TCP proxy that injects faults between a client and a server (Redis, here).

Modes, switchable at any time (``proxy.mode = ...``), applying to connections already open too:

* ``"pass"``: bytes flow both ways untouched.
* ``"delay"``: every chunk the server sends reaches the client ``delay_s`` later (order kept):
  a slow server, or a slow network, as each reply comes late.
* ``"blackhole"``: connections are accepted, nothing reaches the server and nothing comes back (a
  server that stopped answering without closing: paused, or behind a partition). What is in
  flight is held, not lost, as TCP would retransmit it: back to ``"pass"``, the connections
  opened meanwhile reach the server and those that lived through it carry on where they were.
  A client that gave up meanwhile closes its connection, and what it had sent goes with it.

One asyncio loop on a thread of its own owns every connection; ``mode`` and ``delay_s`` are
plain attributes read by it (set them from any thread).
"""

from __future__ import annotations

import asyncio
import threading

from devkit.ports import free_port

MODES = ("pass", "delay", "blackhole")


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.mode = "pass"
        self.delay_s = 0.2
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro) -> asyncio.Task:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        me = asyncio.current_task()
        if me is not None:  # so that stop() ends it too
            self._tasks.add(me)
            me.add_done_callback(self._tasks.discard)
        server_w = None
        try:
            await self._while_blackholed()
            server_r, server_w = await asyncio.open_connection(*self.target)
            up = self._spawn(self._pipe(client_r, server_w, towards_client=False))
            down = self._spawn(self._pipe(server_r, client_w, towards_client=True))
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            up.cancel()
            down.cancel()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for writer in (client_w, server_w):
                if writer is not None:
                    writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, towards_client: bool) -> None:
        pending: asyncio.Queue = asyncio.Queue()
        sender = self._spawn(self._send_later(pending, writer)) if towards_client else None
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                await self._while_blackholed()
                if towards_client:
                    due = self._loop.time() + (self.delay_s if self.mode == "delay" else 0.0)
                    pending.put_nowait((due, data))
                else:
                    writer.write(data)
                    await writer.drain()
        finally:
            if sender is not None:
                sender.cancel()

    async def _send_later(self, pending: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        while True:
            due, data = await pending.get()
            wait = due - self._loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._while_blackholed()
            writer.write(data)
            await writer.drain()

    async def _while_blackholed(self) -> None:
        while self.mode == "blackhole":
            await asyncio.sleep(0.02)
