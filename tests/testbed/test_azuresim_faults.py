"""Injected faults as the real SDK meets them, the fault spec syntax, and the admin endpoints."""

from __future__ import annotations

import time

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ServiceResponseError

from testbed.azuresim import (
    NO_RESPONSE,
    Fault,
    FaultKind,
    FaultSpecError,
    OpName,
    PowerState,
)
from testbed.sandbox import wait_for
from tests.testbed.azure_fixtures import (
    RG,
    add_fault,
    aio_compute,
    azure_sim,
    azure_sim_factory,
    compute,
    compute_client,
    long_config,
    power_code,
    sim_of,
)

__all__ = ["aio_compute", "azure_sim", "azure_sim_factory", "compute"]


def _counters(thread) -> dict:
    return thread.run_sync(sim_of(thread).counters)


# ---- spec syntax ----

def test_spec_parsing_infers_kinds() -> None:
    fail = Fault.parse("op=start vm=vm-1 error=AllocationFailed times=2")
    assert (fail.kind, fail.operations, fail.vm, fail.code, fail.times) == (
        FaultKind.FAIL, frozenset({OpName.START}), "vm-1", "AllocationFailed", 2)
    assert Fault.parse("op=get status=429 retry-after=0.5").kind is FaultKind.THROTTLE
    assert Fault.parse("op=listAll status=503").kind is FaultKind.HTTP
    assert Fault.parse("op=read delay=1").kind is FaultKind.SLOW
    assert Fault.parse("kind=drop op=VirtualMachines.Get p=0.5 seed=3").probability == 0.5
    assert Fault.parse("kind=http op=power error=Conflict message='busy right now'").message == "busy right now"
    assert Fault.parse("kind=no-power-state vm=gpu-*").operations == frozenset()


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("", "empty"),
        ("op=start bogus", "not key=value"),
        ("op=launch error=X", "unknown operation 'launch'"),
        ("op=start", "cannot tell what the fault does"),
        ("kind=explode", "unknown kind"),
        ("kind=fail op=get error=AllocationFailed", "power operations only"),
        ("kind=fail op=start", "needs error="),
        ("op=get status=abc", "not a whole number"),
        ("op=get status=200", "HTTP error status"),
        ("kind=throttle p=2", "between 0 and 1"),
        ("kind=drop times=0", "times must be >= 1"),
        ("kind=drop colour=red", "unknown key"),
        ("kind=drop op=get op=list", "given twice"),
        ("kind=slow delay=0", "delay="),
    ],
)
def test_bad_specs_say_why(spec: str, fragment: str) -> None:
    with pytest.raises(FaultSpecError) as e:
        Fault.parse(spec)
    assert fragment in str(e.value)


# ---- HTTP faults, throttling, drops, slowness ----

def test_5xx_is_retried_by_azure_core(azure_sim, compute) -> None:
    add_fault(azure_sim, "op=get status=503 times=2")
    assert compute.virtual_machines.get(RG, "vm-1").name == "vm-1"
    counters = _counters(azure_sim)
    assert counters[(OpName.GET.value, 503)] == 2 and counters[(OpName.GET.value, 200)] == 1


def test_error_status_and_code_surface_when_retries_run_out(azure_sim) -> None:
    add_fault(azure_sim, "kind=http op=instanceView vm=vm-2 status=500 error=InternalExecutionError message='boom'")
    client = compute_client(azure_sim, retry_total=1)
    with pytest.raises(HttpResponseError) as e:
        client.virtual_machines.instance_view(RG, "vm-2")
    assert (e.value.status_code, e.value.error.code, e.value.error.message) == (500, "InternalExecutionError", "boom")
    assert client.virtual_machines.instance_view(RG, "vm-1")  # other VMs are untouched


def test_429_retry_after_is_honoured(azure_sim, compute) -> None:
    add_fault(azure_sim, "kind=throttle op=get retry-after=0.3 times=1")
    add_fault(azure_sim, "kind=throttle op=start retry-after=0.3 times=1")
    began = time.monotonic()
    compute.virtual_machines.get(RG, "vm-1")
    compute.virtual_machines.begin_start(RG, "vm-1").result()  # a POST 429 with Retry-After is retried too
    assert time.monotonic() - began >= 0.6
    counters = _counters(azure_sim)
    assert counters[(OpName.GET.value, 429)] == 1 and counters[(OpName.START.value, 429)] == 1
    assert counters[(OpName.START.value, 202)] == 1


def test_dropped_connection_is_retried_for_get_not_for_post(azure_sim, compute) -> None:
    add_fault(azure_sim, "kind=drop op=get times=1")
    add_fault(azure_sim, "kind=drop op=start times=1")
    assert compute.virtual_machines.get(RG, "vm-2").name == "vm-2"
    with pytest.raises(ServiceResponseError):
        compute.virtual_machines.begin_start(RG, "vm-1")
    counters = _counters(azure_sim)
    assert counters[(OpName.GET.value, NO_RESPONSE)] == 1 and counters[(OpName.GET.value, 200)] == 1
    assert counters[(OpName.START.value, NO_RESPONSE)] == 1 and (OpName.START.value, 202) not in counters
    assert azure_sim.run_sync(sim_of(azure_sim).vm_state, "vm-1").power_state is PowerState.DEALLOCATED


async def test_aio_dropped_connection_is_retried(azure_sim, aio_compute) -> None:
    add_fault(azure_sim, "kind=drop op=instanceView times=1")
    view = await aio_compute.virtual_machines.instance_view(RG, "vm-3")
    assert power_code(view.statuses) == "PowerState/stopped"
    assert _counters(azure_sim)[(OpName.INSTANCE_VIEW.value, NO_RESPONSE)] == 1


def test_slow_answers(azure_sim, compute) -> None:
    add_fault(azure_sim, "op=list delay=0.4 times=1")
    began = time.monotonic()
    list(compute.virtual_machines.list(RG))
    assert time.monotonic() - began >= 0.4
    [fault] = azure_sim.run_sync(sim_of(azure_sim).faults)
    assert (fault["fired"], fault["remaining"]) == (1, 0)  # later calls are not slowed


# ---- failed long-running operations ----

@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("AllocationFailed", "sufficient capacity for the requested VM size in this region"),
        ("ZonalAllocationFailed", "in this zone"),
        ("OverconstrainedAllocationRequest", "constraints cannot be allocated"),
        ("OperationNotAllowed", "exceeding approved standardNCADSA100v4Family Cores quota"),
    ],
)
def test_failed_start_from_result(azure_sim, compute, code: str, fragment: str) -> None:
    add_fault(azure_sim, f"op=start vm=vm-1 error={code} times=1")
    poller = compute.virtual_machines.begin_start(RG, "vm-1")
    with pytest.raises(HttpResponseError) as e:
        poller.result()
    assert e.value.error.code == code and fragment in e.value.error.message
    view = compute.virtual_machines.instance_view(RG, "vm-1")
    assert view.statuses[0].code == f"ProvisioningState/failed/{code}"
    assert view.statuses[0].display_status == "Provisioning failed"
    assert power_code(view.statuses) == "PowerState/deallocated"
    assert compute.virtual_machines.get(RG, "vm-1").provisioning_state == "Failed"
    compute.virtual_machines.begin_start(RG, "vm-1").result()  # the fault fired once; retrying works
    assert compute.virtual_machines.instance_view(RG, "vm-1").statuses[0].code == "ProvisioningState/succeeded"


async def test_aio_failed_start(azure_sim, aio_compute) -> None:
    add_fault(azure_sim, "op=start error=ZonalAllocationFailed after=0.05")
    poller = await aio_compute.virtual_machines.begin_start(RG, "vm-3")
    with pytest.raises(HttpResponseError) as e:
        await poller.result()
    assert e.value.error.code == "ZonalAllocationFailed"
    assert azure_sim.run_sync(sim_of(azure_sim).vm_state, "vm-3").power_state is PowerState.STOPPED


def test_failed_operation_on_the_location_monitor(azure_sim, compute) -> None:
    add_fault(azure_sim, "op=start error=AllocationFailed after=0")
    captured = {}
    compute.virtual_machines.begin_start(RG, "vm-1", polling=False, raw_response_hook=lambda r: captured.update(r.http_response.headers))
    sim = sim_of(azure_sim)
    auth = {"Authorization": f"Bearer {sim.token}"}
    status = wait_for(lambda: requests.get(captured["Azure-AsyncOperation"], headers=auth, verify=sim.ca_file, timeout=10).json()
                        if azure_sim.run_sync(sim.vm_state, "vm-1").operation is None else None, what="failure")
    assert status["status"] == "Failed" and status["error"]["code"] == "AllocationFailed" and "endTime" in status
    monitor = requests.get(captured["Location"], headers=auth, verify=sim.ca_file, timeout=10)
    assert monitor.status_code == 409 and monitor.json()["error"]["code"] == "AllocationFailed"


# ---- instance views without a power state, probability, matching ----

def test_instance_view_without_power_state(azure_sim, compute) -> None:
    add_fault(azure_sim, "kind=no-power-state vm=vm-2 times=2")
    assert power_code(compute.virtual_machines.instance_view(RG, "vm-2").statuses) is None
    listed = {v.name: v for v in compute.virtual_machines.list_all(status_only="true")}
    assert power_code(listed["vm-2"].instance_view.statuses) is None
    assert power_code(listed["vm-1"].instance_view.statuses) == "PowerState/deallocated"
    assert power_code(compute.virtual_machines.instance_view(RG, "vm-2").statuses) == "PowerState/running"


def test_probability_is_reproducible_with_a_seed(azure_sim_factory) -> None:
    outcomes = []
    for _ in range(2):
        thread = azure_sim_factory()
        add_fault(thread, "op=get status=500 p=0.5 seed=42")
        client = compute_client(thread, retry_total=0)
        run = []
        for _ in range(30):
            try:
                client.virtual_machines.get(RG, "vm-1")
                run.append(True)
            except HttpResponseError:
                run.append(False)
        outcomes.append(run)
    assert outcomes[0] == outcomes[1]
    assert 5 < outcomes[0].count(False) < 25


def test_faults_match_vm_globs_and_can_be_removed(azure_sim, compute) -> None:
    fault_id = add_fault(azure_sim, "kind=http op=get vm=VM-[12] status=409 error=Conflict")
    client = compute_client(azure_sim, retry_total=0)
    for name in ("vm-1", "vm-2"):
        with pytest.raises(HttpResponseError):
            client.virtual_machines.get(RG, name)
    assert client.virtual_machines.get(RG, "vm-3")
    listing = azure_sim.run_sync(sim_of(azure_sim).faults)
    assert listing[0]["id"] == fault_id and listing[0]["fired"] == 2
    assert azure_sim.run_sync(sim_of(azure_sim).remove_fault, fault_id)
    assert client.virtual_machines.get(RG, "vm-1")


def test_faults_from_config() -> None:
    from testbed.azuresim import AzureComputeSimulator
    from testbed.serving import ServerThread
    from tests.testbed.azure_fixtures import default_vms, fast_config
    with ServerThread(AzureComputeSimulator(fast_config(faults=(Fault.parse("op=get status=404 error=ResourceNotFound"),)), default_vms())) as thread:
        with pytest.raises(HttpResponseError) as e:
            compute_client(thread).virtual_machines.get(RG, "vm-1")
        assert e.value.status_code == 404


# ---- admin endpoints ----

def test_admin_endpoints_drive_and_inspect(azure_sim_factory) -> None:
    azure_sim = azure_sim_factory(long_config())
    compute = compute_client(azure_sim)
    sim = sim_of(azure_sim)
    base = sim.endpoint + "/_sim"
    kw = {"headers": {"Authorization": f"Bearer {sim.token}"}, "verify": sim.ca_file, "timeout": 10}

    created = requests.post(base + "/faults", json={"spec": "op=start error=AllocationFailed times=1"}, **kw)
    assert created.status_code == 201
    assert requests.get(base + "/faults", **kw).json()[0]["code"] == "AllocationFailed"
    bad = requests.post(base + "/faults", json={"spec": "op=nonsense"}, **kw)
    assert bad.status_code == 400 and "unknown operation" in bad.json()["error"]["message"]
    assert requests.delete(base + "/faults", **kw).json() == {"cleared": True}
    assert requests.get(base + "/faults", **kw).json() == []

    started = requests.post(base + f"/vms/{RG}/vm-1/start", **kw)
    assert started.status_code == 202 and started.json()["operationId"]
    assert requests.get(base + f"/vms/{RG}/vm-1", **kw).json()["operationOrigin"] == "out-of-band"
    refused = requests.post(base + f"/vms/{RG}/vm-1/deallocate", **kw)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "OperationNotAllowed"
    forwarded = requests.post(base + f"/vms/{RG}/vm-1/fast-forward", **kw).json()
    assert forwarded["fastForwarded"] is True and forwarded["powerState"] == "running" and forwarded["operation"] is None

    stopped = requests.put(base + f"/vms/{RG}/vm-2/power-state", json={"powerState": "stopped"}, **kw)
    assert stopped.json()["powerState"] == "stopped"
    assert power_code(compute.virtual_machines.instance_view(RG, "vm-2").statuses) == "PowerState/stopped"

    counters = requests.get(base + "/counters", **kw).json()
    assert {"operation": OpName.INSTANCE_VIEW.value, "status": 200, "count": 1} in counters
    log = requests.get(base + "/log?limit=5", **kw).json()
    assert log[-1]["operation"] == OpName.INSTANCE_VIEW.value and log[-1]["vm"] == "vm-2"
    assert requests.get(base + "/overlaps", **kw).json() == {"total": 0, "overlaps": []}
    assert requests.get(base + "/vms/rg-nope/vm-1", **kw).status_code == 404

    assert requests.post(base + "/reset?vms=true", **kw).json() == {"reset": True}
    assert requests.get(base + "/counters", **kw).json() == []
    assert requests.get(base + f"/vms/{RG}/vm-2", **kw).json()["powerState"] == "running"
