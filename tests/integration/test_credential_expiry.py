"""A credential expires mid-run: AuthenticationFailed shows, a new token is put in place, and the
same operator process converges again within seconds — neither a restart nor the old token's
lifetime (an hour) nor the --denied-retry back-off (five minutes here) stands in the way."""

from __future__ import annotations

import os
import time

from testbed.sandbox import Azure, Cluster, reason_of, ready_of, settled, wait_for
from tests.integration.conftest import replace_flag, vm_id


def rotate(path, token: str) -> None:
    """Replace the token file's content atomically, as the kubelet updates a mounted secret."""
    staged = path.with_name(path.name + ".new")
    staged.write_text(token)
    os.replace(staged, path)


def test_an_expired_token_is_replaced_without_a_restart(cluster: Cluster, azure: Azure, start_operator, operator_flags, world) -> None:
    first = azure.call(azure.sim.issue_token)
    token_file = world.token_file(first)
    flags = replace_flag(replace_flag(operator_flags, "--simulator-token-file", str(token_file)), "--denied-retry", "300")
    operator = start_operator(flags=flags)
    cluster.create("t", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running"})
    cluster.wait_reason("t", "Reconciled")

    azure.call(lambda: azure.sim.expire_token(first))
    cluster.patch_spec("t", {"desiredState": "Deallocated"})
    failed = cluster.wait_object("t", lambda o: reason_of(o) == "AuthenticationFailed", what="AuthenticationFailed")
    message = ready_of(failed)[2]
    assert "rejected the operator's token (ExpiredAuthenticationToken)" in message and first not in message
    assert azure.power("vm-1") == "running"

    second = azure.call(lambda: azure.sim.issue_token(like=first))
    rotated_at = time.monotonic()
    rotate(token_file, second)
    done = cluster.wait_object("t", lambda o: settled(o) and o["status"]["observedGeneration"] == 2, timeout=60,
                               what="Reconciled with the new token")
    took = time.monotonic() - rotated_at
    assert azure.power("vm-1") == "deallocated" and done["status"]["lastOperation"]["action"] == "Deallocate"
    assert operator.alive  # the same process: no restart
    # Before the rotation every request was refused; after it, at most the first request of each
    # ARM client (compute, tags) meets a 401 with the token it had cached — and is retried at once.
    requests = azure.requests()
    before = [r for r in requests if r.time < rotated_at]
    after = [r for r in requests if r.time >= rotated_at]
    assert any(r.status == 401 and r.operation == "VirtualMachines.Deallocate" for r in before)
    assert len([r for r in after if r.status == 401]) <= 2, [(r.operation, r.status) for r in after]
    assert [r.status for r in after if r.operation == "VirtualMachines.Deallocate"] == [202]
    assert second not in str(cluster.status("t")) and first not in str(cluster.status("t"))
    print(f"converged {took:.1f} s after the token was rotated (--denied-retry 300)")


async def test_one_call_meets_the_expiry_and_retries_with_the_new_token(azure: Azure, tmp_path) -> None:
    """The adapter's ARM clients, alone: with no new token in the file, a call fails at once (one
    401, no loop); once the file holds a new one, a call meets one 401 with the cached token,
    asks the credential again (the file is re-read) and succeeds within that call."""
    from controller.azure_compute import AzureCompute, AzureFailureError, AzureSettings
    from controller.credentials import CredentialMode, CredentialSettings, build_credential
    from controller.gpuvm import VmRef
    from tests.integration.conftest import RG, SUB

    first = azure.call(azure.sim.issue_token)
    token_file = tmp_path / "token"
    token_file.write_text(first)
    credential = build_credential(CredentialSettings(mode=CredentialMode.SIMULATOR_TOKEN, simulator_token_file=str(token_file)))
    adapter = AzureCompute(credential, AzureSettings(endpoint=azure.sim.endpoint, ca_bundle=azure.sim.ca_file,
                                                     credential_scope="https://management.azure.com/.default",
                                                     credential_mode=CredentialMode.SIMULATOR_TOKEN))
    renewed: list[bool] = []
    adapter.on_token_renewed = lambda: renewed.append(True)
    vm = VmRef(SUB, RG, "vm-1")
    try:
        assert (await adapter.observe(vm)).power_state.value == "Deallocated"
        azure.call(lambda: azure.sim.expire_token(first))
        seen = len(azure.requests())
        try:
            await adapter.observe(vm)
            raise AssertionError("an expired token was accepted")
        except AzureFailureError as e:
            assert e.failure.code == "ExpiredAuthenticationToken" and first not in e.failure.message
        assert [r.status for r in azure.requests()[seen:]] == [401]  # the same token again is not retried
        rotate(token_file, azure.call(lambda: azure.sim.issue_token(like=first)))
        seen = len(azure.requests())
        assert (await adapter.observe(vm)).power_state.value == "Deallocated"
        # The cached (old) token meets its 401, the file gives the new one, the same call succeeds.
        assert [r.status for r in azure.requests()[seen:]] == [401, 200]
        assert renewed == [True]
    finally:
        await adapter.close()
