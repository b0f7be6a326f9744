"""Azure's request budget for one subscription, shared by everything the operator asks.

Azure throttles per subscription (ARM: reads 250 burst / 25 per s, writes 200 / 10 per s;
Compute: list 300/min, operation-status reads 5,000/min) and answers 429 with ``Retry-After``
when a bucket runs dry. Retrying each throttled call on its own makes a burst worse; so every
request waits here for a token of its kind first, a 429 pauses that kind for the whole
subscription, and power operations additionally queue fairly by namespace under a cap on how
many may be in flight at once — a thousand flips drain in order instead of stampeding.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


class Kind(str, enum.Enum):
    READ = "read"  # GET of one VM or its tags
    LIST = "list"  # one page of a list / list_all walk
    POLL = "poll"  # one status read of a running operation
    WRITE = "write"  # a power operation or a tag write


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
    # Polls get at most 40 % of those, so walks and own reads are never starved by a burst's
    # pollers; a walk learns the end of a thousand operations in one page anyway.
    Kind.POLL: Rate(100, 10),
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
    """Classic token bucket on an injected monotonic clock."""

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

    def take(self, now: float) -> float:
        """Take one token, going into debt if needed; returns how long the caller must wait."""
        self._refill(now)
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate.per_second

    def give_back(self) -> None:
        """A token taken by a caller who gave up before using it."""
        self.tokens = min(self.rate.burst, self.tokens + 1)


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
        now = self._clock()
        self._buckets = {k: TokenBucket(r, now) for k in Kind if (r := settings.rate(k)) is not None}
        self._paused_until: dict[Kind, float] = dict.fromkeys(Kind, 0.0)
        self._on_wait = on_wait
        self.in_flight = 0
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}
        self._turns: deque[str] = deque()  # namespaces with someone waiting, in round-robin order
        self._pump_handle: asyncio.TimerHandle | None = None

    # ---- reads, lists, polls: a token each -----------------------------------------------

    async def take(self, kind: Kind) -> None:
        """Wait for a token of ``kind``; list pages and operation polls are ARM reads too.

        The shared read token is taken only once the kind's own token is in hand: a thousand
        pollers queued on the poll budget must not pre-charge the read bucket, or a walk (one
        page that ends a thousand operations) would wait behind reads that have not happened
        yet. A waiter cancelled while it waits (its operation ended) gives its token back.
        """
        for step in (kind, Kind.READ) if kind in (Kind.LIST, Kind.POLL) else (kind,):
            now = self._clock()
            bucket = self._buckets.get(step)
            wait = max(self._paused_until[step] - now, bucket.take(now) if bucket else 0.0)
            if wait <= 0:
                continue
            try:
                await asyncio.sleep(wait)
            except asyncio.CancelledError:
                if bucket:
                    bucket.give_back()
                wait = self._clock() - now  # what was really waited
                raise
            finally:
                if self._on_wait:
                    self._on_wait(kind, wait)

    def throttled(self, kind: Kind, retry_after: float | None) -> None:
        """Azure said 429: nobody of this kind asks again before ``Retry-After`` has passed."""
        until = self._clock() + (retry_after if retry_after and retry_after > 0 else 1.0)
        self._paused_until[kind] = max(self._paused_until[kind], until)
        if kind is Kind.WRITE:
            self._schedule_pump(until - self._clock())

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
        """Grant waiting operations in namespace round-robin while the budget allows."""
        bucket = self._buckets.get(Kind.WRITE)
        while self._turns and self.in_flight < self.settings.max_in_flight:
            now = self._clock()
            wait = max(self._paused_until[Kind.WRITE] - now, bucket.wait_time(now) if bucket else 0.0)
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
            if bucket:
                bucket.take(now)
            self.in_flight += 1
            future.set_result(None)

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())
