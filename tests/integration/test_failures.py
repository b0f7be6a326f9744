"""Azure says no: capacity, quota, throttling, 5xx, busy VMs, missing VMs, permissions, identity."""

from __future__ import annotations

from testbed.sandbox import wait_for
from tests.integration.conftest import (
    READ_ONLY_TOKEN,
    RG,
    Azure,
    Cluster,
    OperatorRunner,
    replace_flag,
    vm_id,
)


def test_capacity_failure_then_success(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    azure.fault("op=start vm=vm-3 error=ZonalAllocationFailed times=1")
    cluster.create("batch", {"vm": {"resourceId": vm_id("vm-3")}, "desiredState": "Running"})
    status = wait_for(lambda: cluster.status("batch").get("startFailures") and cluster.status("batch"), 10, what="startFailures")
    assert status["startFailures"]["count"] == 1 and status["startFailures"]["lastCode"] == "ZonalAllocationFailed"
    assert "nextRetryAt" in status["startFailures"]
    assert status["lastOperation"]["result"] == "Failed"
    assert status["lastOperation"]["error"]["code"] == "ZonalAllocationFailed"
    status = cluster.wait_reason("batch", "Reconciled", timeout=15)
    assert "startFailures" not in status
    assert status["lastOperation"]["result"] == "Succeeded"
    assert len(azure.power_requests("vm-3", "start")) == 2
    reasons = [r for _, r, _ in cluster.events("batch")]
    assert "StartFailed" in reasons and "Started" in reasons


def test_quota_failure_is_reported_as_quota(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    azure.fault("op=start vm=vm-3 error=OperationNotAllowed")  # every start fails: the quota stays exceeded
    cluster.create("big", {"vm": {"resourceId": vm_id("vm-3")}, "desiredState": "Running"})
    status = cluster.wait_reason("big", "QuotaExceeded", timeout=10)
    assert status["startFailures"]["lastCode"] == "OperationNotAllowed"
    assert "quota increase" in cluster.ready("big")[2]
    wait_for(lambda: cluster.status("big")["startFailures"]["count"] >= 2, 10, what="a retry with back-off")
    assert azure.power("vm-3") == "deallocated"


def test_throttling_is_respected_then_recovers(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    azure.fault("kind=throttle op=start vm=vm-4 retry-after=1 times=1")
    cluster.create("t", {"vm": {"resourceId": vm_id("vm-4")}, "desiredState": "Running"})
    cluster.wait_reason("t", "Throttled", timeout=10)
    first = azure.power_requests("vm-4", "start")[0]
    cluster.wait_reason("t", "Reconciled", timeout=10)
    second = azure.power_requests("vm-4", "start")[1]
    assert (first.status, second.status) == (429, 202)
    assert second.time - first.time >= 1.0  # Retry-After honoured


def test_server_error_is_retried(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    azure.fault("kind=http op=start vm=vm-4 status=502 error=BadGateway times=1")
    cluster.create("t", {"vm": {"resourceId": vm_id("vm-4")}, "desiredState": "Running"})
    cluster.wait_reason("t", "AzureError", timeout=10)
    assert "BadGateway" in cluster.ready("t")[2]
    cluster.wait_reason("t", "Reconciled", timeout=10)
    assert [r.status for r in azure.power_requests("vm-4", "start")] == [502, 202]


def test_busy_vm_409_is_a_wait_not_an_error(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    azure.fault("kind=http op=start vm=vm-4 status=409 error=OperationNotAllowed times=1 message='Operation start is not allowed since another operation is in progress.'")
    cluster.create("t", {"vm": {"resourceId": vm_id("vm-4")}, "desiredState": "Running"})
    status = cluster.wait_reason("t", "Reconciled", timeout=10)
    assert [r.status for r in azure.power_requests("vm-4", "start")] == [409, 202]
    assert status["lastOperation"]["result"] == "Succeeded"
    assert "StartFailed" not in [r for _, r, _ in cluster.events("t")]


def test_missing_power_state_waits_for_a_definite_one(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    azure.fault("kind=no-power-state vm=vm-5 times=2")
    cluster.create("t", {"vm": {"resourceId": vm_id("vm-5")}, "desiredState": "Running"})
    cluster.wait_reason("t", "WaitingForTransition", timeout=10)
    assert "no power state" in cluster.ready("t")[2]
    assert cluster.status("t")["powerState"] == "Unknown"
    cluster.wait_reason("t", "Reconciled", timeout=10)
    assert len(azure.power_requests("vm-5", "start")) == 1


def test_missing_vm_and_resource_group(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    cluster.create("ghost", {"vm": {"resourceGroup": RG, "name": "vm-404"}, "desiredState": "Running"})
    cluster.create("lost", {"vm": {"resourceGroup": "rg-nope", "name": "vm-1"}, "desiredState": "Running"})
    cluster.wait_reason("ghost", "VmNotFound")
    cluster.wait_reason("lost", "VmNotFound")
    assert "VM vm-404 was not found in resource group rg-gpu" in cluster.ready("ghost")[2]
    assert "resource group rg-nope does not exist" in cluster.ready("lost")[2]
    assert cluster.status("ghost")["powerState"] == "Unknown"


def test_missing_permission_names_action_and_role(cluster: Cluster, azure: Azure, start_operator, operator_flags, world) -> None:
    flags = replace_flag(operator_flags, "--simulator-token-file", str(world.token_file(READ_ONLY_TOKEN)))
    start_operator(flags=flags)
    cluster.create("t", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running"})
    status = cluster.wait_reason("t", "AuthorizationFailed")
    message = cluster.ready("t")[2]
    assert "Microsoft.Compute/virtualMachines/start/action" in message
    assert "GpuVm Power Operator" in message
    assert status["powerState"] == "Deallocated"  # reads still work with this role
    assert "Traceback" not in message


def test_rejected_token(cluster: Cluster, azure: Azure, start_operator, operator_flags, world) -> None:
    flags = replace_flag(operator_flags, "--simulator-token-file", str(world.token_file("not-the-token")))
    start_operator(flags=flags)
    cluster.create("t", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running"})
    cluster.wait_reason("t", "AuthenticationFailed")
    message = cluster.ready("t")[2]
    assert "rejected the operator's token (InvalidAuthenticationToken)" in message
    assert "not-the-token" not in message


def test_no_credential_names_the_settings_to_provide(cluster: Cluster, azure: Azure, start_operator, operator_flags) -> None:
    flags = replace_flag(operator_flags, "--credential", "environment")
    start_operator(flags=flags, env={"AZURE_CLIENT_ID": "x"})
    cluster.create("t", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running"})
    cluster.wait_reason("t", "AuthenticationFailed")
    message = cluster.ready("t")[2]
    for setting in ("AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH"):
        assert setting in message
    assert "EnvironmentCredential authentication unavailable" not in message
    assert azure.requests() == []  # nothing reached Azure without a token


def test_a_throttled_status_poll_is_not_a_failed_operation(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    azure.fault("kind=throttle op=operationStatus retry-after=1 times=2")
    azure.fault("kind=http op=operationStatus status=503 error=ServiceUnavailable times=1")
    cluster.create("t", {"vm": {"resourceId": vm_id("vm-4")}, "desiredState": "Running"})
    status = cluster.wait_reason("t", "Reconciled", timeout=20)
    assert status["lastOperation"]["result"] == "Succeeded"
    assert len(azure.power_requests("vm-4", "start")) == 1  # followed to its end, never requested again
    assert "StartFailed" not in [r for _, r, _ in cluster.events("t")]
