"""Azure's request budget for one subscription, shared by everything the operator asks.

Azure throttles per subscription (ARM: reads 250 burst / 25 per s, writes 200 / 10 per s;
Compute: list 300/min, operation-status reads 5,000/min) and answers 429 with ``Retry-After``
when a bucket runs dry. Retrying each throttled call on its own makes a burst worse; so every
request waits here for a token of its kind first, a 429 pauses that kind for the whole
subscription, and power operations additionally queue fairly by namespace under a cap on how
many may be in flight at once — a thousand flips drain in order instead of stampeding.

How the read budget is shared (the rule that keeps every kind of read moving):

- Each kind of request has its own bucket (list pages, operation polls, writes); every ARM read —
  a per-VM GET, a list page, an operation poll — also needs a token of the shared read bucket.
- Tokens are never lent. A request that finds no token waits in a queue; it does not go into
  debt, so a thousand queued GETs cannot push a walk or a poll seconds into the future.
- Waiters queue in one of three lanes, by what the read is for (``Lane``): COMPLETION (the end of
  an operation of ours: its status polls, and walks while operations run), REACTION (a GpuVm
  that just appeared, or a VM about to be acted on) and BACKGROUND (re-observing settled VMs:
  the periodic walk, tag pages, out-of-band transitions). When a token frees up it goes to a
  waiting lane by stride scheduling with weights 6 : 3 : 1, so while all three wait, completion
  gets 60 % of the tokens, reaction 30 % and background 10 %; a lane that waits alone gets
  everything, and a lane that was idle does not bank credit. No lane starves: background still
  moves at a tenth of the budget under any load, and work that waits for an operation's end
  always gets its reads before background re-observation.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass


class Kind(str, enum.Enum):
    READ = "read"  # GET of one VM or its tags
    LIST = "list"  # one page of a list / list_all walk
    POLL = "poll"  # one status read of a running operation
    WRITE = "write"  # a power operation or a tag write


class Lane(enum.IntEnum):
    """What a read is for: its share of the budget when others wait too (see the module doc)."""

    COMPLETION = 0
    REACTION = 1
    BACKGROUND = 2


LANE_WEIGHTS: Mapping[Lane, float] = {Lane.COMPLETION: 6.0, Lane.REACTION: 3.0, Lane.BACKGROUND: 1.0}

# Why the requests made in this context are made: their lane, and a purpose for the request
# record (walk pages, tag pages, and per-VM reads by cause). Set by the code that knows why it
# reads; unset, polls are COMPLETION and everything else REACTION.
_reading: contextvars.ContextVar[tuple[Lane, str] | None] = contextvars.ContextVar("gpuvm_reading", default=None)


@contextlib.contextmanager
def reading(lane_: Lane, purpose: str) -> Iterator[None]:
    """Requests made inside this block (and tasks it starts) wait in ``lane_``'s lane and are
    counted under ``purpose``."""
    token = _reading.set((lane_, purpose))
    try:
        yield
    finally:
        _reading.reset(token)


def current_reading(kind: Kind) -> tuple[Lane, str]:
    chosen = _reading.get()
    if chosen is not None:
        return chosen
    return (Lane.COMPLETION, "poll") if kind is Kind.POLL else (Lane.REACTION, kind.value)


@dataclass(frozen=True)
class Rate:
    burst: float
    per_second: float

    def scaled(self, factor: float) -> Rate:
        return Rate(max(1.0, self.burst * factor), self.per_second * factor)


# Azure's documented budgets (see azure-facts.md). The operator keeps to a share of them
# (PacingSettings.share) so that other clients of the subscription still get through.
AZURE_BUDGET: dict[Kind, Rate] = {
    Kind.READ: Rate(250, 25),
    Kind.LIST: Rate(900 / 3, 300 / 60),
    # Compute allows 5,000 operation-status reads a minute, but each is an ARM read too (25/s).
    # Polls get at most 40 % of those in the long run; the lanes of the read bucket do the rest.
    # Their burst is ARM's whole read bucket: operations started together (100 flips at once)
    # are polled together, instead of one every 1/8 s while their VMs are long running.
    Kind.POLL: Rate(250, 10),
    Kind.WRITE: Rate(200, 10),
}


@dataclass(frozen=True)
class PacingSettings:
    share: float = 0.8  # of Azure's budget; 0 or less disables pacing (a simulator without throttling)
    max_in_flight: int = 1000  # power operations per subscription at once
    rates: tuple[tuple[Kind, Rate], ...] = ()  # explicit budgets, instead of a share of Azure's

    def rate(self, kind: Kind) -> Rate | None:
        explicit = dict(self.rates)
        if kind in explicit:
            return explicit[kind]
        return AZURE_BUDGET[kind].scaled(self.share) if self.share > 0 else None


class TokenBucket:
    """Classic token bucket on an injected monotonic clock; never goes into debt."""

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self.tokens = rate.burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.rate.burst, self.tokens + (now - self.stamp) * self.rate.per_second)
        self.stamp = now

    def wait_time(self, now: float) -> float:
        """Seconds until one token is available (0 when it is now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate.per_second

    def take(self, now: float) -> None:
        """Take one token; only after ``wait_time`` said 0."""
        self._refill(now)
        self.tokens -= 1

    def give_back(self) -> None:
        """A token granted to a caller who gave up before using it."""
        self.tokens = min(self.rate.burst, self.tokens + 1)


class Gate:
    """One bucket's tokens, handed to waiters by lane (stride scheduling), never on credit.

    Without a rate the gate only honours 429 pauses. Futures are resolved by ``_pump`` alone, at
    the moment a token is taken for them, so a waiter that is cancelled before its turn costs
    nothing and one cancelled just after it was granted gives its token back.
    """

    def __init__(self, rate: Rate | None, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.bucket = TokenBucket(rate, clock()) if rate is not None else None
        self.paused_until = 0.0
        self._waiters: dict[Lane, deque[asyncio.Future[None]]] = {lane_: deque() for lane_ in Lane}
        self._pass: dict[Lane, float] = dict.fromkeys(Lane, 0.0)
        self._vtime = 0.0  # the pass of the last grant: an idle lane restarts from here
        self._timer: asyncio.TimerHandle | None = None

    def wait_time(self, now: float) -> float:
        return max(self.paused_until - now, self.bucket.wait_time(now) if self.bucket else 0.0)

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiters.values())

    def waiting_in(self, lane_: Lane) -> int:
        return len(self._waiters[lane_])

    async def acquire(self, lane_: Lane) -> None:
        now = self._clock()
        if not self.waiting and self.wait_time(now) <= 0:
            if self.bucket:
                self.bucket.take(now)
            return
        queue = self._waiters[lane_]
        if not queue:
            self._pass[lane_] = max(self._pass[lane_], self._vtime)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(future)
        self._pump()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._give_back()
            raise

    def _give_back(self) -> None:
        if self.bucket:
            self.bucket.give_back()
        self._pump()

    def pause(self, until: float) -> None:
        self.paused_until = max(self.paused_until, until)
        self._pump()

    def _pump(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while True:
            for queue in self._waiters.values():
                while queue and queue[0].done():
                    queue.popleft()  # cancelled while waiting
            lanes = [lane_ for lane_, queue in self._waiters.items() if queue]
            if not lanes:
                return
            now = self._clock()
            wait = self.wait_time(now)
            if wait > 0:
                self._timer = asyncio.get_running_loop().call_later(wait, self._pump)
                return
            chosen = min(lanes, key=lambda lane_: (self._pass[lane_], lane_))
            future = self._waiters[chosen].popleft()
            if self.bucket:
                self.bucket.take(now)
            self._vtime = self._pass[chosen]
            self._pass[chosen] += 1.0 / LANE_WEIGHTS[chosen]
            future.set_result(None)


WaitObserver = Callable[[Kind, float], None]


class SubscriptionPacer:
    def __init__(
        self,
        settings: PacingSettings,
        *,
        clock: Callable[[], float] | None = None,
        on_wait: WaitObserver | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock or asyncio.get_running_loop().time
        self._gates = {kind: Gate(settings.rate(kind), self._clock) for kind in Kind}
        self._on_wait = on_wait
        self.in_flight = 0
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}
        self._turns: deque[str] = deque()  # namespaces with someone waiting, in round-robin order
        self._pump_handle: asyncio.TimerHandle | None = None

    # ---- reads, lists, polls: a token each -----------------------------------------------

    async def take(self, kind: Kind) -> None:
        """Wait for a token of ``kind`` (and a shared read token for list pages and polls), in
        the lane of the current context (see ``reading``)."""
        chosen, _ = current_reading(kind)
        started = self._clock()
        try:
            await self._gates[kind].acquire(chosen)
            if kind in (Kind.LIST, Kind.POLL):
                await self._gates[Kind.READ].acquire(chosen)
        finally:
            waited = self._clock() - started
            if waited > 0 and self._on_wait:
                self._on_wait(kind, waited)

    def throttled(self, kind: Kind, retry_after: float | None) -> None:
        """Azure said 429: nobody of this kind asks again before ``Retry-After`` has passed."""
        until = self._clock() + (retry_after if retry_after and retry_after > 0 else 1.0)
        self._gates[kind].pause(until)
        if kind is Kind.WRITE:
            self._schedule_pump(until - self._clock())

    def waiting(self, kind: Kind, lane_: Lane | None = None) -> int:
        """Requests of ``kind`` queued for a token (in one lane, or all)."""
        gate = self._gates[kind]
        return gate.waiting if lane_ is None else gate.waiting_in(lane_)

    # ---- power operations: fair queue, in-flight cap, write tokens -----------------------

    async def acquire_operation(self, namespace: str) -> None:
        """Wait for this namespace's turn to start a power operation; call ``release`` after."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._queues.setdefault(namespace, deque())
        if not queue:
            self._turns.append(namespace)
        queue.append(future)
        started = self._clock()
        self._pump()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # granted just as the caller gave up: hand the slot on
            raise
        waited = self._clock() - started
        if waited > 0 and self._on_wait:
            self._on_wait(Kind.WRITE, waited)

    def release(self) -> None:
        self.in_flight -= 1
        self._pump()

    def _schedule_pump(self, delay: float) -> None:
        if self._pump_handle is None:
            self._pump_handle = asyncio.get_running_loop().call_later(max(delay, 0.001), self._pump_later)

    def _pump_later(self) -> None:
        self._pump_handle = None
        self._pump()

    def _pump(self) -> None:
        """Grant waiting operations in namespace round-robin while the budget allows.

        Operations take write tokens straight from the write gate's bucket; the gate's own
        waiters (tag writes) are served by the gate, so neither goes into debt.
        """
        gate = self._gates[Kind.WRITE]
        while self._turns and self.in_flight < self.settings.max_in_flight:
            now = self._clock()
            wait = gate.wait_time(now)
            if wait > 0:
                self._schedule_pump(wait)
                return
            namespace = self._turns.popleft()
            queue = self._queues[namespace]
            future = queue.popleft()
            if queue:
                self._turns.append(namespace)
            else:
                del self._queues[namespace]
            if future.cancelled():
                continue
            if gate.bucket:
                gate.bucket.take(now)
            self.in_flight += 1
            future.set_result(None)

    @property
    def operations_waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())
