"""The virtual clock the timer tests run on (tests/virtual_time.py): if it fired timers early, late
or never, those tests would prove nothing, so it is held to a real clock's behaviour here."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.virtual_time import START, virtual_time


@virtual_time
async def test_timers_fire_at_their_time_in_order_without_wall_time() -> None:
    loop = asyncio.get_running_loop()
    wall = time.monotonic()
    fired: list[tuple[str, float]] = []
    assert loop.time() == START
    loop.call_later(3600, lambda: fired.append(("hour", loop.time())))
    loop.call_later(0.001, lambda: fired.append(("ms", loop.time())))
    cancelled = loop.call_later(1.0, lambda: fired.append(("cancelled", loop.time())))
    loop.call_later(0, lambda: fired.append(("now", loop.time())))
    cancelled.cancel()
    await asyncio.sleep(7200)
    assert [name for name, _ in fired] == ["now", "ms", "hour"]
    for (_, at), due in zip(fired, [START, START + 0.001, START + 3600]):
        assert due <= at == pytest.approx(due, abs=1e-9)  # never before its time, and not later
    assert loop.time() == pytest.approx(START + 7200, abs=1e-9)
    assert time.monotonic() - wall < 5  # two virtual hours, no real ones


@virtual_time
async def test_ready_work_runs_before_the_clock_moves() -> None:
    loop = asyncio.get_running_loop()
    seen: list[float] = []

    async def chain(n: int) -> None:
        for _ in range(n):
            seen.append(loop.time())
            await asyncio.sleep(0)

    task = asyncio.create_task(chain(100))
    await asyncio.sleep(1)
    assert task.done() and seen == [START] * 100  # all of it before the 1 s timer


@virtual_time
async def test_a_callback_from_a_thread_wakes_it() -> None:
    assert await asyncio.to_thread(lambda: 42) == 42
