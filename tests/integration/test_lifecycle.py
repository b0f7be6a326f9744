"""Create -> started -> Running/Ready; flip to Deallocated. Real kopf, real SDK, HTTPS simulator."""

from __future__ import annotations

from testbed.sandbox import wait_for
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
    reasons = wait_for(lambda: {r for _, r, _ in cluster.events("trainer")} >= {"StartRequested", "Started"} and cluster.events("trainer"))
    assert ("Normal", "StartRequested") in {(t, r) for t, r, _ in reasons}


def test_flip_to_deallocated(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    cluster.create("trainer", {"vm": {"resourceGroup": "rg-gpu", "name": "vm-running"}, "desiredState": "Running"})
    cluster.wait_reason("trainer", "Reconciled")
    assert azure.count("VirtualMachines.Start") == 0  # already running: nothing to do
    cluster.patch_spec("trainer", {"desiredState": "Deallocated"})
    wait_for(lambda: cluster.status("trainer").get("observedGeneration") == 2 and cluster.reason("trainer") == "Reconciled", 15)
    status = cluster.status("trainer")
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
    wait_for(
        lambda: cluster.status("flipper").get("observedGeneration") == final_generation
        and cluster.reason("flipper") == "Reconciled",
        20,
        what="convergence on the last flip",
    )
    assert azure.power("vm-2") == "deallocated"
    assert cluster.status("flipper")["powerState"] == "Deallocated"
    assert azure.overlaps() == []
    assert [r for r in azure.requests() if r.status == 409] == []


def test_restart_mid_start_resumes_without_a_duplicate(cluster: Cluster, azure: Azure, start_operator) -> None:
    first = start_operator()
    cluster.create("slow", {"vm": {"resourceId": vm_id("vm-slow")}, "desiredState": "Running"})
    wait_for(lambda: azure.snapshot("vm-slow").operation == "start", 10, what="the start to be in flight")
    wait_for(lambda: cluster.status("slow").get("lastOperation", {}).get("result") == "InProgress", 10)
    first.stop()
    assert azure.snapshot("vm-slow").operation == "start"  # still starting: the restart is mid-operation
    start_operator()
    status = cluster.wait_reason("slow", "Reconciled", timeout=20)
    assert azure.power("vm-slow") == "running"
    assert len(azure.power_requests("vm-slow", "start")) == 1
    assert status["lastOperation"]["result"] == "Succeeded" and status["lastOperation"]["action"] == "Start"
    assert azure.overlaps() == []


def test_deletion_with_retain_leaves_the_vm(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    cluster.create("keep", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running", "deletionPolicy": "Retain"})
    cluster.wait_reason("keep", "Reconciled")
    assert "gpuvm.dev/finalizer" in cluster.get("keep")["metadata"]["finalizers"]
    cluster.delete("keep")
    wait_for(lambda: cluster.get("keep") is None, 15, what="the GpuVm to be gone")
    assert azure.power("vm-1") == "running"
    assert azure.power_requests("vm-1", "deallocate") == []


def test_deletion_with_deallocate_deallocates_first(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    cluster.create("tidy", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running", "deletionPolicy": "Deallocate"})
    cluster.wait_reason("tidy", "Reconciled")
    cluster.delete("tidy")
    assert cluster.get("tidy") is not None  # held by the finalizer while the VM deallocates
    wait_for(lambda: cluster.get("tidy") is None, 15, what="the GpuVm to be gone")
    assert azure.power("vm-1") == "deallocated"
    assert len(azure.power_requests("vm-1", "deallocate")) == 1
    assert azure.overlaps() == []
