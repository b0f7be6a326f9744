"""Power operations through the real SDK: LROs to completion and with polling=False, 409s, no-ops."""

from __future__ import annotations

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceExistsError

from testbed.azuresim import OpName, Origin, PowerState
from testbed.sandbox import wait_for
from tests.testbed.azure_fixtures import (
    RG,
    aio_compute,
    aio_compute_client,
    azure_sim,
    azure_sim_factory,
    compute,
    compute_client,
    fast_config,
    long_config,
    power_code,
    sim_of,
)

__all__ = ["aio_compute", "azure_sim", "azure_sim_factory", "compute"]


def _state(thread, name: str):
    return thread.run_sync(sim_of(thread).vm_state, name)


def test_start_to_completion(azure_sim, compute) -> None:
    assert compute.virtual_machines.begin_start(RG, "vm-1").result() is None
    view = compute.virtual_machines.instance_view(RG, "vm-1")
    assert power_code(view.statuses) == "PowerState/running"
    assert view.statuses[0].code == "ProvisioningState/succeeded"
    sim = sim_of(azure_sim)
    assert azure_sim.run_sync(sim.count, OpName.START, 202) == 1
    # ARMPolling polls Azure-AsyncOperation, then GETs the Location monitor once (200, empty)
    assert azure_sim.run_sync(sim.count, OpName.OPERATION_STATUS) >= 1
    assert azure_sim.run_sync(sim.count, OpName.OPERATION_RESULT, 200) == 1


def test_deallocate_power_off_restart_to_completion(azure_sim, compute) -> None:
    compute.virtual_machines.begin_power_off(RG, "vm-2", skip_shutdown=True).result()
    assert _state(azure_sim, "vm-2").power_state is PowerState.STOPPED
    compute.virtual_machines.begin_deallocate(RG, "vm-2").result()
    assert _state(azure_sim, "vm-2").power_state is PowerState.DEALLOCATED
    compute.virtual_machines.begin_start(RG, "vm-2").result()
    compute.virtual_machines.begin_restart(RG, "vm-2").result()
    state = _state(azure_sim, "vm-2")
    assert state.power_state is PowerState.RUNNING and state.provisioning_state == "succeeded"
    log = azure_sim.run_sync(sim_of(azure_sim).request_log)
    assert any(r.operation == OpName.POWER_OFF.value and "powerOff" in r.path for r in log)


def test_hibernate_then_resume(azure_sim, compute) -> None:
    compute.virtual_machines.begin_deallocate(RG, "vm-hib", hibernate=True).result()
    codes = [s.code for s in compute.virtual_machines.instance_view(RG, "vm-hib").statuses]
    assert codes == ["ProvisioningState/succeeded", "PowerState/deallocated", "HibernationState/Hibernated"]
    compute.virtual_machines.begin_start(RG, "vm-hib").result()
    codes = [s.code for s in compute.virtual_machines.instance_view(RG, "vm-hib").statuses]
    assert codes == ["ProvisioningState/succeeded", "PowerState/running"]


def test_hibernate_refused_without_hibernation_or_when_not_running(compute) -> None:
    with pytest.raises(ResourceExistsError) as not_enabled:
        compute.virtual_machines.begin_deallocate(RG, "vm-2", hibernate=True)
    assert not_enabled.value.error.code == "OperationNotAllowed"
    assert "enabled for hibernation" in not_enabled.value.error.message
    compute.virtual_machines.begin_deallocate(RG, "vm-hib").result()
    with pytest.raises(ResourceExistsError) as not_running:
        compute.virtual_machines.begin_deallocate(RG, "vm-hib", hibernate=True)
    assert "is running" in not_running.value.error.message


async def test_aio_operations_to_completion(azure_sim, aio_compute) -> None:
    await (await aio_compute.virtual_machines.begin_start(RG, "vm-1")).result()
    await (await aio_compute.virtual_machines.begin_deallocate(RG, "vm-hib", hibernate=True)).result()
    await (await aio_compute.virtual_machines.begin_power_off(RG, "vm-2", skip_shutdown=True)).result()
    await (await aio_compute.virtual_machines.begin_restart(RG, "vm-1")).result()
    states = {s.name: s for s in azure_sim.run_sync(sim_of(azure_sim).vm_states)}
    assert states["vm-1"].power_state is PowerState.RUNNING
    assert states["vm-hib"].power_state is PowerState.DEALLOCATED and states["vm-hib"].hibernated
    assert states["vm-2"].power_state is PowerState.STOPPED


def test_polling_false_observes_the_transient_state(azure_sim_factory) -> None:
    thread = azure_sim_factory(long_config())
    compute = compute_client(thread)
    poller = compute.virtual_machines.begin_start(RG, "vm-1", polling=False)
    assert poller.done()
    view = compute.virtual_machines.instance_view(RG, "vm-1")
    assert power_code(view.statuses) == "PowerState/starting"
    assert view.statuses[0].code == "ProvisioningState/updating"
    assert view.statuses[0].display_status == "Updating"
    assert compute.virtual_machines.get(RG, "vm-1").provisioning_state == "Updating"
    compute.virtual_machines.begin_deallocate(RG, "vm-2", polling=False)
    assert power_code(compute.virtual_machines.instance_view(RG, "vm-2").statuses) == "PowerState/deallocating"
    compute.virtual_machines.begin_power_off(RG, "vm-hib", polling=False)
    assert power_code(compute.virtual_machines.instance_view(RG, "vm-hib").statuses) == "PowerState/stopping"
    assert thread.run_sync(sim_of(thread).fast_forward, "vm-1")
    view = compute.virtual_machines.instance_view(RG, "vm-1")
    assert [s.code for s in view.statuses] == ["ProvisioningState/succeeded", "PowerState/running"]
    assert not thread.run_sync(sim_of(thread).fast_forward, "vm-1")  # nothing in flight any more


def test_transient_state_ends_by_itself(azure_sim, compute) -> None:
    compute.virtual_machines.begin_start(RG, "vm-3", polling=False)
    wait_for(lambda: power_code(compute.virtual_machines.instance_view(RG, "vm-3").statuses) == "PowerState/running",
               what="vm-3 running")


async def test_aio_polling_false_observes_the_transient_state(azure_sim_factory) -> None:
    thread = azure_sim_factory(long_config())
    async with aio_compute_client(thread) as client:
        await client.virtual_machines.begin_restart(RG, "vm-2", polling=False)
        view = await client.virtual_machines.instance_view(RG, "vm-2")
    assert power_code(view.statuses) == "PowerState/starting"
    assert view.statuses[0].code == "ProvisioningState/updating"


def test_409_while_another_operation_runs(azure_sim_factory) -> None:
    thread = azure_sim_factory(long_config())
    compute = compute_client(thread)
    compute.virtual_machines.begin_start(RG, "vm-1", polling=False)
    for call in (lambda: compute.virtual_machines.begin_deallocate(RG, "vm-1"),
                 lambda: compute.virtual_machines.begin_start(RG, "vm-1")):
        with pytest.raises(ResourceExistsError) as e:
            call()
        assert e.value.status_code == 409
        assert e.value.error.code == "OperationNotAllowed"
        assert e.value.error.message.endswith("is not allowed on VM 'vm-1' since another operation is in progress.")
    thread.run_sync(sim_of(thread).fast_forward, "vm-1")
    compute.virtual_machines.begin_deallocate(RG, "vm-1", polling=False)  # accepted once the start is over


@pytest.mark.parametrize(
    ("name", "call", "fragment"),
    [
        ("vm-1", "begin_restart", "requires the VM to be running"),
        ("vm-3", "begin_restart", "requires the VM to be running"),
        ("vm-1", "begin_power_off", "deallocated or marked to be deallocated"),
    ],
)
def test_actions_refused_from_the_current_state(compute, name: str, call: str, fragment: str) -> None:
    with pytest.raises(ResourceExistsError) as e:
        getattr(compute.virtual_machines, call)(RG, name)
    assert e.value.error.code == "OperationNotAllowed" and fragment in e.value.error.message


def test_no_op_start_and_deallocate_succeed_at_once(azure_sim, compute) -> None:
    compute.virtual_machines.begin_start(RG, "vm-2", polling=False)  # already running
    compute.virtual_machines.begin_deallocate(RG, "vm-1", polling=False)  # already deallocated
    compute.virtual_machines.begin_power_off(RG, "vm-3", polling=False)  # already stopped
    for name in ("vm-1", "vm-2", "vm-3"):
        assert _state(azure_sim, name).operation is None
    compute.virtual_machines.begin_start(RG, "vm-2").result()


def test_operation_status_and_location_monitor_shapes(azure_sim_factory) -> None:
    thread = azure_sim_factory(long_config(retry_after=0.25))
    sim = sim_of(thread)
    client = compute_client(thread)
    captured = {}
    client.virtual_machines.begin_start(RG, "vm-1", polling=False, raw_response_hook=lambda r: captured.update(r.http_response.headers))
    async_url, location = captured["Azure-AsyncOperation"], captured["Location"]
    assert "/providers/Microsoft.Compute/locations/eastus/operations/" in async_url and "api-version=" in async_url
    assert "monitor=true" in location and "api-version=" in location
    assert captured["Retry-After"] == "1"  # whole seconds on the 202: the SDK parses it as int
    auth = {"Authorization": f"Bearer {sim.token}"}
    running = requests.get(async_url, headers=auth, verify=sim.ca_file, timeout=10)
    body = running.json()
    assert body["status"] == "InProgress" and body["name"] in async_url and "startTime" in body and "endTime" not in body
    assert running.headers["Retry-After"] == "0.25"
    monitor = requests.get(location, headers=auth, verify=sim.ca_file, timeout=10)
    assert monitor.status_code == 202 and monitor.content == b"" and "monitor=true" in monitor.headers["Location"]
    thread.run_sync(sim.fast_forward, "vm-1")
    done = requests.get(async_url, headers=auth, verify=sim.ca_file, timeout=10)
    assert done.json()["status"] == "Succeeded" and "error" not in done.json() and "Retry-After" not in done.headers
    assert done.json()["endTime"] >= done.json()["startTime"]
    final = requests.get(location, headers=auth, verify=sim.ca_file, timeout=10)
    assert final.status_code == 200 and final.content == b""


def test_out_of_band_start_is_a_real_transition(azure_sim_factory) -> None:
    thread = azure_sim_factory(long_config())
    sim = sim_of(thread)
    compute = compute_client(thread)
    thread.run_sync(lambda: sim.out_of_band("vm-1", "start"))
    state = _state(thread, "vm-1")
    assert state.power_state is PowerState.STARTING and state.operation_origin is Origin.OUT_OF_BAND
    assert power_code(compute.virtual_machines.instance_view(RG, "vm-1").statuses) == "PowerState/starting"
    with pytest.raises(ResourceExistsError):
        compute.virtual_machines.begin_deallocate(RG, "vm-1")
    overlaps = thread.run_sync(sim.overlaps)
    assert [(o.vm, o.requested, o.in_flight, o.in_flight_origin, o.status) for o in overlaps] == [
        ("vm-1", "deallocate", "start", "out-of-band", 409)
    ]
    thread.run_sync(sim.fast_forward, "vm-1")
    assert _state(thread, "vm-1").power_state is PowerState.RUNNING
    assert thread.run_sync(sim.counters).get((OpName.START.value, 202)) is None  # not an API request


def test_set_power_state_preempts_an_operation(azure_sim_factory) -> None:
    thread = azure_sim_factory(long_config())
    sim = sim_of(thread)
    compute = compute_client(thread)
    poller = compute.virtual_machines.begin_start(RG, "vm-1")
    thread.run_sync(lambda: sim.set_power_state("vm-1", "stopped"))
    with pytest.raises(HttpResponseError) as e:
        poller.result()
    assert e.value.error.code == "OperationPreempted"
    [operation_id] = {r.path.rsplit("/", 1)[1] for r in thread.run_sync(sim.request_log)
                      if r.operation == OpName.OPERATION_STATUS.value}
    assert thread.run_sync(sim.operation, operation_id)["status"] == "Canceled"
    assert _state(thread, "vm-1").power_state is PowerState.STOPPED


async def test_aio_409_and_overlap_record(azure_sim_factory) -> None:
    thread = azure_sim_factory(long_config())
    async with aio_compute_client(thread) as client:
        await client.virtual_machines.begin_power_off(RG, "vm-2", polling=False)
        with pytest.raises(ResourceExistsError):
            await client.virtual_machines.begin_restart(RG, "vm-2")
    overlaps = thread.run_sync(sim_of(thread).overlaps)
    assert [(o.requested, o.in_flight, o.in_flight_origin, o.status) for o in overlaps] == [("restart", "powerOff", "api", 409)]


def test_per_vm_timings_override(azure_sim_factory) -> None:
    from testbed.azuresim import SimVm
    from tests.testbed.azure_fixtures import SUB
    vms = [SimVm(subscription_id=SUB, resource_group=RG, name="slow", timings={"start": 30.0}),
           SimVm(subscription_id=SUB, resource_group=RG, name="fast")]
    thread = azure_sim_factory(fast_config(), vms)
    client = compute_client(thread)
    client.virtual_machines.begin_start(RG, "slow", polling=False)
    client.virtual_machines.begin_start(RG, "fast").result()
    assert _state(thread, "slow").power_state is PowerState.STARTING
    assert _state(thread, "fast").power_state is PowerState.RUNNING
