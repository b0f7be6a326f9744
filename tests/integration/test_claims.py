"""Demand with the real operator: GpuVmClaims, their liveness (owner Pods, leases, expiry), idle
deallocation, and the claim wrapper, against the emulator (garbage collector included) and the
Azure simulator."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.sandbox import Azure, Cluster, OperatorRunner, Sandbox, wait_for
from tests.integration.conftest import NS, vm_id

CLI = str(Path(sys.executable).parent / "gpuvm-operator")


@pytest.fixture
def operator(start_operator: Callable[..., OperatorRunner]) -> OperatorRunner:
    # Events before a switch-off: one second ahead, so the idle graces of a few seconds get one.
    return start_operator(["--deallocation-warning", "1"])


def auto(cluster: Cluster, name: str, vm: str, *, idle: str = "2s", **spec: Any) -> None:
    cluster.create(name, {"vm": {"resourceId": vm_id(vm)}, "desiredState": "Auto", "idleTimeout": idle, **spec})


def demand(cluster: Cluster, name: str) -> dict[str, Any]:
    return cluster.status(name).get("demand") or {}


def requests(azure: Azure, vm: str, action: str) -> int:
    return len([r for r in azure.power_requests(vm, action) if r.status == 202])


def event_reasons(cluster: Cluster, name: str) -> set[str]:
    return {reason for _, reason, _ in cluster.events(name)}


def test_a_claim_starts_an_auto_vm_and_idle_switches_it_off(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    auto(cluster, "trainer", "vm-1")
    wait_for(lambda: demand(cluster, "trainer").get("decidedBy") == "Idle" and cluster.reason("trainer") == "Reconciled", 15)
    assert requests(azure, "vm-1", "start") == 0  # nothing wants it: a deallocated VM stays so
    cluster.claim("job-1", "trainer")
    wait_for(lambda: cluster.claim_ready("job-1") == ("Bound", "True", "VmRunning", "the VM of GpuVm trainer is running"), 20,
             what="the claim Ready")
    assert azure.power("vm-1") == "running"
    status = cluster.status("trainer")
    assert status["demand"]["decidedBy"] == "Claims" and status["demand"]["activeClaims"] == 1
    assert status["demand"]["claims"] == ["job-1"]
    assert status["lastOperation"]["trigger"] == "Claim"
    wait_for(lambda: "Bound" in event_reasons(cluster, "job-1"), 10, what="the claim's Bound Event")
    cluster.delete_claim("job-1")
    # Idle: kept running for idleTimeout, then switched off with the trigger Idle.
    idle = wait_for(lambda: demand(cluster, "trainer").get("deallocateAt") and demand(cluster, "trainer"), 10)
    assert idle["decidedBy"] == "Idle" and idle["activeClaims"] == 0 and idle.get("idleSince")
    wait_for(lambda: azure.power("vm-1") == "deallocated" and cluster.reason("trainer") == "Reconciled", 20,
             what="the idle switch-off")
    assert cluster.status("trainer")["lastOperation"]["trigger"] == "Idle"
    wait_for(lambda: "DeallocationScheduled" in event_reasons(cluster, "trainer"), 10, what="the warning Event")
    assert azure.overlaps() == []


def test_two_jobs_share_a_vm_the_first_to_finish_does_not_switch_it_off(
    cluster: Cluster, azure: Azure, operator: OperatorRunner
) -> None:
    auto(cluster, "shared", "vm-2", idle="1s")
    cluster.claim("first", "shared")
    cluster.claim("second", "shared")
    wait_for(lambda: all((cluster.claim_ready(n) or ("",))[0] == "Bound" and cluster.claim_ready(n)[1] == "True"
                         for n in ("first", "second")), 20, what="both claims Ready")
    assert requests(azure, "vm-2", "start") == 1 and demand(cluster, "shared")["activeClaims"] == 2
    cluster.delete_claim("first")
    wait_for(lambda: demand(cluster, "shared").get("activeClaims") == 1, 10)
    seen = azure.count("VirtualMachines.ListAll")
    wait_for(lambda: azure.count("VirtualMachines.ListAll") >= seen + 3, 15, what="three walks with one claim left")
    assert azure.power("vm-2") == "running" and requests(azure, "vm-2", "deallocate") == 0
    cluster.delete_claim("second")
    wait_for(lambda: azure.power("vm-2") == "deallocated", 20, what="switched off after the last claim")


def test_a_finished_owner_pod_releases_its_claim_at_once(
    cluster: Cluster, azure: Azure, start_operator: Callable[..., OperatorRunner]
) -> None:
    """The claimant Pod watch tells at once: claims are looked at again only every 300 s here."""
    start_operator(["--resync-interval", "300"])
    auto(cluster, "owned", "vm-3", idle="0s")
    pod = cluster.pod("train-7f2c-xk2p9", labels={"gpuvm.dev/claimant": "true"})
    cluster.claim("train-7f2c", "owned", owner=pod)
    wait_for(lambda: (cluster.claim_ready("train-7f2c") or ("", ""))[1] == "True", 20, what="the claim Ready")
    cluster.pod_phase("train-7f2c-xk2p9", "Failed")  # OOM-killed: the wrapper never deleted the claim
    wait_for(lambda: (cluster.claim_ready("train-7f2c") or ("",))[0] == "Released", 10, what="the claim Released")
    phase, ready, reason, message = cluster.claim_ready("train-7f2c")
    assert (ready, reason) == ("False", "OwnerFinished") and "train-7f2c-xk2p9 has finished (phase Failed)" in message
    wait_for(lambda: azure.power("vm-3") == "deallocated", 20, what="the VM switched off (idleTimeout 0s)")
    assert cluster.get_claim("train-7f2c") is not None  # released, not deleted: the Pod still exists


def test_an_unlabelled_owner_pod_is_read_and_deleting_the_owner_deletes_the_claim(
    cluster: Cluster, azure: Azure, operator: OperatorRunner
) -> None:
    auto(cluster, "gc", "vm-4", idle="0s")
    pod = cluster.pod("notebook-0")  # no claimant label: the operator reads it by a GET
    cluster.claim("notebook", "gc", owner=pod)
    wait_for(lambda: (cluster.claim_ready("notebook") or ("", ""))[1] == "True", 20, what="the claim Ready")
    cluster.pod_phase("notebook-0", "Succeeded")
    wait_for(lambda: (cluster.claim_ready("notebook") or ("",))[0] == "Released", 15, what="released by a GET within the resync")
    cluster.core.delete_namespaced_pod("notebook-0", NS)
    wait_for(lambda: cluster.get_claim("notebook") is None, 15, what="the claim garbage-collected with its owner")
    wait_for(lambda: azure.power("vm-4") == "deallocated", 20)


def test_a_lease_not_renewed_expires(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    auto(cluster, "leased", "vm-5", idle="0s")
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    cluster.claim("lease", "leased", leaseDurationSeconds=4, renewTime=now)
    wait_for(lambda: (cluster.claim_ready("lease") or ("", ""))[1] == "True", 20, what="the claim Ready")
    wait_for(lambda: (cluster.claim_ready("lease") or ("",))[0] == "Expired", 15, what="the lease lapsed")
    assert cluster.claim_ready("lease")[2] == "Expired"
    wait_for(lambda: "Expired" in event_reasons(cluster, "lease"), 10, what="the Expired Event")
    wait_for(lambda: azure.power("vm-5") == "deallocated", 20)


def test_demand_during_the_grace_cancels_the_switch_off(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    auto(cluster, "graceful", "vm-6", idle="30s")
    cluster.claim("a", "graceful")
    wait_for(lambda: (cluster.claim_ready("a") or ("", ""))[1] == "True", 20)
    cluster.delete_claim("a")
    wait_for(lambda: demand(cluster, "graceful").get("decidedBy") == "Idle", 10, what="the grace running")
    assert demand(cluster, "graceful").get("deallocateAt")
    cluster.claim("b", "graceful")
    wait_for(lambda: demand(cluster, "graceful").get("decidedBy") == "Claims" and (cluster.claim_ready("b") or ("", ""))[1] == "True", 10)
    assert "deallocateAt" not in demand(cluster, "graceful") and requests(azure, "vm-6", "deallocate") == 0
    assert requests(azure, "vm-6", "start") == 1  # it never went off: no second start


def test_claims_on_a_pinned_or_missing_gpuvm_say_why_they_wait(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    cluster.create("pinned", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Deallocated"})
    cluster.claim("waits", "pinned")
    cluster.claim("orphan", "nobody")
    wait_for(lambda: (cluster.claim_ready("waits") or ("", "", ""))[2] == "GpuVmNotAuto", 15)
    wait_for(lambda: cluster.claim_ready("orphan") == ("Pending", "False", "GpuVmNotFound", f"no GpuVm nobody in namespace {NS}"), 15)
    wait_for(lambda: demand(cluster, "pinned").get("activeClaims") == 1, 10, what="the pinned GpuVm to show its claim")
    assert demand(cluster, "pinned")["decidedBy"] == "Spec" and requests(azure, "vm-1", "start") == 0


# ------------------------------------------------------------------ the job's side, end to end


def kubeconfig(world: Sandbox, tmp_path: Path) -> Path:
    assert world.cluster is not None
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emu",
        "clusters": [{"name": "emu", "cluster": {"server": world.cluster.url}}],
        "users": [{"name": "job", "user": {}}],
        "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "job", "namespace": NS}}],
    }))
    return path


def wrapper_env(world: Sandbox, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POD_", "KUBERNETES_"))}
    env["KUBECONFIG"] = str(kubeconfig(world, tmp_path))
    return env


def test_the_claim_wrapper_runs_the_command_once_the_vm_is_ready(
    world: Sandbox, cluster: Cluster, azure: Azure, operator: OperatorRunner, tmp_path: Path
) -> None:
    auto(cluster, "wrapped", "vm-2", idle="0s")
    marker = tmp_path / "ran"
    done = subprocess.run(
        [CLI, "claim", "wrapped", "--timeout", "60s", "--", sys.executable, "-c",
         f"import pathlib, sys; pathlib.Path({str(marker)!r}).write_text('ran'); sys.exit(7)"],
        env=wrapper_env(world, tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 7, done.stderr  # the command's own exit status
    assert marker.read_text() == "ran"
    assert requests(azure, "vm-2", "start") == 1
    wait_for(lambda: cluster.custom.list_namespaced_custom_object("gpuvm.dev", "v1alpha1", NS, "gpuvmclaims")["items"] == [], 10,
             what="the claim deleted on exit")
    wait_for(lambda: azure.power("vm-2") == "deallocated", 20, what="idle switch-off after the job")


def test_a_wrapper_killed_hard_loses_its_lease(
    world: Sandbox, cluster: Cluster, azure: Azure, operator: OperatorRunner, tmp_path: Path
) -> None:
    auto(cluster, "killed", "vm-3", idle="0s")
    proc = subprocess.Popen([CLI, "claim", "killed", "--lease", "3s", "--", sys.executable, "-c",
                             "import time; time.sleep(600)"],
                            env=wrapper_env(world, tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for(lambda: azure.power("vm-3") == "running", 30, what="the VM started for the wrapper")
        claims = cluster.custom.list_namespaced_custom_object("gpuvm.dev", "v1alpha1", NS, "gpuvmclaims")["items"]
        assert len(claims) == 1
        os.killpg(proc.pid, signal.SIGKILL)  # the container killed: the wrapper and its command, no clean-up
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    name = claims[0]["metadata"]["name"]
    wait_for(lambda: (cluster.claim_ready(name) or ("",))[0] == "Expired", 20, what="the unrenewed lease expired")
    wait_for(lambda: azure.power("vm-3") == "deallocated", 20, what="the VM switched off without the job's help")


def test_a_restarted_operator_knows_the_claims_before_it_switches_an_auto_vm_off(
    cluster: Cluster, azure: Azure, start_operator: Callable[..., OperatorRunner]
) -> None:
    """kopf announces GpuVms and claims on separate watches: an Auto GpuVm decided before its
    claims arrive looks unclaimed, and with idleTimeout 0 it would be switched off under the job
    (the chaos soak found it after restarts and an HA takeover). Here kopf's first lists of the
    claims fail, so they come late; the operator must still leave the claimed VM running, while
    it does switch off an unclaimed Auto VM (which shows that it decided meanwhile)."""
    first = start_operator()
    auto(cluster, "trainer", "vm-1", idle="0s")
    auto(cluster, "spare", "vm-2", idle="0s")
    cluster.claim("job", "trainer")
    wait_for(lambda: (cluster.claim_ready("job") or ("", ""))[1] == "True", 20, what="the claim Ready")
    wait_for(lambda: cluster.reason("spare") == "Reconciled", 15)
    first.stop()
    azure.out_of_band("vm-2", "start")  # unclaimed and running: the restarted operator switches it off
    wait_for(lambda: azure.power("vm-2") == "running", 10)
    cluster.thread.run_sync(lambda: cluster.emulator.add_fault("kind=http status=503 resource=gpuvmclaims verb=list times=3"))
    start_operator()
    wait_for(lambda: azure.power("vm-2") == "deallocated", 30, what="the unclaimed Auto VM switched off")
    wait_for(lambda: cluster.thread.run_sync(lambda: cluster.emulator.faults.counts()).get("http", 0) >= 3, 30,
             what="the claims' lists failing three times")
    wait_for(lambda: (cluster.claim_ready("job") or ("", ""))[1] == "True" and demand(cluster, "trainer").get("activeClaims") == 1,
             20, what="the claim known to the restarted operator")
    assert requests(azure, "vm-1", "deallocate") == 0 and azure.power("vm-1") == "running"
    assert azure.overlaps() == []


def test_an_auto_gpuvm_moved_to_a_running_vm_idles_it_off_under_report(
    cluster: Cluster, azure: Azure, operator: OperatorRunner
) -> None:
    """The last operation was the old VM's: it must not make the new VM's power look like drift
    (found by the chaos soak: a GpuVm moved to a running VM stayed Drifted, the VM billing)."""
    azure.out_of_band("vm-1", "start")
    wait_for(lambda: azure.power("vm-1") == "running", 10)
    cluster.create("mover", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Deallocated", "driftPolicy": "Report",
                             "idleTimeout": "1s"})
    wait_for(lambda: azure.power("vm-1") == "deallocated" and cluster.reason("mover") == "Reconciled", 20)
    assert cluster.status("mover")["lastOperation"]["action"] == "Deallocate"  # vm-1's
    cluster.claim("job", "mover")
    azure.out_of_band("vm-2", "start")
    wait_for(lambda: azure.power("vm-2") == "running", 10)
    # Moved to the running vm-2 while a claim wants it running: converged without an operation.
    cluster.patch_spec("mover", {"desiredState": "Auto", "vm": {"resourceId": vm_id("vm-2")}})
    wait_for(lambda: (cluster.claim_ready("job") or ("", ""))[1] == "True" and cluster.reason("mover") == "Reconciled", 20)
    cluster.delete_claim("job")
    wait_for(lambda: azure.power("vm-2") == "deallocated", 20, what="vm-2 switched off after the idle grace")
    wait_for(lambda: cluster.reason("mover") == "Reconciled", 10)
    assert cluster.status("mover")["lastOperation"]["trigger"] == "Idle"
    assert requests(azure, "vm-2", "start") == 0
