"""The VM's tags are Azure's consent; one VM, one GpuVm."""

from __future__ import annotations

from testbed.sandbox import ready_of, reason_of, wait_for
from tests.integration.conftest import NO_TAG_WRITE_TOKEN, Azure, Cluster, OperatorRunner, replace_flag, vm_id


def test_vm_without_opt_in_tag_is_never_powered(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    cluster.create("t", {"vm": {"resourceId": vm_id("vm-untagged")}, "desiredState": "Running"})
    refused = cluster.wait_object("t", lambda o: reason_of(o) == "NotManaged")
    assert 'add the Azure tag gpuvm-managed="true"' in ready_of(refused)[2]
    assert refused["status"]["powerState"] == "Deallocated"
    assert azure.power_requests("vm-untagged", "start") == []


def test_guard_can_be_disabled_explicitly(cluster: Cluster, azure: Azure, start_operator) -> None:
    start_operator(["--managed-tag", "none"])
    cluster.create("t", {"vm": {"resourceId": vm_id("vm-untagged")}, "desiredState": "Running"})
    cluster.wait_reason("t", "Reconciled")
    assert azure.power("vm-untagged") == "running"


def test_namespaces_tag_limits_who_drives_the_vm(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    cluster.namespace("research")
    cluster.create("t", {"vm": {"resourceId": vm_id("vm-research")}, "desiredState": "Running"})
    refused = cluster.wait_object("t", lambda o: reason_of(o) == "NamespaceNotAllowed")
    assert 'does not include namespace "ml"' in ready_of(refused)[2]
    assert azure.power_requests("vm-research", "start") == []
    cluster.delete("t")
    wait_for(lambda: cluster.get("t") is None, 30)
    cluster.create("t", {"vm": {"resourceId": vm_id("vm-research")}, "desiredState": "Running"}, ns="research")
    cluster.wait_reason("t", "Reconciled", ns="research")
    assert azure.power("vm-research") == "running"


def test_the_newer_of_two_gpuvms_for_one_vm_never_acts(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    cluster.namespace("other")
    cluster.create("first", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running"})
    cluster.wait_reason("first", "Reconciled")
    cluster.create("second", {"vm": {"resourceGroup": "rg-gpu", "name": "VM-1"}, "desiredState": "Deallocated"}, ns="other")
    second = cluster.wait_object("second", lambda o: reason_of(o) == "DuplicateVm", ns="other")
    assert "GpuVm ml/first already drives this VM" in ready_of(second)[2]
    assert azure.power("vm-1") == "running"
    assert azure.power_requests("vm-1", "deallocate") == []
    cluster.delete("first")
    cluster.wait_reason("second", "Reconciled", ns="other")  # the survivor takes over
    assert azure.power("vm-1") == "deallocated"


def test_cluster_claim_is_written_respected_and_released(cluster: Cluster, azure: Azure, start_operator) -> None:
    start_operator(["--cluster-name", "aks-prod-weu"])
    cluster.create("mine", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running"})
    cluster.wait_reason("mine", "Reconciled")
    assert azure.snapshot("vm-1").tags.get("gpuvm-owner") == "aks-prod-weu"
    cluster.wait_events("mine", "Claimed")
    # A VM another cluster claimed is left alone.
    azure.call(lambda: azure.sim.set_tags("vm-2", {"gpuvm-managed": "true", "gpuvm-owner": "aks-dev-neu"}))
    cluster.create("theirs", {"vm": {"resourceId": vm_id("vm-2")}, "desiredState": "Running"})
    theirs = cluster.wait_object("theirs", lambda o: reason_of(o) == "DuplicateVm")
    assert 'claimed by cluster "aks-dev-neu"' in ready_of(theirs)[2]
    assert azure.power_requests("vm-2", "start") == []
    # Deleting ours releases the claim (the VM stays as it is: deletionPolicy Retain).
    cluster.delete("mine")
    wait_for(lambda: cluster.get("mine") is None, 30)
    assert "gpuvm-owner" not in azure.snapshot("vm-1").tags
    assert azure.power("vm-1") == "running"


def test_claim_needs_tags_write(cluster: Cluster, azure: Azure, start_operator, operator_flags, world) -> None:
    flags = replace_flag(operator_flags, "--simulator-token-file", str(world.token_file(NO_TAG_WRITE_TOKEN)))
    start_operator(["--cluster-name", "aks-prod-weu"], flags=flags)
    cluster.create("t", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running"})
    denied = cluster.wait_object("t", lambda o: reason_of(o) == "AuthorizationFailed")
    assert "Microsoft.Resources/tags/write" in ready_of(denied)[2]
    assert azure.power_requests("vm-1", "start") == []
