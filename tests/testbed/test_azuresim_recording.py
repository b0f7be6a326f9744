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


def test_unobserved_measures_the_longest_stretch_without_a_telling_read() -> None:
    from testbed.azuresim.recording import OperationRecord, RequestRecord, unobserved

    op = OperationRecord(id="OP-1", vm="vm-1", resource_group="rg", action="start", origin="api",
                         start=10.0, end=20.0, status="Succeeded")
    oob = OperationRecord(id="op-2", vm="vm-2", resource_group="rg", action="start", origin="out-of-band",
                          start=10.0, end=11.0, status="Succeeded")
    running = OperationRecord(id="op-3", vm="vm-3", resource_group="rg", action="deallocate", origin="api",
                              start=12.0, end=None, status="InProgress")

    def req(time: float, operation: str, *, vm: str | None = None, path: str = "/x", status: int = 200) -> RequestRecord:
        return RequestRecord(time=time, method="GET", path=path, operation=operation, vm=vm, status=status)

    log = [
        req(9.0, "VirtualMachines.Get", vm="vm-9"),  # before: the horizon of the log
        req(11.0, "Operations.Status", path="/subscriptions/s/providers/Microsoft.Compute/locations/l/operations/op-1"),
        req(13.0, "Operations.Result", path="/x/operations/op-1", status=429),  # throttled: tells nothing
        req(14.0, "VirtualMachines.Get", vm="vm-2"),  # another VM
        req(17.0, "VirtualMachines.List", path="/subscriptions/s/resourceGroups/other/providers/Microsoft.Compute/virtualMachines"),
        req(19.0, "VirtualMachines.InstanceView", vm="VM-1"),
        req(26.0, "VirtualMachines.ListAll"),  # the first telling read after the end at 20
    ]
    got = {u.vm: u for u in unobserved([op, oob, running], log, now=30.0)}
    assert set(got) == {"vm-1", "vm-3"}  # out-of-band operations are not the client's to observe
    assert got["vm-1"].longest == 8.0 and got["vm-1"].seen_ended_after == 6.0  # 11 -> 19
    assert got["vm-3"].longest == 14.0 and got["vm-3"].seen_ended_after is None  # 12 -> 26, then to now


def test_unobserved_indexed_agrees_with_a_scan_of_the_whole_log() -> None:
    """The guard indexes the log (the soak runs it over hours of requests); a random log gives
    the same answers as the plain definition: scan every request for every operation. (A poll
    counts for its own operation only: op-2 is not told by a poll of op-21.)"""
    import random

    from testbed.azuresim.recording import OperationRecord, RequestRecord, unobserved

    rng = random.Random(7)
    ops, log = [], []
    for i in range(60):
        start = rng.uniform(0, 100)
        end = start + rng.uniform(0.1, 10) if rng.random() < 0.9 else None
        ops.append(OperationRecord(id=f"op-{i}", vm=f"vm-{i % 7}", resource_group=f"rg-{i % 2}", action="start",
                                   origin=rng.choice(["api", "api", "out-of-band"]), start=start, end=end, status="x"))
    for _ in range(400):
        kind = rng.choice(["Operations.Status", "VirtualMachines.Get", "VirtualMachines.InstanceView",
                           "VirtualMachines.List", "VirtualMachines.ListAll", "VirtualMachines.Start"])
        path = {"Operations.Status": f"/subscriptions/s/providers/Microsoft.Compute/locations/l/operations/OP-{rng.randrange(60)}",
                "VirtualMachines.List": f"/subscriptions/s/resourceGroups/RG-{rng.randrange(2)}/providers/x"}.get(kind, "/x")
        log.append(RequestRecord(time=rng.uniform(-1, 120), method="GET", path=path, operation=kind,
                                 vm=f"vm-{rng.randrange(7)}", status=rng.choice([200, 200, 200, 429, 0])))

    def scanned(op: OperationRecord) -> tuple[float, float | None]:
        times = sorted(r.time for r in log if r.status == 200 and r.time >= op.start and (
            (r.operation == "Operations.Status" and r.path.lower().endswith("/operations/" + op.id.lower()))
            or (r.operation in ("VirtualMachines.Get", "VirtualMachines.InstanceView") and r.vm == op.vm)
            or r.operation == "VirtualMachines.ListAll"
            or (r.operation == "VirtualMachines.List" and f"/resourcegroups/{op.resource_group}/" in r.path.lower())))
        detected = next((t for t in times if op.end is not None and t >= op.end), None)
        points = [op.start, *(t for t in times if detected is None or t <= detected)] + ([] if detected else [130.0])
        return max(b - a for a, b in zip(points, points[1:])), (detected - op.end if detected is not None and op.end else None)

    got = unobserved(ops, log, now=130.0)
    horizon = min(r.time for r in log)
    expected = [op for op in ops if op.origin == "api" and op.start >= horizon]
    assert [u.operation for u in got] == [op.id for op in expected]
    for u, op in zip(got, expected):
        assert (u.longest, u.seen_ended_after) == pytest.approx(scanned(op)), op


def test_the_guard_counts_the_operation_reads_under_the_names_the_simulator_records() -> None:
    """Found by the chaos soak: the guard looked for "Operations.Get", a name the simulator never
    records, so status polls told it nothing and only bulk walks (every resync) ended a gap."""
    from testbed.azuresim.recording import OperationRecord, RequestRecord, unobserved

    op = OperationRecord(id="op-1", vm="vm-1", resource_group="rg", action="start", origin="api", start=0.0, end=3.0,
                         status="Succeeded")
    path = "/subscriptions/s/providers/Microsoft.Compute/locations/l/operations/op-1"
    polls = [RequestRecord(time=t, method="GET", path=path, operation=name, vm=None, status=200)
             for t, name in ((0.0, OpName.START.value), (1.0, OpName.OPERATION_STATUS.value),
                             (2.0, OpName.OPERATION_STATUS.value), (3.5, OpName.OPERATION_RESULT.value))]
    (u,) = unobserved([op], polls, now=30.0)
    assert u.longest == 1.5 and u.seen_ended_after == 0.5
