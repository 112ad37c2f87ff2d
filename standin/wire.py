"""The TCP side: MockupDB's listener, message parsing and reply encoding, our own loops.

Three MockupDB behaviours are replaced, both in private methods of MockupDB 1.8.1:

* its per-connection loop formats every request with ``json_util`` for its log even when
  not verbose (slower than the rest of a getMore put together), and runs responders under
  one server-wide lock, so a waiting change-stream getMore would stall every connection.
  Ours calls the handler without that lock; the store does its own locking.
* its message reader grows a bytes object chunk by chunk (quadratic: seconds for a 45 MB
  insert_many); ours reads into one preallocated buffer and hands it to MockupDB's parsers.
* its accept loop polls ``select`` with a one-second timeout, so ``stop()`` could take a
  second; ours is woken through a socket pair.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

from mockupdb import OP_MSG_FLAGS, OPCODES, MockupDB, OpMsg, OpMsgReply, OpReply, Request

log = logging.getLogger(__name__)

HANGUP = object()
"""Returned by a handler to drop the connection instead of replying."""

Handler = Callable[[Request], Any]


_HEADER = struct.Struct("<iiii")  # messageLength, requestID, responseTo, opCode


class ConnectionClosed(Exception):
    """The peer closed the connection (or sent something we cannot read)."""


def _receive_exactly(sock: socket.socket, length: int) -> memoryview:
    buffer = memoryview(bytearray(length))
    received = 0
    while received < length:
        count = sock.recv_into(buffer[received:], length - received)
        if count == 0:
            raise ConnectionClosed
        received += count
    return buffer


def receive_request(sock: socket.socket, server: MockupDB) -> Request:
    """Read one message and parse it with MockupDB's parser for its opcode."""
    length, request_id, _, opcode = _HEADER.unpack(_receive_exactly(sock, _HEADER.size))
    if opcode not in OPCODES or not _HEADER.size <= length <= 64 * 1024 * 1024:
        raise ConnectionClosed
    body = _receive_exactly(sock, length - _HEADER.size).tobytes()
    return OPCODES[opcode].unpack(body, sock, server, request_id)


def _more_to_come(request: Request) -> bool:
    return isinstance(request, OpMsg) and bool(request.flags & OP_MSG_FLAGS["moreToCome"])


def encode_reply(request: Request, reply: dict) -> bytes:
    """The reply message for a request: OP_MSG for OP_MSG, OP_REPLY for legacy commands."""
    if isinstance(request, OpMsg):
        return OpMsgReply(reply).reply_bytes(request)
    return OpReply(reply).reply_bytes(request)


class WireServer(MockupDB):
    """A MockupDB that hands every request to ``handler`` and sends back what it returns."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(port=port)
        self._address = (host, port)
        self._handler = handler
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop_once = threading.Lock()
        self._stop_done = False

    def stop(self) -> None:
        """Close the listener and every connection; idempotent."""
        with self._stop_once:
            if self._stop_done:
                return
            self._stop_done = True
            self._stopped = True
            if self._accept_thread is None:
                self._wake_r.close()
                self._wake_w.close()
                return
            self._wake_w.send(b"x")
            super().stop()
            self._wake_r.close()
            self._wake_w.close()

    def _accept_loop(self) -> None:
        listener = self._listening_sock
        try:
            listener.setblocking(False)
        except OSError:  # stop() closed the listener before this thread got going
            return
        while not self._stopped:
            try:
                readable, _, _ = select.select([listener, self._wake_r], [], [])
            except (OSError, ValueError):
                break
            if self._wake_r in readable or self._stopped:
                break
            try:
                client, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                break
            client.setblocking(True)
            thread = threading.Thread(target=self._server_loop, args=(client, address), daemon=True)
            with self._lock:
                if self._stopped:
                    client.close()
                    break
                self._server_threads[thread] = None
                self._server_socks[client] = None
            thread.start()

    def _server_loop(self, client: socket.socket, client_addr: Any) -> None:
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while not self._stopped:
                try:
                    request = receive_request(client, self)
                except Exception:  # closed, reset, or a message we cannot parse
                    break
                reply = self._handler(request)
                if reply is HANGUP:
                    _hang_up(request, client)
                    break
                if reply is None or _more_to_come(request):
                    continue
                try:
                    client.sendall(encode_reply(request, reply))
                except OSError:
                    break
        except Exception:
            log.exception("stand-in connection from %s failed", client_addr)
        finally:
            client.close()


def _hang_up(request: Request, client: socket.socket) -> None:
    try:
        request.hangup()
    except OSError:
        try:
            client.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
