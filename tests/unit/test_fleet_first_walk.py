"""A subscription's first walk waits until kopf has announced its GpuVms (fleet.ANNOUNCED_*).

On a virtual clock (tests/virtual_time.py): the waits are checked to the exact loop time, with a
deadline, and take no wall time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from controller import fleet as fleet_module
from controller.fleet import Fleet, FleetSettings
from controller.gpuvm import VmRef
from tests.virtual_time import virtual_time

SUB = "00000000-0000-0000-0000-0000000000aa"


def ref(i: int) -> VmRef:
    return VmRef(subscription_id=SUB, resource_group="rg", name=f"vm-{i}")


class Pages:
    """Azure's list pages for the fleet: it records when each walk began and which VMs were wanted then."""

    def __init__(self, wanted: set[str]) -> None:
        self.wanted = wanted
        self.walks: list[tuple[float, int]] = []
        self.walked = asyncio.Event()

    async def list_observations(self, subscription: str, group: str | None) -> Any:
        self.walks.append((asyncio.get_running_loop().time(), len(self.wanted)))
        self.walked.set()
        return
        yield  # an async generator with no VMs on its pages

    async def list_tags_page(self, subscription: str, group: str | None, continuation: str | None) -> Any:
        return {}, None

    async def first_walk(self, deadline: float) -> tuple[float, int]:
        """When the first walk began and how many GpuVms were announced then; fails after
        ``deadline`` seconds (of the virtual clock) without one."""
        try:
            await asyncio.wait_for(self.walked.wait(), deadline)
        except TimeoutError:
            raise AssertionError(f"no walk began within {deadline} s") from None
        return self.walks[0]


def fleet_over(wanted: set[str], pages: Pages) -> Fleet:
    refs = {ref(i).key: ref(i) for i in range(100)}
    return Fleet(pages, FleetSettings(resync=3600), clock=lambda: dt.datetime.now(dt.timezone.utc),  # type: ignore[arg-type]
                 on_change=lambda key: None, wanted=lambda sub: set(wanted), lookup=refs.get)


async def announce(wanted: set[str], count: int, every: float) -> list[float]:
    """kopf handing GpuVms over one by one: the loop times they were announced at."""
    loop = asyncio.get_running_loop()
    times = []
    for i in range(count):
        wanted.add(ref(i).key)
        times.append(loop.time())
        await asyncio.sleep(every)
    return times


@virtual_time
async def test_the_first_walk_starts_once_announcements_went_quiet() -> None:
    wanted: set[str] = {ref(0).key}
    pages = Pages(wanted)
    fleet = fleet_over(wanted, pages)
    quiet = fleet_module.ANNOUNCED_QUIET
    try:
        fleet.ensure_walker(SUB)
        announced = await announce(wanted, 20, 0.05)  # for 1 s
        began, seen = await pages.first_walk(fleet_module.ANNOUNCED_WAIT)
        assert seen == 20  # one walk tells every announced GpuVm, not only the first
        # Quiet for a whole ANNOUNCED_QUIET before it (the check looks once per ANNOUNCED_QUIET,
        # so it notices within two).
        assert announced[-1] + quiet - 1e-9 <= began <= announced[-1] + 2 * quiet + 1e-9  # (1e-9: float sums)
    finally:
        await fleet.close()


@virtual_time
async def test_announcements_that_never_stop_delay_the_first_walk_at_most_announced_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fleet_module, "ANNOUNCED_QUIET", 0.2)
    monkeypatch.setattr(fleet_module, "ANNOUNCED_WAIT", 1.0)
    wanted: set[str] = {ref(0).key}
    pages = Pages(wanted)
    fleet = fleet_over(wanted, pages)
    started = asyncio.get_running_loop().time()
    announcing = asyncio.create_task(announce(wanted, 100, 0.05))  # 5 s of announcements
    try:
        fleet.ensure_walker(SUB)
        bound = 1.0 + 0.2  # ANNOUNCED_WAIT, and the quiet period under way when it is up
        began, seen = await pages.first_walk(bound + 0.5)
        assert 1.0 - 1e-9 <= began - started <= bound + 1e-9  # it waited as long as it may, and no longer
        assert seen < 100  # it did not wait for the end
    finally:
        announcing.cancel()
        await fleet.close()
