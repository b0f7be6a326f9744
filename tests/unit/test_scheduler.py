"""The scheduler: due order, bounded concurrency, one step per key at a time, timers, stop/resume."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from controller.scheduler import Scheduler
from testbed import sandbox


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


async def test_keys_are_stepped_in_due_order() -> None:
    order: list[str] = []

    async def step(key: str) -> None:
        order.append(key)

    run = Run(step, concurrency=1)
    loop = asyncio.get_running_loop()
    now = loop.time()
    run.scheduler.at("c", now + 0.03)
    run.scheduler.at("a", now + 0.01)
    run.scheduler.at("b", now + 0.02)
    async with run:
        await until(lambda: len(order) == 3)
    assert order == ["a", "b", "c"]


async def test_an_earlier_due_time_wins_and_wakes_a_sleeping_loop() -> None:
    stepped = asyncio.Event()

    async def step(key: str) -> None:
        stepped.set()

    run = Run(step)
    loop = asyncio.get_running_loop()
    async with run as scheduler:
        scheduler.at("a", loop.time() + 3600)
        scheduler.at("a", loop.time() + 7200)  # later: ignored
        assert scheduler.due("a") == pytest.approx(loop.time() + 3600, abs=1)
        await asyncio.sleep(0)  # the loop now sleeps until the hour is up
        scheduler.wake("a")
        await asyncio.wait_for(stepped.wait(), 5)


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
        assert scheduler.busy == 1
        release.set()
        await until(lambda: len(steps) == 2)
        await asyncio.sleep(0.02)
    assert steps == ["a", "a"] and overlaps == []


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
        for i in range(30):
            scheduler.wake(f"k{i}")
        await until(lambda: done == 30)
    assert peak == 3


async def test_a_step_asks_for_its_next_turn() -> None:
    times: list[float] = []
    loop = asyncio.get_running_loop()

    async def step(key: str) -> float | None:
        times.append(loop.time())
        return 0.05 if len(times) < 3 else None

    run = Run(step)
    async with run as scheduler:
        scheduler.wake("a")
        await until(lambda: len(times) == 3)
        assert scheduler.due("a") is None  # None: only when woken
    assert times[1] - times[0] >= 0.045 and times[2] - times[1] >= 0.045


async def test_a_failing_step_is_retried_after_the_error_delay() -> None:
    calls = 0

    async def step(key: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")

    run = Run(step)
    run.scheduler.error_delay = 0.01
    async with run as scheduler:
        scheduler.wake("a")
        await until(lambda: calls == 2)


async def test_forget_drops_a_queued_key() -> None:
    stepped: list[str] = []

    async def step(key: str) -> None:
        stepped.append(key)

    run = Run(step)
    loop = asyncio.get_running_loop()
    run.scheduler.at("gone", loop.time() + 0.01)
    run.scheduler.at("kept", loop.time() + 0.02)
    run.scheduler.forget("gone")
    async with run:
        await until(lambda: stepped == ["kept"])
        await asyncio.sleep(0.02)
    assert stepped == ["kept"] and len(run.scheduler) == 0


async def test_exclusive_holds_the_key_against_the_loop() -> None:
    log: list[str] = []

    async def step(key: str) -> None:
        log.append("step")

    run = Run(step)
    async with run as scheduler:
        async with scheduler.exclusive("a"):
            scheduler.wake("a")
            await asyncio.sleep(0.02)
            log.append("held")
        await until(lambda: log == ["held", "step"])  # the wake-up waited for the holder


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
