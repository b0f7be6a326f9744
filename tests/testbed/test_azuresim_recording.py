"""The request log, counters and overlap record that tests and benchmarks assert on."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError

from testbed.azuresim import OpName
from tests.testbed.azure_fixtures import (
    RG,
    SUB,
    azure_sim,
    azure_sim_factory,
    compute,
    compute_client,
    fast_config,
    long_config,
    sim_of,
)

__all__ = ["azure_sim", "azure_sim_factory", "compute"]


def test_log_and_counters(azure_sim, compute) -> None:
    sim = sim_of(azure_sim)
    compute.virtual_machines.get(RG, "vm-1")
    with pytest.raises(HttpResponseError):
        compute.virtual_machines.get(RG, "ghost")
    compute.virtual_machines.begin_start(RG, "vm-1", polling=False)
    log = azure_sim.run_sync(sim.request_log)
    assert [(r.method, r.operation, r.vm, r.status) for r in log] == [
        ("GET", "VirtualMachines.Get", "vm-1", 200),
        ("GET", "VirtualMachines.Get", "ghost", 404),
        ("POST", "VirtualMachines.Start", "vm-1", 202),
    ]
    assert log[2].path == f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/vm-1/start"
    assert log[0].time <= log[1].time <= log[2].time
    assert azure_sim.run_sync(sim.counters) == {
        ("VirtualMachines.Get", 200): 1, ("VirtualMachines.Get", 404): 1, ("VirtualMachines.Start", 202): 1,
    }
    assert azure_sim.run_sync(sim.count, OpName.GET) == 2
    azure_sim.run_sync(sim.reset)
    assert azure_sim.run_sync(sim.request_log) == [] and azure_sim.run_sync(sim.counters) == {}


def test_overlaps_are_recorded_whatever_the_answer(azure_sim_factory) -> None:
    thread = azure_sim_factory(long_config(restricted_tokens={"reader": ["*/read"]}))
    sim = sim_of(thread)
    client = compute_client(thread, retry_total=0)
    client.virtual_machines.begin_start(RG, "vm-1", polling=False)
    with pytest.raises(ResourceExistsError):
        client.virtual_machines.begin_deallocate(RG, "vm-1")
    with pytest.raises(HttpResponseError):  # 403, still an overlapping power request
        compute_client(thread, token="reader", retry_total=0).virtual_machines.begin_power_off(RG, "vm-1")
    thread.run_sync(sim.add_fault, "kind=throttle op=restart times=1")
    with pytest.raises(HttpResponseError):
        client.virtual_machines.begin_restart(RG, "vm-1")
    client.virtual_machines.begin_start(RG, "vm-2", polling=False)  # another VM: no overlap
    overlaps = thread.run_sync(sim.overlaps)
    assert [(o.vm, o.requested, o.in_flight, o.status) for o in overlaps] == [
        ("vm-1", "deallocate", "start", 409),
        ("vm-1", "powerOff", "start", 403),
        ("vm-1", "restart", "start", 429),
    ]
    assert len({o.in_flight_operation_id for o in overlaps}) == 1


def test_everything_recorded_is_bounded(azure_sim_factory) -> None:
    thread = azure_sim_factory(fast_config(log_size=5, operations_kept=4))
    sim = sim_of(thread)
    client = compute_client(thread)
    ids = []
    for _ in range(12):
        headers: dict = {}
        client.virtual_machines.begin_start(RG, "vm-2", polling=False,  # running: each one is a finished no-op
                                            raw_response_hook=lambda r: headers.update(r.http_response.headers))
        ids.append(headers["Azure-AsyncOperation"].split("/operations/")[1].split("?")[0])
    assert len(thread.run_sync(sim.request_log)) == 5
    assert thread.run_sync(sim.count, OpName.START, 202) == 12
    kept = [i for i in ids if thread.run_sync(sim.operation, i) is not None]
    assert kept == ids[-4:]
