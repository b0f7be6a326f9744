"""The scheduler: due order, bounded concurrency, one step per key at a time, timers, stop/resume.

Every test runs on a virtual clock (tests/virtual_time.py): the scheduler's timers fire at their
exact loop time, so the tests check when a step ran, not only that it did, and a window in which
nothing may happen (``await asyncio.sleep(60)``) is one every runnable task has run through —
those checks fail on a broken scheduler and never on a slow machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from controller.scheduler import Scheduler
from testbed import sandbox
from tests.virtual_time import virtual_time

QUIET = 60.0  # a "nothing happens" window: longer than any timer the test has set


class Run:
    """A scheduler running in the background, with a record of the steps it made."""

    def __init__(self, step: Callable[[str], Awaitable[float | None]], *, concurrency: int = 4) -> None:
        self.scheduler: Scheduler[str] = Scheduler(step, concurrency=concurrency)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Scheduler[str]:
        self.task = asyncio.create_task(self.scheduler.run(self.stop))
        return self.scheduler

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


async def until(predicate: Callable[[], bool]) -> None:
    await sandbox.until(predicate, 5.0, interval=0.001)


def now() -> float:
    return asyncio.get_running_loop().time()


@virtual_time
async def test_keys_are_stepped_in_due_order() -> None:
    stepped: list[tuple[str, float]] = []

    async def step(key: str) -> None:
        stepped.append((key, now()))

    run = Run(step, concurrency=1)
    start = now()
    run.scheduler.at("c", start + 0.03)
    run.scheduler.at("a", start + 0.01)
    run.scheduler.at("b", start + 0.02)
    async with run:
        await until(lambda: len(stepped) == 3)
    assert [key for key, _ in stepped] == ["a", "b", "c"]
    assert [when - start for _, when in stepped] == pytest.approx([0.01, 0.02, 0.03], abs=1e-9)  # each when due


@virtual_time
async def test_an_earlier_due_time_wins_and_wakes_a_sleeping_loop() -> None:
    stepped: list[float] = []
    done = asyncio.Event()

    async def step(key: str) -> None:
        stepped.append(now())
        done.set()

    run = Run(step)
    async with run as scheduler:
        scheduler.at("a", now() + 3600)
        scheduler.at("a", now() + 7200)  # later: ignored
        assert scheduler.due("a") == pytest.approx(now() + 3600, abs=1e-9)
        await asyncio.sleep(QUIET)  # the loop now sleeps until the hour is up
        assert stepped == []
        woken = now()
        scheduler.wake("a")
        await asyncio.wait_for(done.wait(), 5)
    assert stepped == [woken]  # at once, not when the hour is up


@virtual_time
async def test_never_two_steps_of_one_key_and_a_wake_during_a_step_steps_it_once_more() -> None:
    running: set[str] = set()
    overlaps: list[str] = []
    steps: list[str] = []
    release = asyncio.Event()

    async def step(key: str) -> None:
        if key in running:
            overlaps.append(key)
        running.add(key)
        steps.append(key)
        if len(steps) == 1:
            await release.wait()
        running.discard(key)

    run = Run(step, concurrency=8)
    async with run as scheduler:
        scheduler.wake("a")
        await until(lambda: steps == ["a"])
        for _ in range(10):
            scheduler.wake("a")  # while it runs: remembered once
        await asyncio.sleep(QUIET)
        assert steps == ["a"] and scheduler.busy == 1  # not a second step beside the running one
        release.set()
        await until(lambda: len(steps) == 2)
        await asyncio.sleep(QUIET)  # and no third
    assert steps == ["a", "a"] and overlaps == []


@virtual_time
async def test_concurrency_is_bounded() -> None:
    running = 0
    peak = 0
    done = 0

    async def step(key: str) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.005)
        running -= 1
        done += 1

    run = Run(step, concurrency=3)
    async with run as scheduler:
        start = now()
        for i in range(30):
            scheduler.wake(f"k{i}")
        await until(lambda: done == 30)
        took = now() - start
    assert peak == 3
    assert took == pytest.approx(10 * 0.005, abs=0.0011)  # ten rounds of three: every slot kept busy


@virtual_time
async def test_a_step_asks_for_its_next_turn() -> None:
    times: list[float] = []

    async def step(key: str) -> float | None:
        times.append(now())
        return 0.05 if len(times) < 3 else None

    run = Run(step)
    async with run as scheduler:
        scheduler.wake("a")
        await until(lambda: len(times) == 3)
        assert scheduler.due("a") is None  # None: only when woken
        await asyncio.sleep(QUIET)
    assert len(times) == 3
    assert [b - a for a, b in zip(times, times[1:])] == pytest.approx([0.05, 0.05], abs=1e-9)


@virtual_time
async def test_a_failing_step_is_retried_after_the_error_delay() -> None:
    calls: list[float] = []
    retried = asyncio.Event()

    async def step(key: str) -> None:
        calls.append(now())
        if len(calls) == 1:
            raise RuntimeError("a bug")
        retried.set()

    run = Run(step)
    assert run.scheduler.error_delay == 30.0  # the shipped delay, on the virtual clock
    async with run as scheduler:
        scheduler.wake("a")
        await asyncio.wait_for(retried.wait(), 2 * scheduler.error_delay)
        await asyncio.sleep(QUIET)
    assert len(calls) == 2 and calls[1] - calls[0] == pytest.approx(30.0, abs=1e-9)  # not sooner, not later


@virtual_time
async def test_forget_drops_a_queued_key() -> None:
    stepped: list[str] = []

    async def step(key: str) -> None:
        stepped.append(key)

    run = Run(step)
    run.scheduler.at("gone", now() + 0.01)
    run.scheduler.at("kept", now() + 0.02)
    run.scheduler.forget("gone")
    async with run:
        await until(lambda: stepped == ["kept"])
        await asyncio.sleep(QUIET)
    assert stepped == ["kept"] and len(run.scheduler) == 0


@virtual_time
async def test_exclusive_holds_the_key_against_the_loop() -> None:
    log: list[tuple[str, float]] = []

    async def step(key: str) -> None:
        log.append(("step", now()))

    run = Run(step)
    async with run as scheduler:
        async with scheduler.exclusive("a"):
            scheduler.wake("a")
            await asyncio.sleep(QUIET)
            assert log == [], "the loop stepped a key while it was held"
            log.append(("held", now()))
        await until(lambda: len(log) == 2)
    (held, released), (stepped, at) = log
    assert (held, stepped) == ("held", "step")
    assert at == released  # the wake-up waited for the holder, and no longer


@virtual_time
async def test_stopped_keeps_wakeups_for_the_next_run() -> None:
    stepped: list[str] = []

    async def step(key: str) -> None:
        stepped.append(key)

    run = Run(step)
    async with run:
        pass
    run.scheduler.wake("later")  # while stopped (a paused replica)
    assert stepped == [] and run.scheduler.due("later") is not None
    again = Run(step)
    again.scheduler = run.scheduler
    async with again:
        await until(lambda: stepped == ["later"])
