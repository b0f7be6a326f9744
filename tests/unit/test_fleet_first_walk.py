"""A subscription's first walk waits until kopf has announced its GpuVms (fleet.ANNOUNCED_*)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from controller import fleet as fleet_module
from controller.fleet import Fleet, FleetSettings
from controller.gpuvm import VmRef

SUB = "00000000-0000-0000-0000-0000000000aa"


def ref(i: int) -> VmRef:
    return VmRef(subscription_id=SUB, resource_group="rg", name=f"vm-{i}")


class Pages:
    """Azure's list pages for the fleet: it records when each walk began and which VMs were wanted then."""

    def __init__(self, wanted: set[str]) -> None:
        self.wanted = wanted
        self.walks: list[tuple[float, int]] = []

    async def list_observations(self, subscription: str, group: str | None) -> Any:
        self.walks.append((asyncio.get_running_loop().time(), len(self.wanted)))
        return
        yield  # an async generator with no VMs on its pages

    async def list_tags_page(self, subscription: str, group: str | None, continuation: str | None) -> Any:
        return {}, None


def fleet_over(wanted: set[str], pages: Pages) -> Fleet:
    refs = {ref(i).key: ref(i) for i in range(100)}
    return Fleet(pages, FleetSettings(resync=3600), clock=lambda: dt.datetime.now(dt.timezone.utc),  # type: ignore[arg-type]
                 on_change=lambda key: None, wanted=lambda sub: set(wanted), lookup=refs.get)


async def announce(wanted: set[str], count: int, every: float) -> float:
    for i in range(count):
        wanted.add(ref(i).key)
        await asyncio.sleep(every)
    return asyncio.get_running_loop().time()


async def test_the_first_walk_starts_once_announcements_went_quiet() -> None:
    wanted: set[str] = {ref(0).key}
    pages = Pages(wanted)
    fleet = fleet_over(wanted, pages)
    try:
        fleet.ensure_walker(SUB)
        last = await announce(wanted, 20, 0.05)  # kopf hands GpuVms over one by one for 1 s
        while not pages.walks:
            await asyncio.sleep(0.05)
        began, seen = pages.walks[0]
        assert seen == 20  # one walk tells every announced GpuVm, not only the first
        assert began >= last
    finally:
        await fleet.close()


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
        while not pages.walks:
            await asyncio.sleep(0.05)
        began, seen = pages.walks[0]
        assert began - started < 1.0 + 0.2 + 1.0  # ANNOUNCED_WAIT, one quiet period, slack for a busy machine
        assert seen < 100  # it did not wait for the end
    finally:
        announcing.cancel()
        await fleet.close()
