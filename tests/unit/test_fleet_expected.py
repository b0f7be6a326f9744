"""The first walk waits for every GpuVm the API server holds (fleet.EXPECTED_*).

On a real API server kopf hands the first list to the engine at the pace of its bounded workers
(--event-workers), with pauses longer than ANNOUNCED_QUIET on a busy machine; a walk started in
such a pause tells only the GpuVms announced so far, and each one after it cost another round of
the list budget (issue 23: five walks instead of one for 10,000 GpuVms).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from controller import fleet as fleet_module
from controller.fleet import Fleet, FleetSettings
from controller.gpuvm import VmRef

SUB = "00000000-0000-0000-0000-0000000000bb"
TOTAL = 30
PAUSE = 0.05  # between two announcements: five quiet periods of the old rule


def ref(i: int) -> VmRef:
    return VmRef(subscription_id=SUB, resource_group="rg", name=f"vm-{i}")


class World:
    """A fleet over announced VMs; its Azure records what each walk was asked about."""

    def __init__(self, expected: Any) -> None:
        self.wanted: set[str] = {ref(0).key}
        self.walked = asyncio.Event()
        self.walk_saw: list[int] = []
        refs = {ref(i).key: ref(i) for i in range(TOTAL)}
        self.fleet = Fleet(self, FleetSettings(resync=3600), clock=lambda: dt.datetime.now(dt.timezone.utc),  # type: ignore[arg-type]
                           on_change=lambda key: None, wanted=lambda sub: set(self.wanted), lookup=refs.get)
        self.fleet.expected = expected
        self.fleet.announced = lambda: len(self.wanted)

    async def list_observations(self, subscription: str, group: str | None) -> Any:
        self.walk_saw.append(len(self.wanted))
        self.walked.set()
        return
        yield  # an async generator with no VMs on its pages

    async def list_tags_page(self, subscription: str, group: str | None, continuation: str | None) -> Any:
        return {}, None

    async def announce(self, upto: int) -> None:
        """kopf's workers hand over GpuVms one by one, pausing longer than ANNOUNCED_QUIET."""
        for i in range(len(self.wanted), upto):
            await asyncio.sleep(PAUSE)
            assert not self.walked.is_set(), f"the first walk began with {self.walk_saw[0]} of {TOTAL} GpuVms announced"
            self.wanted.add(ref(i).key)


@pytest.fixture(autouse=True)
def short_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet_module, "ANNOUNCED_QUIET", 0.01)


async def _count(n: int) -> int:
    return n


async def test_the_first_walk_waits_until_every_gpuvm_was_announced() -> None:
    world = World(lambda: _count(TOTAL))
    try:
        world.fleet.ensure_walker(SUB)
        await world.announce(TOTAL)
        await asyncio.wait_for(world.walked.wait(), 30)
        assert world.walk_saw[0] == TOTAL  # (this Azure answers no pages: the fleet walks again, as it should)
    finally:
        await world.fleet.close()


async def test_a_gpuvm_deleted_before_it_was_announced_delays_the_walk_only_expected_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fleet_module, "EXPECTED_QUIET", 0.3)
    world = World(lambda: _count(TOTAL + 1))  # one more than will ever be announced
    loop = asyncio.get_running_loop()
    try:
        world.fleet.ensure_walker(SUB)
        await world.announce(TOTAL)
        last = loop.time()
        await asyncio.wait_for(world.walked.wait(), 30)
        assert loop.time() - last >= 0.3
        assert world.walk_saw[0] == TOTAL  # (this Azure answers no pages: the fleet walks again, as it should)
    finally:
        await world.fleet.close()


async def test_without_a_count_the_walk_starts_after_a_quiet_period_as_before() -> None:
    async def refused() -> int | None:
        raise RuntimeError("403 list gpuvms")

    world = World(refused)
    try:
        world.fleet.ensure_walker(SUB)
        with pytest.raises(AssertionError, match="the first walk began with 1 of"):
            await world.announce(TOTAL)
    finally:
        await world.fleet.close()


async def test_a_subscription_first_named_after_the_start_up_does_not_wait_for_the_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The count is the start-up's list: once it was waited for, a later first walk (a GpuVm
    naming a new subscription an hour later, with GpuVms deleted meanwhile) starts as before."""
    monkeypatch.setattr(fleet_module, "EXPECTED_QUIET", 60.0)
    world = World(lambda: _count(TOTAL))
    try:
        world.fleet.ensure_walker(SUB)
        await world.announce(TOTAL)
        await asyncio.wait_for(world.walked.wait(), 30)
        later = "00000000-0000-0000-0000-0000000000cc"
        world.fleet._wanted = lambda sub: {"x"} if sub == later else set(world.wanted)  # type: ignore[method-assign]
        world.wanted.clear()  # GpuVms deleted: announced (0) stays below the count (TOTAL)
        world.walked.clear()
        world.fleet.ensure_walker(later)
        await asyncio.wait_for(world.walked.wait(), 5)  # not after EXPECTED_QUIET (60 s)
    finally:
        await world.fleet.close()
