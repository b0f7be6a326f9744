"""Out-of-band power changes ("someone started it in the portal"): corrected or reported."""

from __future__ import annotations

from testbed.sandbox import wait_for
from tests.integration.conftest import Azure, Cluster, OperatorRunner, vm_id


def test_out_of_band_start_is_corrected_under_enforce(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    cluster.create("notebook", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Deallocated"})
    cluster.wait_reason("notebook", "Reconciled")
    azure.out_of_band("vm-1", "start")
    status = wait_for(
        lambda: cluster.status("notebook").get("lastOperation", {}).get("result") == "Succeeded"
        and cluster.reason("notebook") == "Reconciled"
        and cluster.status("notebook"),
        15,
        what="the drift to be corrected",
    )
    assert azure.power("vm-1") == "deallocated"
    assert status["lastOperation"]["trigger"] == "Drift" and status["lastOperation"]["action"] == "Deallocate"
    assert status["lastOperation"]["result"] == "Succeeded"
    assert azure.overlaps() == []  # it waited for the portal's start to settle before deallocating
    assert azure.power_requests("vm-1", "start") == []


def test_out_of_band_start_is_reported_under_report(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    cluster.create("notebook", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Deallocated", "driftPolicy": "Report"})
    cluster.wait_reason("notebook", "Reconciled")
    azure.out_of_band("vm-1", "start")
    wait_for(lambda: azure.power("vm-1") == "running", 10)
    wait_for(lambda: cluster.status("notebook").get("powerState") == "Running" and cluster.reason("notebook") == "Drifted", 15)
    ready = cluster.ready("notebook")
    assert ready[0] == "False" and "driftPolicy Report" in ready[2]
    assert azure.power_requests("vm-1", "deallocate") == []
    assert ("Warning", "Drifted") in {(t, r) for t, r, _ in cluster.events("notebook")}
    # A new desiredState is acted on even under Report.
    cluster.patch_spec("notebook", {"desiredState": "Running"})
    status = wait_for(lambda: cluster.status("notebook").get("observedGeneration") == 2 and cluster.reason("notebook") == "Reconciled"
                      and cluster.status("notebook"), 15)
    assert status["convergedGeneration"] == 2
    cluster.patch_spec("notebook", {"desiredState": "Deallocated"})
    wait_for(lambda: cluster.status("notebook").get("observedGeneration") == 3 and cluster.reason("notebook") == "Reconciled", 15)
    assert azure.power("vm-1") == "deallocated"
