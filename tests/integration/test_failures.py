"""Azure says no: capacity, quota, throttling, 5xx, busy VMs, missing VMs, permissions, identity."""

from __future__ import annotations

from testbed.sandbox import ready_of, reason_of, settled, wait_for
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
    with cluster.history("batch") as history:  # the failed state lasts only until the retry
        cluster.create("batch", {"vm": {"resourceId": vm_id("vm-3")}, "desiredState": "Running"})
        status = history.wait(lambda o: (o.get("status") or {}).get("startFailures"), what="startFailures")["status"]
        assert status["startFailures"]["count"] == 1 and status["startFailures"]["lastCode"] == "ZonalAllocationFailed"
        assert "nextRetryAt" in status["startFailures"]
        assert status["lastOperation"]["result"] == "Failed"
        assert status["lastOperation"]["error"]["code"] == "ZonalAllocationFailed"
    status = cluster.wait_reason("batch", "Reconciled")
    assert "startFailures" not in status
    assert status["lastOperation"]["result"] == "Succeeded"
    assert len(azure.power_requests("vm-3", "start")) == 2
    cluster.wait_events("batch", "StartFailed", "Started")


def test_quota_failure_is_reported_as_quota(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    azure.fault("op=start vm=vm-3 error=OperationNotAllowed")  # every start fails: the quota stays exceeded
    cluster.create("big", {"vm": {"resourceId": vm_id("vm-3")}, "desiredState": "Running"})
    quota = cluster.wait_object("big", lambda o: reason_of(o) == "QuotaExceeded", what="QuotaExceeded")
    assert quota["status"]["startFailures"]["lastCode"] == "OperationNotAllowed"
    assert "quota increase" in ready_of(quota)[2]
    cluster.wait_object("big", lambda o: o["status"]["startFailures"]["count"] >= 2, what="a retry with back-off")
    assert azure.power("vm-3") == "deallocated"


def test_throttling_is_respected_then_recovers(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    azure.fault("kind=throttle op=start vm=vm-4 retry-after=1 times=1")
    with cluster.history("t") as history:  # Throttled lasts only for the Retry-After
        cluster.create("t", {"vm": {"resourceId": vm_id("vm-4")}, "desiredState": "Running"})
        history.wait(lambda o: reason_of(o) == "Throttled", what="Throttled")
    first = azure.power_requests("vm-4", "start")[0]
    cluster.wait_reason("t", "Reconciled")
    second = azure.power_requests("vm-4", "start")[1]
    assert (first.status, second.status) == (429, 202)
    assert second.time - first.time >= 1.0  # Retry-After honoured


def test_server_error_is_retried(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    azure.fault("kind=http op=start vm=vm-4 status=502 error=BadGateway times=1")
    with cluster.history("t") as history:  # AzureError lasts only until the retry
        cluster.create("t", {"vm": {"resourceId": vm_id("vm-4")}, "desiredState": "Running"})
        failed = history.wait(lambda o: reason_of(o) == "AzureError", what="AzureError")
    assert "BadGateway" in ready_of(failed)[2]
    cluster.wait_reason("t", "Reconciled")
    assert [r.status for r in azure.power_requests("vm-4", "start")] == [502, 202]


def test_busy_vm_409_is_a_wait_not_an_error(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    azure.fault("kind=http op=start vm=vm-4 status=409 error=OperationNotAllowed times=1 message='Operation start is not allowed since another operation is in progress.'")
    cluster.create("t", {"vm": {"resourceId": vm_id("vm-4")}, "desiredState": "Running"})
    status = cluster.wait_reason("t", "Reconciled")
    assert [r.status for r in azure.power_requests("vm-4", "start")] == [409, 202]
    assert status["lastOperation"]["result"] == "Succeeded"
    # Events are posted in order: with "Started" there, a StartFailed would be there too.
    assert "StartFailed" not in [r for _, r, _ in cluster.wait_events("t", "Started")]


def test_missing_power_state_waits_for_a_definite_one(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    azure.fault("kind=no-power-state vm=vm-5 times=2")
    with cluster.history("t") as history:  # lasts only for the two faulted reads
        cluster.create("t", {"vm": {"resourceId": vm_id("vm-5")}, "desiredState": "Running"})
        waiting = history.wait(lambda o: reason_of(o) == "WaitingForTransition", what="WaitingForTransition")
    assert "no power state" in ready_of(waiting)[2]
    assert waiting["status"]["powerState"] == "Unknown"
    cluster.wait_reason("t", "Reconciled")
    assert len(azure.power_requests("vm-5", "start")) == 1


def test_missing_vm_and_resource_group(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    cluster.create("ghost", {"vm": {"resourceGroup": RG, "name": "vm-404"}, "desiredState": "Running"})
    cluster.create("lost", {"vm": {"resourceGroup": "rg-nope", "name": "vm-1"}, "desiredState": "Running"})
    ghost = cluster.wait_object("ghost", lambda o: reason_of(o) == "VmNotFound")
    lost = cluster.wait_object("lost", lambda o: reason_of(o) == "VmNotFound")
    assert "VM vm-404 was not found in resource group rg-gpu" in ready_of(ghost)[2]
    assert "resource group rg-nope does not exist" in ready_of(lost)[2]
    assert ghost["status"]["powerState"] == "Unknown"


def test_missing_permission_names_action_and_role(cluster: Cluster, azure: Azure, start_operator, operator_flags, world) -> None:
    flags = replace_flag(operator_flags, "--simulator-token-file", str(world.token_file(READ_ONLY_TOKEN)))
    start_operator(flags=flags)
    cluster.create("t", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running"})
    denied = cluster.wait_object("t", lambda o: reason_of(o) == "AuthorizationFailed", what="AuthorizationFailed")
    status, message = denied["status"], ready_of(denied)[2]
    assert "Microsoft.Compute/virtualMachines/start/action" in message
    assert "GpuVm Power Operator" in message
    assert status["powerState"] == "Deallocated"  # reads still work with this role
    assert "Traceback" not in message


def test_rejected_token(cluster: Cluster, azure: Azure, start_operator, operator_flags, world) -> None:
    flags = replace_flag(operator_flags, "--simulator-token-file", str(world.token_file("not-the-token")))
    start_operator(flags=flags)
    cluster.create("t", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running"})
    message = ready_of(cluster.wait_object("t", lambda o: reason_of(o) == "AuthenticationFailed"))[2]
    assert "rejected the operator's token (InvalidAuthenticationToken)" in message
    assert "not-the-token" not in message


def test_no_credential_names_the_settings_to_provide(cluster: Cluster, azure: Azure, start_operator, operator_flags) -> None:
    flags = replace_flag(operator_flags, "--credential", "environment")
    start_operator(flags=flags, env={"AZURE_CLIENT_ID": "x"})
    cluster.create("t", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running"})
    message = ready_of(cluster.wait_object("t", lambda o: reason_of(o) == "AuthenticationFailed"))[2]
    for setting in ("AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH"):
        assert setting in message
    assert "EnvironmentCredential authentication unavailable" not in message
    assert azure.requests() == []  # nothing reached Azure without a token


def test_a_throttled_status_poll_is_not_a_failed_operation(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    azure.fault("kind=throttle op=operationStatus retry-after=1 times=2")
    azure.fault("kind=http op=operationStatus status=503 error=ServiceUnavailable times=1")
    cluster.create("t", {"vm": {"resourceId": vm_id("vm-4")}, "desiredState": "Running"})
    status = cluster.wait_reason("t", "Reconciled", timeout=45)
    assert status["lastOperation"]["result"] == "Succeeded"
    assert len(azure.power_requests("vm-4", "start")) == 1  # followed to its end, never requested again
    assert "StartFailed" not in [r for _, r, _ in cluster.wait_events("t", "Started")]


def test_a_share_of_all_requests_faulted_then_convergence(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    """The soak's fault mix in miniature (a quarter of all requests rather than a tenth, to bite
    within seconds): one chaos spec faults requests with 429, 500, 503, timeouts, drops, 409,
    capacity failures and missing power states while six GpuVms are created and flipped; once
    it stops, every GpuVm converges, with no overlapping operations."""
    chaos = azure.fault("kind=chaos p=0.25 seed=20261128 retry-after=0.2 delay=0.5")
    names = [f"vm-{i}" for i in range(1, 7)]
    for name in names:
        cluster.create(name, {"vm": {"resourceId": vm_id(name)}, "desiredState": "Running"})
    wait_for(lambda: sum(1 for n in names if azure.power(n) == "running") >= 3, 60, what="starts despite the faults")
    for name in names[::2]:
        cluster.patch_spec(name, {"desiredState": "Deallocated"})

    def drawn() -> dict[str, int]:
        return next(f.get("drawn", {}) for f in azure.call(azure.sim.faults) if f["id"] == chaos)

    wait_for(lambda: sum(drawn().values()) >= 10, 90, what="ten faulted requests")
    struck = drawn()
    azure.call(azure.sim.clear_faults)
    for i, name in enumerate(names):
        status = cluster.wait_object(name, lambda o: settled(o), timeout=90, what=f"{name} converged")["status"]
        assert status["powerState"] == ("Deallocated" if i % 2 == 0 else "Running")
        assert azure.power(name) == status["powerState"].lower()
    assert azure.overlaps() == []
    assert len(struck) >= 3, struck  # more than one kind of failure struck
