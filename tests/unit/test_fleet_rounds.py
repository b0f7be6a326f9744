"""Rounds: when many VMs need a look at once, one walk and one tag cycle answer for all of them.

The fleet reads a VM on its own while that is cheap; once the lone reads asked since the last
round cost twice what a round does, the rest wait for a round. These tests drive a real Fleet
over a fake Azure that counts what it is asked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from controller import fleet as fleet_module
from controller.azure_compute import AzureFailureError
from controller.fleet import Fleet, FleetSettings, Look
from controller.gpuvm import VmRef
from controller.power import Observation, PowerState, ProvisioningState
from controller.reasons import Failure, Reason
from testbed.sandbox import until

SUB = "00000000-0000-0000-0000-0000000000aa"
TAGS = {"gpuvm-operator.io/managed": "true"}


def ref(i: int) -> VmRef:
    return VmRef(subscription_id=SUB, resource_group="rg", name=f"vm-{i}")


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Azure:
    """Every VM is deallocated; ``fail_walks`` list walks fail with a 500 before they succeed again."""

    def __init__(self, wanted: set[str]) -> None:
        self.wanted = wanted
        self.gets: list[str] = []
        self.walks = 0
        self.tag_pages = 0
        self.fail_walks = 0

    def _obs(self, *, tags: bool) -> Observation:
        return Observation(PowerState.DEALLOCATED, ProvisioningState.SUCCEEDED, now(), tags=dict(TAGS) if tags else None)

    async def observe(self, vm: VmRef) -> Observation:
        self.gets.append(vm.name)
        return self._obs(tags=True)

    async def list_observations(self, subscription: str, group: str | None) -> AsyncIterator[tuple[str, Observation, int]]:
        self.walks += 1
        if self.fail_walks:
            self.fail_walks -= 1
            raise AzureFailureError(Failure(Reason.AZURE_ERROR, "InternalServerError", "Azure answered 500"))
        for key in sorted(self.wanted):
            yield key, self._obs(tags=False), 1

    async def list_tags_page(self, subscription: str, group: str | None, continuation: str | None) -> Any:
        self.tag_pages += 1
        return {key: (dict(TAGS), None) for key in self.wanted}, None


async def steps_until_told(fleet: Fleet, woken: list[str], vm: VmRef) -> Look:
    """Observe ``vm`` each time the fleet wakes it, as the engine does, until the look tells."""
    handled = 0
    while True:
        await until(lambda: woken.count(vm.key) > handled, what=f"the fleet to wake {vm.name}")
        handled = woken.count(vm.key)
        look = fleet.observe(vm)
        if look.observation is not None and not look.pending:
            return look


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet_module, "ANNOUNCED_QUIET", 0.01)
    monkeypatch.setattr(fleet_module, "WALK_RETRY", 0.05)


async def synced_fleet(wanted: set[str], azure: Azure, woken: list[str]) -> Fleet:
    refs = {ref(i).key: ref(i) for i in range(100)}
    fleet = Fleet(azure, FleetSettings(resync=3600, min_read_interval=0), clock=now,  # type: ignore[arg-type]
                  on_change=woken.append, wanted=lambda sub: set(wanted), lookup=refs.get)
    fleet.ensure_walker(SUB)
    await until(lambda: fleet._sub(SUB).synced, what="the first walk and tag cycle")
    return fleet


async def test_a_spec_edit_of_many_gpuvms_is_confirmed_by_one_round_not_a_get_each() -> None:
    wanted = {ref(i).key for i in range(6)}
    azure, woken = Azure(wanted), []
    fleet = await synced_fleet(wanted, azure, woken)
    try:
        assert azure.walks == 1 and azure.gets == []
        edited = now()  # every GpuVm's spec changed after the last look
        assert [fleet.known_since(ref(i), edited) for i in range(6)] == [False] * 6
        await until(lambda: all(fleet.known_since(ref(i), edited) for i in range(6)), what="every VM seen after the edit")
        # Two lone reads (twice the one page a round costs), then one round for the other four.
        assert sorted(azure.gets) == ["vm-0", "vm-1"]
        assert azure.walks == 2 and azure.tag_pages == 2
        assert {ref(i).key for i in range(2, 6)} <= set(woken)
    finally:
        await fleet.close()


async def test_a_gpuvm_waiting_for_a_round_is_not_read_again_when_woken_meanwhile() -> None:
    wanted = {ref(i).key for i in range(4)}
    azure, woken = Azure(wanted), []
    fleet = await synced_fleet(wanted, azure, woken)
    try:
        edited = now()
        for i in range(3):
            fleet.known_since(ref(i), edited)  # vm-2 waits for the round
        assert fleet.known_since(ref(2), edited) is False
        await until(lambda: fleet.known_since(ref(2), edited), what="the round")
        assert "vm-2" not in azure.gets
    finally:
        await fleet.close()


async def test_gpuvms_waiting_for_a_round_whose_walk_fails_are_read_alone() -> None:
    wanted = {ref(0).key}
    azure, woken = Azure(wanted), []
    fleet = await synced_fleet(wanted, azure, woken)
    try:
        azure.fail_walks = 1
        for i in range(1, 4):
            wanted.add(ref(i).key)  # three GpuVms created at once: vm-3 waits for a round
            assert fleet.observe(ref(i)).pending
        await until(lambda: azure.walks >= 3, what="the failed round and the walk after it")

        # Woken by the failure, vm-3 reads alone (the walk after it carried no tags: statusOnly).
        look = await steps_until_told(fleet, woken, ref(3))
        assert look.observation is not None and look.observation.tags == TAGS
        assert "vm-3" in azure.gets
    finally:
        await fleet.close()

