"""Create -> started -> Running/Ready; flip to Deallocated. Real kopf, real SDK, HTTPS simulator."""

from __future__ import annotations

from testbed.sandbox import reason_of, wait_for
from tests.integration.conftest import Azure, Cluster, OperatorRunner, vm_id


def test_create_starts_the_vm_and_reports_ready(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    cluster.create("trainer", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running"})
    status = cluster.wait_reason("trainer", "Reconciled")
    assert azure.power("vm-1") == "running"
    assert status["powerState"] == "Running"
    assert status["provisioningState"] == "Succeeded"
    assert status["observedGeneration"] == 1 and status["convergedGeneration"] == 1
    assert status["vm"]["name"] == "vm-1" and status["vm"]["size"] == "Standard_NC24ads_A100_v4"
    assert status["lastOperation"]["action"] == "Start" and status["lastOperation"]["result"] == "Succeeded"
    assert status["lastOperation"]["trigger"] == "Spec"
    assert cluster.ready("trainer")[0] == "True"
    assert len(azure.power_requests("vm-1", "start")) == 1
    events = cluster.wait_events("trainer", "StartRequested", "Started")
    assert ("Normal", "StartRequested") in {(t, r) for t, r, _ in events}


def test_flip_to_deallocated(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    cluster.create("trainer", {"vm": {"resourceGroup": "rg-gpu", "name": "vm-running"}, "desiredState": "Running"})
    cluster.wait_reason("trainer", "Reconciled")
    assert azure.count("VirtualMachines.Start") == 0  # already running: nothing to do
    cluster.patch_spec("trainer", {"desiredState": "Deallocated"})
    status = cluster.wait_object(
        "trainer", lambda o: o["status"].get("observedGeneration") == 2 and reason_of(o) == "Reconciled")["status"]
    assert azure.power("vm-running") == "deallocated"
    assert status["powerState"] == "Deallocated"
    assert status["lastOperation"]["action"] == "Deallocate" and status["lastOperation"]["result"] == "Succeeded"
    assert status["convergedGeneration"] == 2
    assert azure.overlaps() == []


def test_twenty_rapid_flips_end_in_the_last_one_without_overlaps(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    cluster.create("flipper", {"vm": {"resourceId": vm_id("vm-2")}, "desiredState": "Deallocated"})
    cluster.wait_reason("flipper", "Reconciled")
    last = None
    for i in range(20):
        last = "Running" if i % 2 == 0 else "Deallocated"
        obj = cluster.patch_spec("flipper", {"desiredState": last})
    final_generation = obj["metadata"]["generation"]
    assert last == "Deallocated" and final_generation == 21
    cluster.wait_object(
        "flipper", lambda o: o["status"].get("observedGeneration") == final_generation and reason_of(o) == "Reconciled",
        timeout=60, what="convergence on the last flip",
    )
    assert azure.power("vm-2") == "deallocated"
    assert cluster.status("flipper")["powerState"] == "Deallocated"
    assert azure.overlaps() == []
    assert [r for r in azure.requests() if r.status == 409] == []


def test_restart_mid_start_resumes_without_a_duplicate(cluster: Cluster, azure: Azure, start_operator) -> None:
    first = start_operator()
    cluster.create("slow", {"vm": {"resourceId": vm_id("vm-slow")}, "desiredState": "Running"})
    wait_for(lambda: azure.snapshot("vm-slow").operation == "start", 30, what="the start to be in flight")
    wait_for(lambda: cluster.status("slow").get("lastOperation", {}).get("result") == "InProgress", 30)
    first.stop()
    assert azure.snapshot("vm-slow").operation == "start"  # still starting (it lasts until fast-forwarded)
    reads = len(azure.requests())
    start_operator()
    # The new operator looks at the VM while it is still starting, then the start ends.
    wait_for(lambda: any(r.operation in ("VirtualMachines.Get", "VirtualMachines.ListAll") and r.status == 200
                         for r in azure.requests()[reads:]), 30, what="the restarted operator to observe the VM")
    assert azure.snapshot("vm-slow").operation == "start"
    assert azure.call(lambda: azure.sim.fast_forward("vm-slow"))
    status = cluster.wait_reason("slow", "Reconciled")
    assert azure.power("vm-slow") == "running"
    assert len(azure.power_requests("vm-slow", "start")) == 1
    assert status["lastOperation"]["result"] == "Succeeded" and status["lastOperation"]["action"] == "Start"
    assert azure.overlaps() == []


def test_deletion_with_retain_leaves_the_vm(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    cluster.create("keep", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running", "deletionPolicy": "Retain"})
    cluster.wait_reason("keep", "Reconciled")
    assert "gpuvm.dev/finalizer" in cluster.get("keep")["metadata"]["finalizers"]
    cluster.delete("keep")
    wait_for(lambda: cluster.get("keep") is None, 30, what="the GpuVm to be gone")
    assert azure.power("vm-1") == "running"
    assert azure.power_requests("vm-1", "deallocate") == []


def test_deletion_with_deallocate_deallocates_first(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    cluster.create("tidy", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running", "deletionPolicy": "Deallocate"})
    cluster.wait_reason("tidy", "Reconciled")
    answer = cluster.delete("tidy")
    # Held by the finalizer while the VM deallocates: the apiserver answers with the object.
    assert answer["metadata"]["deletionTimestamp"] and "gpuvm.dev/finalizer" in answer["metadata"]["finalizers"]
    wait_for(lambda: cluster.get("tidy") is None, 30, what="the GpuVm to be gone")
    assert azure.power("vm-1") == "deallocated"
    assert len(azure.power_requests("vm-1", "deallocate")) == 1
    assert azure.overlaps() == []
