"""Status is level-triggered too: a status someone else rewrote is repaired, and the operator's own
writes never cause a second one. Real operator, real status subresource semantics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from testbed.sandbox import Cluster, History, OperatorRunner, free_port, scrape, settled, wait_for
from tests.integration.conftest import Azure, replace_flag, vm_id

FOREIGN = {
    "powerState": "Running",
    "conditions": [{
        "type": "Ready", "status": "False", "reason": "AuthenticationFailed", "message": "written by someone else",
        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1,
    }],
}


def writes(port: int) -> dict[str, float]:
    metrics = scrape(port)
    return {cause: metrics.get(f'gpuvm_status_writes_total{{cause="{cause}"}}', 0.0) for cause in ("change", "repair")}


def walks(port: int) -> float:
    return scrape(port).get('gpuvm_azure_reads_total{purpose="walk"}', 0.0)


def start_slow_resync(start_operator: Callable[..., OperatorRunner], operator_flags: list[str], port: int) -> OperatorRunner:
    """An operator that re-observes settled VMs only every 5 minutes: whatever repairs a status
    within seconds is the repair itself, not the periodic resync."""
    return start_operator(flags=[*replace_flag(operator_flags, "--resync-interval", "300"), "--metrics-port", str(port)])


def test_a_foreign_write_that_changes_ready_is_repaired_at_once(
    cluster: Cluster, start_operator: Callable[..., OperatorRunner], operator_flags: list[str]
) -> None:
    port = free_port()
    start_slow_resync(start_operator, operator_flags, port)
    cluster.create("idle", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Deallocated"})
    wait_for(lambda: settled(cluster.get("idle") or {}), 15, what="idle to settle")
    good = cluster.status("idle")
    cluster.patch_status("idle", FOREIGN)
    started = time.monotonic()
    wait_for(lambda: cluster.status("idle") == good, 10, what="the operator's status back")
    took = time.monotonic() - started
    assert took < 10  # far inside the 300 s resync interval: the foreign write woke it
    wait_for(lambda: writes(port)["repair"] >= 1, 10, what="the repair counted (after its answer, maybe after its watch event)")


def test_a_foreign_write_that_keeps_ready_is_repaired_too(
    cluster: Cluster, start_operator: Callable[..., OperatorRunner], operator_flags: list[str]
) -> None:
    port = free_port()
    start_slow_resync(start_operator, operator_flags, port)
    cluster.create("idle", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Deallocated"})
    wait_for(lambda: settled(cluster.get("idle") or {}), 15, what="idle to settle")
    good = cluster.status("idle")
    cluster.patch_status("idle", {"vm": {"size": "Standard_B1s"}, "startFailures": {
        "count": 3, "lastCode": "AllocationFailed", "nextRetryAt": "2030-01-01T00:00:00Z"}})
    wait_for(lambda: cluster.status("idle") == good, 10, what="the stale fields gone and the size back")


def test_two_writers_racing_end_with_the_operators_status(
    cluster: Cluster, azure: Azure, start_operator: Callable[..., OperatorRunner], operator_flags: list[str]
) -> None:
    port = free_port()
    start_operator(["--metrics-port", str(port)])
    cluster.create("contested", {"vm": {"resourceId": vm_id("vm-2")}, "desiredState": "Running"})
    wait_for(lambda: settled(cluster.get("contested") or {}), 15, what="contested to settle")
    good = cluster.status("contested")
    stop = threading.Event()
    rewrites = 0

    def rewrite() -> None:
        nonlocal rewrites
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not stop.is_set():
            cluster.patch_status("contested", FOREIGN)
            rewrites += 1
            stop.wait(0.2)

    script = threading.Thread(target=rewrite, name="rival status writer")
    script.start()
    script.join(30)
    assert not script.is_alive() and rewrites >= 10
    wait_for(lambda: cluster.status("contested") == good, 10, what="the operator's status after the rival stopped")
    assert azure.power_requests("vm-2", "start") and len(azure.power_requests("vm-2", "start")) == 1  # status only


def test_the_operators_own_writes_cause_no_second_write(
    cluster: Cluster, start_operator: Callable[..., OperatorRunner], operator_flags: list[str]
) -> None:
    port = free_port()
    start_operator(["--metrics-port", str(port)])  # resync 1 s: a walk and a look at every GpuVm each second
    with cluster.history("quiet") as history:
        cluster.create("quiet", {"vm": {"resourceId": vm_id("vm-3")}, "desiredState": "Deallocated"})
        quiet = wait_for(lambda: (o := cluster.get("quiet") or {}) and settled(o) and o, 15, what="quiet to settle")
        before = counted_writes(port, history, quiet)
        assert before == {"change": 1.0, "repair": 0.0}  # one write made it Ready
        cluster.patch_spec("quiet", {"desiredState": "Running"})
        running = wait_for(lambda: (o := cluster.get("quiet") or {}) and settled(o) and o["status"]["powerState"] == "Running"
                           and o, 15, what="quiet Running and settled")
        flip = counted_writes(port, history, running)
    # Starting, then Running — and a progress message ("start requested 0s ago") if a step fell
    # inside the 0.4 s start; never a repair: the watch events of its own writes are not foreign.
    assert flip["repair"] == 0.0 and 2 <= flip["change"] - before["change"] <= 3
    seen = walks(port)
    wait_for(lambda: walks(port) >= seen + 3, 15, what="three more bulk walks")
    assert writes(port) == flip  # settled: nothing written, however often it is looked at


def counted_writes(port: int, history: History, settled_object: dict[str, Any]) -> dict[str, float]:
    """The operator's write counter once it has counted every status the watch showed up to
    ``settled_object``: the watch event of a write can arrive before the operator, which counts a
    write when the API server's answer is back, has counted it (seen once under load)."""
    rv = settled_object["metadata"]["resourceVersion"]
    history.wait(lambda v: v["metadata"]["resourceVersion"] == rv, 15, what=f"version {rv} on the watch")
    statuses: list[Any] = []
    for version in history.versions:
        status = version.get("status")
        if status is not None and (not statuses or status != statuses[-1]):
            statuses.append(status)
        if version["metadata"]["resourceVersion"] == rv:
            break
    def caught_up() -> dict[str, float] | None:
        counted = writes(port)
        return counted if sum(counted.values()) >= len(statuses) else None

    return wait_for(caught_up, 15, what=f"the write counter to count the {len(statuses)} statuses the watch showed")
