"""Reads through the real SDK: get, instance view, list / list_all (statusOnly, paging), 400 / 404."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest

from testbed.azuresim import OpName, SimVm
from tests.testbed.azure_fixtures import (
    OTHER_RG,
    RG,
    SUB,
    aio_compute,
    aio_compute_client,
    azure_sim,
    azure_sim_factory,
    compute,
    compute_client,
    fast_config,
    power_code,
    sim_of,
)

__all__ = ["aio_compute", "azure_sim", "azure_sim_factory", "compute"]  # fixtures used here


def test_get_without_and_with_instance_view(compute) -> None:
    vm = compute.virtual_machines.get(RG, "vm-2")
    assert vm.name == "vm-2"
    assert vm.id == f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/vm-2"
    assert vm.type == "Microsoft.Compute/virtualMachines"
    assert vm.location == "eastus"
    assert vm.hardware_profile.vm_size == "Standard_NC24ads_A100_v4"
    assert vm.provisioning_state == "Succeeded"
    assert uuid.UUID(vm.vm_id)
    assert vm.time_created is not None
    assert vm.instance_view is None

    expanded = compute.virtual_machines.get(RG, "vm-2", expand="instanceView")
    codes = [s.code for s in expanded.instance_view.statuses]
    assert codes == ["ProvisioningState/succeeded", "PowerState/running"]
    assert expanded.instance_view.statuses[1].display_status == "VM running"
    assert expanded.vm_id == vm.vm_id


def test_names_are_case_insensitive(compute) -> None:
    vm = compute.virtual_machines.get(RG.upper(), "VM-1")
    assert vm.name == "vm-1"
    assert vm.tags == {"team": "ml"}


def test_instance_view_alone(compute) -> None:
    view = compute.virtual_machines.instance_view(RG, "vm-3")
    assert power_code(view.statuses) == "PowerState/stopped"
    assert view.statuses[0].code == "ProvisioningState/succeeded"


async def test_aio_get_and_instance_view(aio_compute) -> None:
    vm = await aio_compute.virtual_machines.get(RG, "vm-hib", expand="instanceView")
    assert vm.additional_capabilities.hibernation_enabled is True
    assert power_code(vm.instance_view.statuses) == "PowerState/running"
    view = await aio_compute.virtual_machines.instance_view(OTHER_RG, "vm-9")
    assert power_code(view.statuses) == "PowerState/deallocated"


def _many(n: int) -> list[SimVm]:
    return [SimVm(subscription_id=SUB, resource_group=RG if i % 2 else OTHER_RG, name=f"vm-{i:03d}",
                  power_state="running" if i % 3 == 0 else "deallocated") for i in range(n)]


def test_list_all_status_only_follows_next_links(azure_sim_factory) -> None:
    thread = azure_sim_factory(fast_config(page_size=4), _many(11))
    client = compute_client(thread)
    vms = list(client.virtual_machines.list_all(status_only="true"))
    assert sorted(v.name for v in vms) == [f"vm-{i:03d}" for i in range(11)]
    for v in vms:
        expected = "PowerState/running" if int(v.name[3:]) % 3 == 0 else "PowerState/deallocated"
        assert power_code(v.instance_view.statuses) == expected
    log = [r for r in thread.run_sync(sim_of(thread).request_log) if r.operation == OpName.LIST_ALL.value]
    assert len(log) == 3  # 4 + 4 + 3


def test_next_link_carries_api_version_and_status_only(azure_sim_factory) -> None:
    thread = azure_sim_factory(fast_config(page_size=2), _many(5))
    sim = sim_of(thread)
    url = f"{sim.endpoint}/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines?api-version=2026-04-01&statusOnly=true"
    page = requests.get(url, headers={"Authorization": f"Bearer {sim.token}"}, verify=sim.ca_file, timeout=10).json()
    assert len(page["value"]) == 2
    query = parse_qs(urlparse(page["nextLink"]).query)
    assert query["api-version"] == ["2026-04-01"]
    assert query["statusOnly"] == ["true"]
    assert page["nextLink"].startswith(sim.endpoint)
    last = requests.get(page["nextLink"], headers={"Authorization": f"Bearer {sim.token}"}, verify=sim.ca_file, timeout=10).json()
    assert "nextLink" in last and len(last["value"]) == 2


async def test_aio_list_by_resource_group_pages(azure_sim_factory) -> None:
    thread = azure_sim_factory(fast_config(page_size=2), _many(9))
    async with aio_compute_client(thread) as client:
        names = [v.name async for v in client.virtual_machines.list(RG)]
        statuses = [v async for v in client.virtual_machines.list_all(status_only="true")]
    assert names == [f"vm-{i:03d}" for i in range(9) if i % 2]
    assert len(statuses) == 9 and all(power_code(v.instance_view.statuses) for v in statuses)


def test_list_without_status_only_has_no_instance_view(compute) -> None:
    vms = list(compute.virtual_machines.list(RG))
    assert [v.name for v in vms] == ["vm-1", "vm-2", "vm-3", "vm-hib"]
    assert all(v.instance_view is None and v.hardware_profile.vm_size for v in vms)


def test_missing_api_version_is_400(compute) -> None:
    response = compute.send_request(HttpRequest("GET", f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/vm-1"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "MissingApiVersionParameter"


def test_vm_and_resource_group_not_found(compute) -> None:
    with pytest.raises(ResourceNotFoundError) as vm_missing:
        compute.virtual_machines.get(RG, "nope")
    assert vm_missing.value.error.code == "ResourceNotFound"
    assert "Microsoft.Compute/virtualMachines/nope" in vm_missing.value.error.message
    with pytest.raises(ResourceNotFoundError) as rg_missing:
        compute.virtual_machines.instance_view("rg-nope", "vm-1")
    assert rg_missing.value.error.code == "ResourceGroupNotFound"
    assert rg_missing.value.error.message == "Resource group 'rg-nope' could not be found."
    with pytest.raises(HttpResponseError) as start_missing:
        compute.virtual_machines.begin_start(RG, "nope")
    assert start_missing.value.status_code == 404


async def test_aio_not_found(aio_compute) -> None:
    with pytest.raises(ResourceNotFoundError) as e:
        await aio_compute.virtual_machines.get("rg-nope", "vm-1")
    assert e.value.error.code == "ResourceGroupNotFound"


def test_unknown_subscription(azure_sim) -> None:
    sim = sim_of(azure_sim)
    from azure.mgmt.compute import ComputeManagementClient

    from testbed.azuresim import StaticTokenCredential
    from tests.testbed.azure_fixtures import client_kwargs
    other = ComputeManagementClient(StaticTokenCredential(sim.token), str(uuid.uuid4()), **client_kwargs(sim))
    with pytest.raises(ResourceNotFoundError) as e:
        list(other.virtual_machines.list_all())
    assert e.value.error.code == "SubscriptionNotFound"


def test_list_by_resource_group_with_instance_view_or_status_only(compute) -> None:
    expanded = list(compute.virtual_machines.list(RG, expand="instanceView"))
    assert [power_code(v.instance_view.statuses) for v in expanded] == [
        "PowerState/deallocated", "PowerState/running", "PowerState/stopped", "PowerState/running"]
    assert all(v.hardware_profile.vm_size for v in expanded)
    # the SDK has no status_only for list(rg); the query parameter still works when passed through
    lean = list(compute.virtual_machines.list(RG, params={"statusOnly": "true"}))
    assert [power_code(v.instance_view.statuses) for v in lean] == [power_code(v.instance_view.statuses) for v in expanded]
    assert all(v.hardware_profile is None and v.tags is None for v in lean)
