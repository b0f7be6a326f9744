"""The operator's Azure adapter against the simulator, through the real aio SDK: hibernation
(hibernate=true, the Hibernated power state, the refusal the engine falls back on), Spot facts,
evictions as the adapter sees them, and the capacity and price failures of starts and resumes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controller.azure_compute import AzureCompute, AzureFailureError, AzureSettings
from controller.credentials import CredentialMode
from controller.gpuvm import VmRef
from controller.power import Action, PowerState, ProvisioningState
from controller.reasons import CAPACITY_REASONS, RESUME_CODE, Reason
from testbed.azuresim import AsyncStaticTokenCredential
from tests.testbed.azure_fixtures import (
    RG,
    SUB,
    azure_sim_factory,
    fast_config,
    long_config,
    sim_of,
    spot_and_hibernation_vms,
)

__all__ = ["azure_sim_factory"]


def ref(name: str) -> VmRef:
    return VmRef(SUB, RG, name)


async def adapter_for(thread) -> AzureCompute:
    sim = sim_of(thread)
    settings = AzureSettings(
        endpoint=sim.endpoint, ca_bundle=sim.ca_file, credential_mode=CredentialMode.SIMULATOR_TOKEN, polling_interval=0.02,
    )
    return AzureCompute(AsyncStaticTokenCredential(sim.token), settings)


@pytest.fixture
async def fast(azure_sim_factory) -> AsyncIterator[tuple[object, AzureCompute]]:
    thread = azure_sim_factory(fast_config(), spot_and_hibernation_vms())
    azure = await adapter_for(thread)
    yield thread, azure
    await azure.close()


async def run(azure: AzureCompute, name: str, action: Action, *, hibernate: bool = False) -> None:
    poller = await azure.begin(ref(name), action, hibernate=hibernate)
    await azure.finish(poller, ref(name), action)


async def test_facts_carry_priority_and_the_hibernation_capability(fast) -> None:
    _, azure = fast
    spot, hib, legacy = [await azure.observe(ref(n)) for n in ("spot", "hib", "legacy")]
    assert (spot.facts.priority, spot.facts.hibernation_enabled) == ("Spot", False)
    assert (hib.facts.priority, hib.facts.hibernation_enabled) == (None, True)
    assert (legacy.facts.priority, legacy.facts.hibernation_enabled) == (None, False)
    listed = {key: obs async for key, obs, _ in azure.list_observations(SUB)}
    assert listed[ref("spot").key].facts.priority is None  # statusOnly pages do not say: None, not "Regular"
    assert listed[ref("spot").key].facts.hibernation_enabled is None


async def test_hibernate_and_resume(fast) -> None:
    _, azure = fast
    await run(azure, "hib", Action.DEALLOCATE, hibernate=True)
    got = await azure.observe(ref("hib"))
    assert (got.power_state, got.provisioning_state) == (PowerState.HIBERNATED, ProvisioningState.SUCCEEDED)
    assert got.power_state.reaches(Action.DEALLOCATE.target) and not got.power_state.billed
    listed = {key: obs async for key, obs, _ in azure.list_observations(SUB)}
    assert listed[ref("hib").key].power_state is PowerState.HIBERNATED  # statusOnly pages show it too
    await run(azure, "hib", Action.START)
    assert (await azure.observe(ref("hib"))).power_state is PowerState.RUNNING


@pytest.mark.parametrize("name", ["spot", "plain"])
async def test_a_refused_hibernation_is_recognisable_and_a_plain_deallocate_works(fast, name: str) -> None:
    _, azure = fast
    with pytest.raises(AzureFailureError) as e:
        await azure.begin(ref(name), Action.DEALLOCATE, hibernate=True)
    failure = e.value.failure
    assert (failure.reason, failure.code) == (Reason.HIBERNATION_NOT_SUPPORTED, "OperationNotAllowed")
    assert "hibernationEnabled" in failure.message and "spec.stopMode: Deallocate" in failure.message
    await run(azure, name, Action.DEALLOCATE)  # the fallback
    assert (await azure.observe(ref(name))).power_state is PowerState.DEALLOCATED


async def test_only_a_deallocate_hibernates(fast) -> None:
    _, azure = fast
    with pytest.raises(ValueError):
        await azure.begin(ref("hib"), Action.START, hibernate=True)


async def test_a_busy_vm_is_not_a_hibernation_refusal(azure_sim_factory) -> None:
    thread = azure_sim_factory(long_config(), spot_and_hibernation_vms())
    azure = await adapter_for(thread)
    try:
        await azure.begin(ref("hib"), Action.DEALLOCATE, hibernate=True)
        with pytest.raises(AzureFailureError) as e:
            await azure.begin(ref("hib"), Action.DEALLOCATE, hibernate=True)
        assert e.value.failure.reason is Reason.WAITING_FOR_TRANSITION
    finally:
        await azure.close()


async def test_a_failed_resume_is_a_capacity_failure_and_the_vm_stays_hibernated(fast) -> None:
    thread, azure = fast
    await run(azure, "hib", Action.DEALLOCATE, hibernate=True)
    thread.run_sync(sim_of(thread).add_fault, f"op=start vm=hib error={RESUME_CODE} times=1")
    with pytest.raises(AzureFailureError) as e:
        await run(azure, "hib", Action.START)
    failure = e.value.failure
    assert (failure.reason, failure.code) == (Reason.ALLOCATION_FAILED, RESUME_CODE) and failure.reason in CAPACITY_REASONS
    assert "hibernated VM" in failure.message and "back-off" in failure.message
    got = await azure.observe(ref("hib"))
    assert got.power_state is PowerState.HIBERNATED and got.provisioning_state is ProvisioningState.FAILED
    assert got.provisioning_failure is not None and got.provisioning_failure.code == RESUME_CODE


@pytest.mark.parametrize(
    ("fault", "where", "reason", "fragment"),
    [
        ("error=SpotPriceGreaterThanProvidedMaxPrice", "finish", Reason.SPOT_PRICE_ABOVE_MAX, "Raise the max price"),
        ("error=SkuNotAvailable", "finish", Reason.ALLOCATION_FAILED, "Regular priority"),
        ("kind=http error=SkuNotAvailable", "begin", Reason.ALLOCATION_FAILED, "no Spot capacity"),
        ("kind=http error=SpotPriceGreaterThanProvidedMaxPrice", "begin", Reason.SPOT_PRICE_ABOVE_MAX, "Regular priority"),
        ("error=ZonalAllocationFailed", "finish", Reason.ALLOCATION_FAILED, "another zone"),
    ],
)
async def test_spot_start_failures(fast, fault: str, where: str, reason: Reason, fragment: str) -> None:
    thread, azure = fast
    thread.run_sync(sim_of(thread).add_fault, f"op=start vm=spot-capped {fault} times=1")
    poller = None
    with pytest.raises(AzureFailureError) as e:
        poller = await azure.begin(ref("spot-capped"), Action.START)
        await azure.finish(poller, ref("spot-capped"), Action.START)
    assert (poller is None) == (where == "begin")
    assert e.value.failure.reason is reason and reason in CAPACITY_REASONS
    assert fragment in e.value.failure.message
    await run(azure, "spot-capped", Action.START)  # the retry after the back-off
    assert (await azure.observe(ref("spot-capped"))).power_state is PowerState.RUNNING


async def test_an_eviction_as_the_adapter_sees_it(azure_sim_factory) -> None:
    thread = azure_sim_factory(long_config(), spot_and_hibernation_vms())
    sim = sim_of(thread)
    azure = await adapter_for(thread)
    try:
        thread.run_sync(sim.evict, "spot")
        during = await azure.observe(ref("spot"))
        assert during.power_state is PowerState.DEALLOCATING and during.busy and during.facts.priority == "Spot"
        thread.run_sync(sim.fast_forward, "spot")
        after = await azure.observe(ref("spot"))
        assert (after.power_state, after.provisioning_state) == (PowerState.DEALLOCATED, ProvisioningState.SUCCEEDED)
        assert after.provisioning_failure is None  # nothing in Azure's view says "evicted": priority + wanted does
        await azure.begin(ref("spot"), Action.START)  # restarted like any deallocated VM
        thread.run_sync(sim.fast_forward, "spot")
        assert (await azure.observe(ref("spot"))).power_state is PowerState.RUNNING
    finally:
        await azure.close()


async def test_an_operation_ends_with_its_own_status_and_no_final_get(fast) -> None:
    """Start and deallocate are followed through Azure-AsyncOperation alone: the GET of Location
    after Succeeded would be an ARM read for an empty result (a third of the polls of a burst)."""
    thread, azure = fast
    sim = sim_of(thread)
    await run(azure, "plain", Action.DEALLOCATE)
    await run(azure, "plain", Action.START)
    operations = [r.operation for r in sim.request_log() if r.operation.startswith("Operations.")]
    assert operations.count("Operations.Status") >= 2 and "Operations.Result" not in operations
    assert (await azure.observe(ref("plain"))).power_state is PowerState.RUNNING
