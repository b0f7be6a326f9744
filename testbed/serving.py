"""Run an asyncio server (the Kubernetes emulator, the Azure simulator) on a loop of its own.

Why a thread: kopf's operator cancels every task of the loop it runs in when it stops, and the
official ``kubernetes`` client is synchronous. Giving each server its own loop in a daemon thread
lets tests, the demo and benchmarks drive the servers with plain blocking calls while the
operator runs elsewhere, without the servers and the operator starving or cancelling each other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class AsyncServer(Protocol):
    """What both in-process servers offer: start on a loop, stop on the same loop."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ServerThread:
    """Owns one event loop in a daemon thread and one server started on it.

    ``call`` runs a coroutine function on the server's loop and waits for its result, so the
    server's state is only ever touched from its own loop (no locks needed inside the server).
    """

    def __init__(self, server: AsyncServer, *, name: str = "server") -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._started = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def start(self, *, timeout: float = 30.0) -> "ServerThread":
        self._thread.start()
        self.call(self.server.start, timeout=timeout)
        self._started = True
        return self

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float = 30.0, **kwargs: Any) -> T:
        future = asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), self._loop)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"{getattr(fn, '__qualname__', fn)!s} did not finish in {timeout} s") from None

    def run_sync(self, fn: Callable[..., T], *args: Any, timeout: float = 30.0) -> T:
        """Run a plain function on the server's loop thread (for reads of its state)."""

        async def wrapper() -> T:
            return fn(*args)

        return self.call(wrapper, timeout=timeout)

    def stop(self, *, timeout: float = 30.0) -> None:
        if self._started:
            try:
                self.call(self.server.stop, timeout=timeout)
            finally:
                self._started = False
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=timeout)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
