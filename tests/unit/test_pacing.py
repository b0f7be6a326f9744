"""The subscription's request budget: buckets, fair turns, the in-flight cap, 429 pauses."""

from __future__ import annotations

import asyncio

import pytest

from controller.pacing import AZURE_BUDGET, Kind, PacingSettings, Rate, SubscriptionPacer, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_burst_then_rate() -> None:
    bucket = TokenBucket(Rate(burst=3, per_second=2), now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)  # in debt: wait for the refill
    assert bucket.wait_time(0.0) == pytest.approx(1.0)
    assert bucket.wait_time(1.0) == pytest.approx(0.0)
    assert bucket.take(10.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # refill is capped at the burst


def test_azure_budget_share() -> None:
    settings = PacingSettings(share=0.5)
    assert settings.rate(Kind.WRITE) == Rate(100, 5)
    assert settings.rate(Kind.READ) == Rate(125, 12.5)
    assert PacingSettings(share=0).rate(Kind.WRITE) is None
    assert PacingSettings(rates=((Kind.WRITE, Rate(1, 1)),)).rate(Kind.WRITE) == Rate(1, 1)
    assert AZURE_BUDGET[Kind.POLL].per_second < AZURE_BUDGET[Kind.READ].per_second  # polls leave reads room


async def test_reads_wait_for_tokens_and_lists_spend_reads_too() -> None:
    clock = Clock()
    waits: list[tuple[Kind, float]] = []
    rates = ((Kind.READ, Rate(2, 1000)), (Kind.LIST, Rate(1, 1000)))
    pacer = SubscriptionPacer(PacingSettings(share=0, rates=rates), clock=clock, on_wait=lambda k, w: waits.append((k, w)))
    await pacer.take(Kind.LIST)  # one list token and one read token
    await pacer.take(Kind.READ)  # the second read token
    assert waits == []
    await pacer.take(Kind.READ)  # in debt by one: 1 ms at 1000/s
    assert waits == [(Kind.READ, pytest.approx(0.001))]


async def test_throttling_pauses_the_kind_for_retry_after() -> None:
    clock = Clock()
    waits: list[tuple[Kind, float]] = []
    pacer = SubscriptionPacer(PacingSettings(share=0), clock=clock, on_wait=lambda k, w: waits.append((k, w)))
    pacer.throttled(Kind.READ, 0.05)
    await pacer.take(Kind.WRITE)  # another kind is not paused
    assert waits == []
    await pacer.take(Kind.READ)
    assert waits == [(Kind.READ, pytest.approx(0.05))]
    pacer.throttled(Kind.LIST, None)  # no Retry-After: one second
    assert pacer._paused_until[Kind.LIST] == pytest.approx(clock.now + 1.0)


async def test_operations_take_turns_by_namespace() -> None:
    pacer = SubscriptionPacer(PacingSettings(share=0, max_in_flight=1))
    order: list[str] = []

    async def operate(namespace: str, tag: str) -> None:
        await pacer.acquire_operation(namespace)
        order.append(tag)
        await asyncio.sleep(0)
        pacer.release()

    tasks = [asyncio.create_task(operate(ns, tag)) for ns, tag in
             [("busy", "b1"), ("busy", "b2"), ("busy", "b3"), ("busy", "b4"), ("quiet", "q1"), ("other", "o1")]]
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    # b1 goes at once; then turns alternate, so one namespace's burst cannot starve the others.
    assert order == ["b1", "b2", "q1", "o1", "b3", "b4"]
    assert pacer.in_flight == 0 and pacer.waiting == 0


async def test_in_flight_cap_holds_the_rest() -> None:
    pacer = SubscriptionPacer(PacingSettings(share=0, max_in_flight=2))
    granted: list[int] = []

    async def operate(i: int) -> None:
        await pacer.acquire_operation("ns")
        granted.append(i)

    tasks = [asyncio.create_task(operate(i)) for i in range(5)]
    await asyncio.sleep(0.01)
    assert granted == [0, 1] and pacer.in_flight == 2 and pacer.waiting == 3
    pacer.release()
    await asyncio.sleep(0.01)
    assert granted == [0, 1, 2] and pacer.in_flight == 2
    pacer.release()
    pacer.release()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert granted == [0, 1, 2, 3, 4]


async def _until(condition, timeout: float = 30.0) -> None:
    """Let the loop run until ``condition()`` holds (a deadline, not a fixed sleep)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_write_tokens_pace_operations() -> None:
    # The pacer's clock is ours: under load a wall-clock bound on "at once" would not hold.
    clock = Clock()
    pacer = SubscriptionPacer(PacingSettings(rates=((Kind.WRITE, Rate(burst=2, per_second=50)),)), clock=clock)
    granted: list[int] = []

    async def operate(i: int) -> None:
        await pacer.acquire_operation("ns")
        granted.append(i)
        pacer.release()

    tasks = [asyncio.create_task(operate(i)) for i in range(4)]
    await _until(lambda: len(granted) == 2)  # the burst, with no time passing
    await asyncio.sleep(0.05)  # the pacer's pump runs meanwhile: it must not grant without tokens
    assert granted == [0, 1] and pacer.waiting == 2
    clock.now += 0.021  # then one per 1/50 s (a hair more: float sums)
    await _until(lambda: len(granted) == 3)
    assert pacer.waiting == 1
    clock.now += 0.021
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert granted == [0, 1, 2, 3]


async def test_a_throttled_write_pauses_queued_operations() -> None:
    pacer = SubscriptionPacer(PacingSettings(share=0, max_in_flight=10))
    loop = asyncio.get_running_loop()
    pacer.throttled(Kind.WRITE, 0.1)
    start = loop.time()
    await asyncio.wait_for(pacer.acquire_operation("ns"), 5)
    assert loop.time() - start >= 0.09


async def test_a_cancelled_waiter_gives_its_turn_away() -> None:
    pacer = SubscriptionPacer(PacingSettings(share=0, max_in_flight=1))
    await pacer.acquire_operation("ns")
    waiter = asyncio.create_task(pacer.acquire_operation("ns"))
    other = asyncio.create_task(pacer.acquire_operation("other"))
    await asyncio.sleep(0.01)
    waiter.cancel()
    pacer.release()
    await asyncio.wait_for(other, 5)
    assert pacer.in_flight == 1


async def test_a_queued_poll_charges_the_read_budget_only_when_it_goes() -> None:
    """Pollers waiting for poll tokens must not push a walk's page behind reads not yet made."""
    clock = Clock()
    rates = ((Kind.READ, Rate(3, 1000)), (Kind.POLL, Rate(1, 20)), (Kind.LIST, Rate(5, 1000)))
    pacer = SubscriptionPacer(PacingSettings(share=0, rates=rates), clock=clock)
    await pacer.take(Kind.POLL)  # the poll token and one read token
    waiting = [asyncio.create_task(pacer.take(Kind.POLL)) for _ in range(5)]
    await asyncio.sleep(0)  # all five now sleep on the poll bucket, 50-250 ms
    assert not any(t.done() for t in waiting)
    assert pacer._buckets[Kind.READ].tokens == pytest.approx(2)  # not charged by the waiting polls
    waits: list[tuple[Kind, float]] = []
    pacer._on_wait = lambda k, w: waits.append((k, w))
    await pacer.take(Kind.LIST)  # the walk's page goes at once
    assert waits == []
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_a_waiter_cancelled_in_the_bucket_gives_its_token_back() -> None:
    clock = Clock()
    waits: list[tuple[Kind, float]] = []
    pacer = SubscriptionPacer(PacingSettings(share=0, rates=((Kind.READ, Rate(1, 0.01)),)), clock=clock,
                              on_wait=lambda k, w: waits.append((k, w)))
    await pacer.take(Kind.READ)
    task = asyncio.create_task(pacer.take(Kind.READ))  # would wait 100 s for its token
    await asyncio.sleep(0)
    assert pacer._buckets[Kind.READ].tokens == pytest.approx(-1)
    clock.now += 2.5
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    bucket = pacer._buckets[Kind.READ]
    bucket._refill(clock.now)
    assert bucket.tokens == pytest.approx(0.025)  # the debt is gone: only the refill since
    assert waits == [(Kind.READ, pytest.approx(2.5))]  # the time really waited, not the 100 s planned
