"""The subscription's request budget: buckets, fair turns, the in-flight cap, 429 pauses.

The gate's lanes are driven by a fake clock handed to the gate, tokens granted one at a time; the
pacer's timers (Retry-After pauses, write tokens) run on a virtual-time loop
(tests/virtual_time.py), where a pause of 0.05 s is checked to end at 0.05 s exactly, and a window
in which nothing may be granted is one every runnable task has run through, on any machine.
"""

from __future__ import annotations

import asyncio

import pytest

from controller.pacing import (
    AZURE_BUDGET,
    Gate,
    Kind,
    Lane,
    PacingSettings,
    Rate,
    SubscriptionPacer,
    TokenBucket,
    current_reading,
    reading,
)
from tests.virtual_time import virtual_time

QUIET = 60.0  # a window in which nothing may happen: longer than any timer of the test


def now() -> float:
    return asyncio.get_running_loop().time()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_burst_then_rate_and_never_debt() -> None:
    bucket = TokenBucket(Rate(burst=3, per_second=2), now=0.0)
    for _ in range(3):
        assert bucket.wait_time(0.0) == 0.0
        bucket.take(0.0)
    assert bucket.wait_time(0.0) == pytest.approx(0.5)  # empty: the next token comes with the refill
    assert bucket.wait_time(0.5) == 0.0
    bucket.give_back()
    bucket.give_back()
    assert bucket.wait_time(10.0) == 0.0 and bucket.tokens == pytest.approx(3.0)  # refill is capped at the burst


def test_azure_budget_share() -> None:
    settings = PacingSettings(share=0.5)
    assert settings.rate(Kind.WRITE) == Rate(100, 5)
    assert settings.rate(Kind.READ) == Rate(125, 12.5)
    assert PacingSettings(share=0).rate(Kind.WRITE) is None
    assert PacingSettings(rates=((Kind.WRITE, Rate(1, 1)),)).rate(Kind.WRITE) == Rate(1, 1)
    assert AZURE_BUDGET[Kind.POLL].per_second < AZURE_BUDGET[Kind.READ].per_second  # polls leave reads room


class Drained:
    """A gate with an empty bucket of 1 token/s on a fake clock; ``grant`` hands out one token."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.gate = Gate(Rate(burst=1, per_second=1), self.clock)
        self.gate.bucket.take(self.clock.now)  # type: ignore[union-attr]
        self.order: list[str] = []

    async def wait(self, lane: Lane, tag: str) -> None:
        await self.gate.acquire(lane)
        self.order.append(tag)

    async def grant(self, times: int = 1) -> None:
        for _ in range(times):
            self.clock.now += 1.0
            self.gate._pump()
            for _ in range(3):
                await asyncio.sleep(0)  # let the granted waiter record itself


async def test_lanes_share_tokens_6_3_1_while_all_wait() -> None:
    d = Drained()
    tasks = [asyncio.create_task(d.wait(lane, lane.name[0])) for lane in Lane for _ in range(30)]
    await asyncio.sleep(0)
    assert d.gate.waiting == 90
    await d.grant(20)
    counts = {tag: d.order.count(tag) for tag in "CRB"}
    assert counts == {"C": 12, "R": 6, "B": 2}  # 60 % / 30 % / 10 %: nobody starves
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_no_debt_a_completion_read_overtakes_a_thousand_queued_gets() -> None:
    d = Drained()
    gets = [asyncio.create_task(d.wait(Lane.REACTION, "get")) for _ in range(1000)]
    await asyncio.sleep(0)
    await d.grant(5)
    poll = asyncio.create_task(d.wait(Lane.COMPLETION, "poll"))
    await asyncio.sleep(0)
    await d.grant(1)
    assert d.order[-1] == "poll"  # the next token, not the 1,001st
    assert poll.done()
    for task in gets:
        task.cancel()
    await asyncio.gather(*gets, return_exceptions=True)


async def test_an_idle_lane_banks_no_credit() -> None:
    d = Drained()
    background = [asyncio.create_task(d.wait(Lane.BACKGROUND, "B")) for _ in range(100)]
    await asyncio.sleep(0)
    await d.grant(50)  # background alone gets every token
    assert d.order == ["B"] * 50
    completion = [asyncio.create_task(d.wait(Lane.COMPLETION, "C")) for _ in range(200)]
    await asyncio.sleep(0)
    d.order.clear()
    await d.grant(70)
    # 6:1 from the moment both wait (±1 for where the rounds start), not 50 grants of catching up.
    assert 59 <= d.order.count("C") <= 61 and "B" in d.order[:8]
    for task in background + completion:
        task.cancel()
    await asyncio.gather(*background, *completion, return_exceptions=True)


async def test_a_cancelled_waiter_costs_nothing_and_a_late_cancel_gives_the_token_back() -> None:
    d = Drained()
    first = asyncio.create_task(d.wait(Lane.REACTION, "first"))
    second = asyncio.create_task(d.wait(Lane.REACTION, "second"))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await d.grant(1)
    assert d.order == ["second"]  # the cancelled waiter took no token
    third = asyncio.create_task(d.gate.acquire(Lane.REACTION))
    await asyncio.sleep(0)
    d.clock.now += 1.0
    d.gate._pump()  # granted …
    third.cancel()  # … but cancelled before it ran
    await asyncio.gather(third, return_exceptions=True)
    assert d.gate.bucket.tokens == pytest.approx(1.0)  # type: ignore[union-attr]


async def test_reads_wait_for_tokens_and_lists_spend_reads_too() -> None:
    clock = Clock()
    rates = ((Kind.READ, Rate(2, 0.001)), (Kind.LIST, Rate(1, 0.001)))
    pacer = SubscriptionPacer(PacingSettings(share=0, rates=rates), clock=clock)
    await pacer.take(Kind.LIST)  # one list token and one read token
    await pacer.take(Kind.READ)  # the second read token
    task = asyncio.create_task(pacer.take(Kind.READ))
    await asyncio.sleep(0)
    assert not task.done() and pacer.waiting(Kind.READ) == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_hundred_operations_started_together_are_polled_together_as_shipped() -> None:
    """100 flips at once: their first status polls all go out at once (the poll burst is ARM's
    read bucket, as Compute's operation-status limit is far above it); with a burst of 80 the
    last 20 would wait 2.5 s and every later round of polls longer (issue 15)."""
    clock = Clock()
    pacer = SubscriptionPacer(PacingSettings(), clock=clock)
    polls = [asyncio.create_task(pacer.take(Kind.POLL)) for _ in range(100)]
    await asyncio.sleep(0)
    assert all(t.done() for t in polls) and pacer.waiting(Kind.POLL) == 0
    assert AZURE_BUDGET[Kind.POLL].burst <= AZURE_BUDGET[Kind.READ].burst  # never more than ARM's read bucket
    assert pacer.waiting(Kind.READ) == 0
    await pacer.take(Kind.READ)  # and a read still finds a token beside them


async def test_lanes_come_from_the_reading_context() -> None:
    assert current_reading(Kind.POLL) == (Lane.COMPLETION, "poll")
    assert current_reading(Kind.READ) == (Lane.REACTION, "read")
    with reading(Lane.BACKGROUND, "walk"):
        assert current_reading(Kind.LIST) == (Lane.BACKGROUND, "walk")
        inner = await asyncio.create_task(asyncio.sleep(0, current_reading(Kind.READ)))  # tasks inherit it
        assert inner == (Lane.BACKGROUND, "walk")
    assert current_reading(Kind.LIST) == (Lane.REACTION, "list")


@virtual_time
async def test_throttling_pauses_the_kind_for_retry_after() -> None:
    pacer = SubscriptionPacer(PacingSettings(share=0))  # its clock: the loop's (virtual) time
    start = now()
    pacer.throttled(Kind.READ, 0.05)
    await asyncio.wait_for(pacer.take(Kind.WRITE), 1)
    assert now() == start  # another kind is not paused
    await asyncio.wait_for(pacer.take(Kind.READ), 5)
    assert now() - start == pytest.approx(0.05, abs=1e-9)  # not before Retry-After has passed, nor later
    start = now()
    pacer.throttled(Kind.LIST, None)  # no Retry-After: one second
    await asyncio.wait_for(pacer.take(Kind.LIST), 5)
    assert now() - start == pytest.approx(1.0, abs=1e-9)


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
    assert pacer.in_flight == 0 and pacer.operations_waiting == 0


@virtual_time
async def test_in_flight_cap_holds_the_rest() -> None:
    pacer = SubscriptionPacer(PacingSettings(share=0, max_in_flight=2))
    granted: list[int] = []

    async def operate(i: int) -> None:
        await pacer.acquire_operation("ns")
        granted.append(i)

    tasks = [asyncio.create_task(operate(i)) for i in range(5)]
    await asyncio.sleep(QUIET)
    assert granted == [0, 1] and pacer.in_flight == 2 and pacer.operations_waiting == 3
    pacer.release()
    await asyncio.sleep(QUIET)
    assert granted == [0, 1, 2] and pacer.in_flight == 2  # one released, one more granted, no more
    pacer.release()
    pacer.release()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert granted == [0, 1, 2, 3, 4]


@virtual_time
async def test_write_tokens_pace_operations() -> None:
    """A burst of two, then one per 1/50 s: each operation is granted when its token is there,
    never before (the pacer's pump runs meanwhile), and at most the pump's 1 ms step later."""
    pacer = SubscriptionPacer(PacingSettings(rates=((Kind.WRITE, Rate(burst=2, per_second=50)),)))
    start = now()
    granted: list[float] = []

    async def operate() -> None:
        await pacer.acquire_operation("ns")
        granted.append(now() - start)
        pacer.release()

    await asyncio.wait_for(asyncio.gather(*(operate() for _ in range(4))), 5)
    tokens = [0.0, 0.0, 0.02, 0.04]
    assert all(t - 1e-9 <= g for g, t in zip(granted, tokens)), granted  # none without a token
    assert granted == pytest.approx(tokens, abs=0.0011), granted


@virtual_time
async def test_a_throttled_write_pauses_queued_operations() -> None:
    pacer = SubscriptionPacer(PacingSettings(share=0, max_in_flight=10))
    start = now()
    pacer.throttled(Kind.WRITE, 0.1)
    await asyncio.wait_for(pacer.acquire_operation("ns"), 5)
    assert 0.1 - 1e-9 <= now() - start <= 0.1011  # Retry-After, and at most the pump's 1 ms step more


@virtual_time
async def test_a_cancelled_waiter_gives_its_turn_away() -> None:
    pacer = SubscriptionPacer(PacingSettings(share=0, max_in_flight=1))
    await pacer.acquire_operation("ns")
    waiter = asyncio.create_task(pacer.acquire_operation("ns"))
    other = asyncio.create_task(pacer.acquire_operation("other"))
    await asyncio.sleep(QUIET)
    assert not waiter.done() and not other.done() and pacer.operations_waiting == 2  # the cap holds
    waiter.cancel()
    pacer.release()
    await asyncio.wait_for(other, 5)
    assert pacer.in_flight == 1


async def test_a_queued_poll_charges_the_read_budget_only_when_it_goes() -> None:
    """Pollers waiting for poll tokens must not take the read tokens a walk's page needs."""
    clock = Clock()
    rates = ((Kind.READ, Rate(3, 0.001)), (Kind.POLL, Rate(1, 0.001)), (Kind.LIST, Rate(5, 0.001)))
    pacer = SubscriptionPacer(PacingSettings(share=0, rates=rates), clock=clock)
    await pacer.take(Kind.POLL)  # the poll token and one read token
    waiting = [asyncio.create_task(pacer.take(Kind.POLL)) for _ in range(5)]
    await asyncio.sleep(0)
    assert not any(t.done() for t in waiting) and pacer.waiting(Kind.POLL) == 5
    assert pacer._gates[Kind.READ].bucket.tokens == pytest.approx(2)  # type: ignore[union-attr]
    await asyncio.wait_for(pacer.take(Kind.LIST), 1)  # the walk's page goes at once
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
