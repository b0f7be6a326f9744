"""One scheduler for every GpuVm: a due-time queue, bounded concurrency, one step per object.

Why not a kopf daemon per GpuVm (what this replaced): each daemon is a task with kopf's per-object
bookkeeping (≈24 KiB each), and timers that only the engine knows about — an idle deadline, a
schedule edge, a claim's expiry — had no home but a loop inside each daemon. Here a GpuVm is a key
in a heap with the time it is next due; watch events and bulk walks ``wake`` it (due now), a step
returns when it wants to be looked at again, and a timer anywhere in the engine is just ``at``.

Guarantees:
- never two steps of one key at once: a key woken while its step runs is stepped once more
  right after (``exclusive`` lets a caller outside the loop — the finalizer — take the same turn);
- at most ``concurrency`` steps at once, taken in due-time order, so a burst of wake-ups drains
  in order instead of starting thousands of steps;
- a key's due time only moves earlier until it is stepped: a wake-up is never lost behind a
  later timer, and repeated wake-ups of a queued key cost nothing.

The scheduler runs only while this replica is active (``run`` returns when ``stopped`` is set:
kopf's peering pauses it, see controller/operator.py); wake-ups while it is stopped are kept and
served when it runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
Step = Callable[[Any], Awaitable[float | None]]


class Scheduler(Generic[K]):
    def __init__(self, step: Callable[[K], Awaitable[float | None]], *, concurrency: int = 32) -> None:
        """``step(key)`` reconciles one key and returns in how many seconds it wants another
        step (None: only when woken). Exceptions are logged and retried after ``error_delay``."""
        self._step = step
        self.concurrency = max(1, concurrency)
        self.error_delay = 30.0
        self._heap: list[tuple[float, int, K]] = []
        self._due: dict[K, float] = {}
        self._seq = itertools.count()
        self._running: set[K] = set()
        self._again: set[K] = set()  # woken while running: step again right after
        self._idle: dict[K, asyncio.Event] = {}  # set when the key's running step ends (for ``exclusive``)
        self._changed: asyncio.Event | None = None
        self.steps = 0

    # ---- scheduling -------------------------------------------------------------------

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    def wake(self, key: K) -> None:
        """Step ``key`` as soon as a worker is free (after its running step, if any)."""
        if key in self._running:
            self._again.add(key)
            return
        self.at(key, self._loop_time())

    def at(self, key: K, when: float) -> None:
        """Step ``key`` no later than loop time ``when`` (an earlier due time stays)."""
        current = self._due.get(key)
        if current is not None and current <= when:
            return
        self._due[key] = when
        heapq.heappush(self._heap, (when, next(self._seq), key))
        if self._changed is not None and self._heap[0][0] >= when:
            self._changed.set()  # the new head: the loop may be sleeping until a later time

    def after(self, key: K, delay: float) -> None:
        self.at(key, self._loop_time() + max(0.0, delay))

    def forget(self, key: K) -> None:
        """The key is gone: drop its due time (a running step finishes; it is not requeued)."""
        self._due.pop(key, None)
        self._again.discard(key)

    def due(self, key: K) -> float | None:
        return self._due.get(key)

    def __len__(self) -> int:
        return len(self._due)

    @property
    def busy(self) -> int:
        return len(self._running)

    # ---- running ----------------------------------------------------------------------

    async def run(self, stopped: Any) -> None:
        """Step due keys until ``stopped`` (anything with ``is_set()``/``wait()`` or kopf's
        DaemonStopped) is set; running steps finish or are cancelled with this task."""
        self._changed = asyncio.Event()
        slots = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        stop_waiter = asyncio.ensure_future(_wait_stopped(stopped))
        try:
            while not stop_waiter.done():
                key = self._pop_due()
                if key is None:
                    await self._sleep_until_due(stop_waiter)
                    continue
                await slots.acquire()
                if stop_waiter.done():
                    slots.release()
                    self.at(key, self._loop_time())  # keep it for the next active period
                    break
                self._running.add(key)
                task = asyncio.create_task(self._run_one(key, slots), name=f"step {key}")
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            stop_waiter.cancel()
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            self._changed = None

    def _pop_due(self) -> K | None:
        now = self._loop_time()
        while self._heap:
            when, _, key = self._heap[0]
            if self._due.get(key) != when:
                heapq.heappop(self._heap)  # superseded by an earlier due time, or forgotten
                continue
            if when > now:
                return None
            heapq.heappop(self._heap)
            del self._due[key]
            if key in self._running:
                self._again.add(key)
                continue
            return key
        return None

    async def _sleep_until_due(self, stop_waiter: asyncio.Future[None]) -> None:
        assert self._changed is not None
        self._changed.clear()
        timeout = max(0.0, self._heap[0][0] - self._loop_time()) if self._heap else None
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({changed, stop_waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()

    async def _run_one(self, key: K, slots: asyncio.Semaphore) -> None:
        try:
            delay = await self._guarded(key)
        finally:
            self._finished(key)
            slots.release()
        if key in self._again:
            self._again.discard(key)
            self.wake(key)
        elif delay is not None:
            self.after(key, delay)

    async def _guarded(self, key: K) -> float | None:
        self.steps += 1
        try:
            return await self._step(key)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a bug in one step must not stop the others; it is logged
            log.exception("Reconciling %s failed unexpectedly; retrying in %.0f s", key, self.error_delay)
            return self.error_delay

    @contextlib.asynccontextmanager
    async def exclusive(self, key: K) -> AsyncIterator[None]:
        """Hold ``key``'s turn outside the loop (the finalizer steps a GpuVm itself): waits
        until no step of it runs, and keeps the loop from starting one meanwhile."""
        while key in self._running:
            idle = self._idle.setdefault(key, asyncio.Event())
            await idle.wait()
        self._running.add(key)
        try:
            yield
        finally:
            self._finished(key)
            if key in self._again:
                self._again.discard(key)
                self.wake(key)


    def _finished(self, key: K) -> None:
        self._running.discard(key)
        idle = self._idle.pop(key, None)
        if idle is not None:
            idle.set()


async def _wait_stopped(stopped: Any) -> None:
    await stopped.wait()
