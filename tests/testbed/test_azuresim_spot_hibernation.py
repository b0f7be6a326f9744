"""Hibernation and Spot VMs in the simulator, through the real SDK: states, refusals, evictions,
and the capacity and price failures of a start or a resume."""

from __future__ import annotations

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceExistsError

from testbed.azuresim import OpName, Origin, PowerState, SimVm
from tests.testbed.azure_fixtures import (
    RG,
    SUB,
    azure_sim_factory,
    compute_client,
    fast_config,
    long_config,
    power_code,
    sim_of,
    spot_and_hibernation_vms,
)

__all__ = ["azure_sim_factory"]


@pytest.fixture
def fast(azure_sim_factory):
    return azure_sim_factory(fast_config(), spot_and_hibernation_vms())


@pytest.fixture
def slow(azure_sim_factory):
    return azure_sim_factory(long_config(), spot_and_hibernation_vms())


def codes(client, name: str) -> list[str]:
    return [s.code for s in client.virtual_machines.instance_view(RG, name).statuses]


def failed_start(thread, name: str, fault: str):
    """Inject ``fault`` for one start of ``name``, start it, and return the operation's error."""
    thread.run_sync(sim_of(thread).add_fault, f"op=start vm={name} {fault} times=1")
    with pytest.raises(HttpResponseError) as e:
        compute_client(thread).virtual_machines.begin_start(RG, name).result()
    return e.value.error


# ---- the VM resource ----


def test_get_serves_priority_eviction_policy_and_hibernation(fast) -> None:
    client = compute_client(fast)
    spot = client.virtual_machines.get(RG, "spot")
    assert (spot.priority, spot.eviction_policy, spot.billing_profile.max_price) == ("Spot", "Deallocate", -1.0)
    assert client.virtual_machines.get(RG, "spot-capped").billing_profile.max_price == 0.75
    plain = client.virtual_machines.get(RG, "plain")
    assert (plain.priority, plain.eviction_policy, plain.billing_profile) == ("Regular", None, None)
    legacy = client.virtual_machines.get(RG, "legacy")  # created without a priority: Azure leaves it out
    assert legacy.priority is None and legacy.additional_capabilities is None
    assert client.virtual_machines.get(RG, "hib").additional_capabilities.hibernation_enabled is True


def test_a_spot_vm_cannot_be_made_with_hibernation() -> None:
    with pytest.raises(ValueError, match="Hibernation capability isn't supported for Spot VMs"):
        SimVm(subscription_id=SUB, resource_group=RG, name="x", priority="Spot", hibernation_enabled=True)


# ---- hibernation ----


def test_hibernation_passes_through_deallocating(slow) -> None:
    client = compute_client(slow)
    client.virtual_machines.begin_deallocate(RG, "hib", hibernate=True, polling=False)
    assert codes(client, "hib") == ["ProvisioningState/updating", "PowerState/deallocating"]
    assert slow.run_sync(sim_of(slow).vm_state, "hib").operation == "hibernate"
    assert slow.run_sync(sim_of(slow).fast_forward, "hib")
    assert codes(client, "hib") == ["ProvisioningState/succeeded", "PowerState/deallocated", "HibernationState/Hibernated"]


@pytest.mark.parametrize("name", ["spot", "plain", "legacy"])
def test_hibernation_is_refused_without_the_capability(fast, name: str) -> None:
    client = compute_client(fast)
    with pytest.raises(ResourceExistsError) as e:
        client.virtual_machines.begin_deallocate(RG, name, hibernate=True)
    assert (e.value.status_code, e.value.error.code) == (409, "OperationNotAllowed")
    assert "enabled for hibernation" in e.value.error.message and "hibernationEnabled" in e.value.error.message
    assert power_code(client.virtual_machines.instance_view(RG, name).statuses) == "PowerState/running"


def test_a_resume_can_fail_for_capacity_and_stays_hibernated(fast) -> None:
    client = compute_client(fast)
    client.virtual_machines.begin_deallocate(RG, "hib", hibernate=True).result()
    first = failed_start(fast, "hib", "error=OverconstrainedResumeFromHibernatedStateAllocationRequest")
    assert first.code == "OverconstrainedResumeFromHibernatedStateAllocationRequest"
    assert "Resuming from hibernated state" in first.message
    assert codes(client, "hib") == [
        "ProvisioningState/failed/OverconstrainedResumeFromHibernatedStateAllocationRequest",
        "PowerState/deallocated",
        "HibernationState/Hibernated",
    ]
    second = failed_start(fast, "hib", "error=AllocationFailed")
    assert second.code == "AllocationFailed" and "allocation failed from hibernated state" in second.message
    client.virtual_machines.begin_start(RG, "hib").result()
    assert codes(client, "hib") == ["ProvisioningState/succeeded", "PowerState/running"]


def test_a_plain_deallocate_discards_the_hibernation(fast) -> None:
    client = compute_client(fast)
    client.virtual_machines.begin_deallocate(RG, "hib", hibernate=True).result()
    client.virtual_machines.begin_deallocate(RG, "hib").result()
    assert codes(client, "hib") == ["ProvisioningState/succeeded", "PowerState/deallocated"]
    assert not fast.run_sync(sim_of(fast).vm_state, "hib").hibernated


# ---- Spot evictions ----


def test_simulate_eviction_deallocates_a_spot_vm(slow) -> None:
    sim = sim_of(slow)
    client = compute_client(slow)
    assert client.virtual_machines.simulate_eviction(RG, "spot") is None  # 204
    state = slow.run_sync(sim.vm_state, "spot")
    assert (state.power_state, state.operation_origin, state.evictions) == (PowerState.DEALLOCATING, Origin.EVICTION, 1)
    assert codes(client, "spot") == ["ProvisioningState/updating", "PowerState/deallocating"]
    with pytest.raises(ResourceExistsError) as busy:  # a start while the eviction runs
        client.virtual_machines.begin_start(RG, "spot")
    assert "another operation is in progress" in busy.value.error.message
    slow.run_sync(sim.fast_forward, "spot")
    # What Azure's own eviction test sees afterwards: just a deallocated VM (azure-cli test_vm_simulate_eviction).
    assert codes(client, "spot") == ["ProvisioningState/succeeded", "PowerState/deallocated"]
    assert slow.run_sync(sim.count, OpName.SIMULATE_EVICTION, 204) == 1
    overlaps = slow.run_sync(sim.overlaps)
    assert [(o.requested, o.in_flight, o.in_flight_origin) for o in overlaps] == [("start", "deallocate", "eviction")]


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("plain", "not an Azure Spot Virtual Machine"), ("legacy", "not an Azure Spot"), ("spot-capped", "is deallocated")],
)
def test_simulate_eviction_refusals(fast, name: str, fragment: str) -> None:
    with pytest.raises(ResourceExistsError) as e:
        compute_client(fast).virtual_machines.simulate_eviction(RG, name)
    assert (e.value.status_code, e.value.error.code) == (409, "OperationNotAllowed") and fragment in e.value.error.message


def test_evict_from_python_and_the_admin_endpoint(fast) -> None:
    sim = sim_of(fast)
    client = compute_client(fast)
    fast.run_sync(sim.evict, "spot")
    client.virtual_machines.begin_start(RG, "spot-capped").result()
    auth = {"Authorization": f"Bearer {sim.token}"}
    answer = requests.post(f"{sim.endpoint}/_sim/vms/{RG}/spot-capped/evict", headers=auth, verify=sim.ca_file, timeout=10)
    assert answer.status_code == 202 and answer.json()["operationId"]
    refused = requests.post(f"{sim.endpoint}/_sim/vms/{RG}/plain/evict", headers=auth, verify=sim.ca_file, timeout=10)
    assert refused.status_code == 409 and "not an Azure Spot" in refused.json()["error"]["message"]
    fast.run_sync(sim.fast_forward, "spot")
    fast.run_sync(sim.fast_forward, "spot-capped")
    listing = requests.get(f"{sim.endpoint}/_sim/vms", headers=auth, verify=sim.ca_file, timeout=10).json()
    by_name = {v["name"]: v for v in listing}
    assert (by_name["spot"]["powerState"], by_name["spot"]["evictions"], by_name["spot"]["priority"]) == ("deallocated", 1, "Spot")
    assert (by_name["spot-capped"]["powerState"], by_name["spot-capped"]["evictions"]) == ("deallocated", 1)
    assert by_name["plain"]["evictions"] == 0
    client.virtual_machines.begin_start(RG, "spot").result()  # an evicted VM starts again like any other


def test_eviction_needs_its_rbac_action(azure_sim_factory) -> None:
    thread = azure_sim_factory(fast_config(restricted_tokens={"reader": ["Microsoft.Compute/virtualMachines/read"]}), spot_and_hibernation_vms())
    with pytest.raises(HttpResponseError) as e:
        compute_client(thread, token="reader").virtual_machines.simulate_eviction(RG, "spot")
    assert e.value.status_code == 403 and "virtualMachines/simulateEviction/action" in e.value.error.message


def test_spot_start_failures(fast) -> None:
    client = compute_client(fast)
    price = failed_start(fast, "spot-capped", "error=SpotPriceGreaterThanProvidedMaxPrice")
    assert price.code == "SpotPriceGreaterThanProvidedMaxPrice"
    assert "provided max price '0.75 USD' is lower than the current spot price" in price.message
    assert "Standard_NC24ads_A100_v4" in price.message
    fast.run_sync(sim_of(fast).add_fault, "kind=http op=start vm=spot-capped error=SkuNotAvailable times=1")
    with pytest.raises(HttpResponseError) as sku:  # refused at once, not as a failed operation
        client.virtual_machines.begin_start(RG, "spot-capped")
    assert (sku.value.status_code, sku.value.error.code) == (409, "SkuNotAvailable")
    client.virtual_machines.begin_start(RG, "spot-capped").result()
    assert power_code(client.virtual_machines.instance_view(RG, "spot-capped").statuses) == "PowerState/running"


def test_sku_not_available_as_a_failed_start_names_the_vm(fast) -> None:
    error = failed_start(fast, "spot-capped", "error=SkuNotAvailable")
    assert error.code == "SkuNotAvailable"
    assert f"resource 'spot-capped' is currently not available in location 'eastus' for subscription '{SUB}'" in error.message
