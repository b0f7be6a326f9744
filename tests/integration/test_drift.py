"""Out-of-band power changes ("someone started it in the portal"): corrected or reported."""

from __future__ import annotations

from testbed.sandbox import reason_of, ready_of, wait_for
from tests.integration.conftest import Azure, Cluster, OperatorRunner, vm_id


def test_out_of_band_start_is_corrected_under_enforce(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    cluster.create("notebook", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Deallocated"})
    cluster.wait_reason("notebook", "Reconciled")
    azure.out_of_band("vm-1", "start")
    status = cluster.wait_object(
        "notebook",
        lambda o: (o.get("status") or {}).get("lastOperation", {}).get("result") == "Succeeded"
        and reason_of(o) == "Reconciled",
        what="the drift to be corrected",
    )["status"]
    assert azure.power("vm-1") == "deallocated"
    assert status["lastOperation"]["trigger"] == "Drift" and status["lastOperation"]["action"] == "Deallocate"
    assert status["lastOperation"]["result"] == "Succeeded"
    assert azure.overlaps() == []  # it waited for the portal's start to settle before deallocating
    assert azure.power_requests("vm-1", "start") == []


def test_out_of_band_start_is_reported_under_report(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    cluster.create("notebook", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Deallocated", "driftPolicy": "Report"})
    cluster.wait_reason("notebook", "Reconciled")
    azure.out_of_band("vm-1", "start")
    wait_for(lambda: azure.power("vm-1") == "running", 30)
    drifted = cluster.wait_object(
        "notebook", lambda o: o["status"].get("powerState") == "Running" and reason_of(o) == "Drifted", what="Drifted")
    ready = ready_of(drifted)
    assert ready[0] == "False" and "driftPolicy Report" in ready[2]
    assert ("Warning", "Drifted") in {(t, r) for t, r, _ in cluster.wait_events("notebook", "Drifted")}
    assert azure.power_requests("vm-1", "deallocate") == []
    # A new desiredState is acted on even under Report.
    cluster.patch_spec("notebook", {"desiredState": "Running"})
    status = cluster.wait_object(
        "notebook", lambda o: o["status"].get("observedGeneration") == 2 and reason_of(o) == "Reconciled")["status"]
    assert status["convergedGeneration"] == 2
    cluster.patch_spec("notebook", {"desiredState": "Deallocated"})
    cluster.wait_object("notebook", lambda o: o["status"].get("observedGeneration") == 3 and reason_of(o) == "Reconciled")
    assert azure.power("vm-1") == "deallocated"


def test_a_spec_edit_right_after_an_out_of_band_start_is_not_confirmed_by_an_older_look(
        cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    """Found by CI's soak: the new generation was marked reached on the fleet's cached observation
    from before the portal's start; the start then counted as drift, which Report leaves, and the
    VM kept running against the spec's last word. A generation is reached only on a look taken
    after it was seen, so the edit is acted on (trigger Spec). If the operator's walk happens to see
    the start before the edit, the same outcome follows by the older path."""
    cluster.create("notebook", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Deallocated", "driftPolicy": "Report"})
    cluster.wait_reason("notebook", "Reconciled")
    azure.out_of_band("vm-1", "start")
    cluster.patch_spec("notebook", {"idleTimeout": "30m"})  # a new generation, same desiredState
    status = cluster.wait_object(
        "notebook", lambda o: o["status"].get("convergedGeneration") == 2 and reason_of(o) == "Reconciled"
        and (o["status"].get("lastOperation") or {}).get("trigger") == "Spec", timeout=60, what="the edit acted on")["status"]
    assert status["lastOperation"]["action"] == "Deallocate" and status["lastOperation"]["result"] == "Succeeded"
    assert azure.power("vm-1") == "deallocated"
    assert azure.overlaps() == []


def test_a_spec_edit_during_an_operation_is_not_confirmed_by_the_operations_end(
        cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    """Found by CI's soak (the flake proof on c44d935, gv-007 again): the operator's deallocate had
    ended in Azure, a portal start followed, and a spec edit came while the operator had not yet
    learned of the end. When the operation's status said Succeeded, the VM was taken for
    Deallocated as of that moment and the edit's generation counted as reached; the next look
    (Running) was drift, which Report leaves. What an operation's end shows holds as of the
    operation, so the edit needs a look from after it and is acted on (trigger Spec)."""
    cluster.create("notebook", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running", "driftPolicy": "Report"})
    cluster.wait_reason("notebook", "Reconciled")
    # The operator learns nothing of its next operation until the faults go: no status polls, no walks.
    faults = [azure.fault("kind=http op=operationStatus status=500"), azure.fault("kind=http op=listAll status=500")]
    cluster.patch_spec("notebook", {"desiredState": "Deallocated"})
    wait_for(lambda: azure.power("vm-1") == "deallocated", 30, what="the deallocate done in Azure")
    azure.out_of_band("vm-1", "start")
    wait_for(lambda: azure.power("vm-1") == "running", 30, what="the portal's start")
    edited = cluster.patch_spec("notebook", {"idleTimeout": "30m"})["metadata"]["generation"]  # same desiredState
    for fault in faults:
        assert azure.call(lambda f=fault: azure.sim.remove_fault(f))
    wait_for(lambda: azure.power("vm-1") == "deallocated" and (o := cluster.get("notebook"))
             and o["status"].get("convergedGeneration") == edited and reason_of(o) == "Reconciled",
             60, what="the edit acted on: vm-1 deallocated again, the GpuVm Reconciled")
    assert [r.status for r in azure.power_requests("vm-1", "deallocate")] == [202, 202]
    status = cluster.status("notebook")
    assert status["lastOperation"]["trigger"] == "Spec" and status["powerState"] == "Deallocated"
    assert azure.overlaps() == []
