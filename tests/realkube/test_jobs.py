"""Jobs and the real operator on a real API server: gpuvm-claimer enforced, and the real GC.

A job's ServiceAccount is bound to the shipped ``gpuvm-claimer`` ClusterRole by a RoleBinding in
its namespace, as docs/api.md tells users to; its token is minted by the TokenRequest API and
``gpuvm-operator claim`` runs as a real subprocess with it, against the real operator (itself
running as its ServiceAccount). The API server's audit log records each request of the job with
the answer it got, so the role is compared with what the wrapper really sends, both ways (this
replaces the emulator run with an operator stand-in of tests/deploy/test_claimer_rbac.py, issue
27). And a claim owned by a Pod goes with the Pod by the real kube-controller-manager's garbage
collector, after which the operator lets the VM go.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from controller.claimer import USER_AGENT
from controller.demand import CLAIM_PLURAL
from controller.gpuvm import GROUP, PLURAL, VERSION
from testbed.azuresim import SimulatorConfig
from testbed.controlplane import ControlPlane
from testbed.kubeemu.access import Access
from testbed.realcluster import audited, role_binding, service_account, service_account_token
from testbed.sandbox import Cluster, OperatorRunner, ready_of, wait_for
from tests.deploy.conftest import denied, render, unused
from tests.deploy.test_claimer_rbac import JOB, claimer_grants
from tests.integration.conftest import FAST
from tests.realkube.operated import World, audit_log, clean_up, gpuvm, installed, owner_pod, vms

CLI = str(Path(sys.executable).parent / "gpuvm-operator")
JOB_SA = JOB[1]  # the ServiceAccount the RoleBinding of tests/deploy/test_claimer_rbac.py binds
STUCK_VM = "vm-stuck"


@pytest.fixture(scope="module")
def world(world_factory: Callable[..., World], admin_api: client.ApiClient) -> World:
    installed(admin_api, "default")
    made = world_factory(vms=vms("vm-a100", "vm-job", "vm-pod", "vm-gc", STUCK_VM),
                         simulator=SimulatorConfig(timings=FAST, retry_after=0.05))
    assert made.azure is not None
    # Azure never has capacity for this one: every start fails, the GpuVm never becomes Ready.
    made.azure.fault(f"op=start vm={STUCK_VM} error=AllocationFailed")
    return made


@pytest.fixture(scope="module")
def operator(world: World) -> OperatorRunner:
    return world.start_operator()


@dataclass
class Job:
    """A namespace with a job's ServiceAccount bound to gpuvm-claimer, and its token kubeconfig."""

    namespace: str
    user: str
    kubeconfig: Path
    admin: Cluster

    def env(self, **extra: str) -> dict[str, str]:
        """The wrapper's environment: the job's kubeconfig; no Pod unless ``extra`` says so."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("POD_", "KUBERNETES_"))}
        env.update(KUBECONFIG=str(self.kubeconfig), PYTHONUNBUFFERED="1", **extra)
        return env

    def claims(self) -> list[dict[str, Any]]:
        return self.admin.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, CLAIM_PLURAL)["items"]

    def requests(self, log: Path) -> list[tuple[Access, int]]:
        """What the wrapper (its User-Agent) asked the API server as the job, with the answers."""
        agent = USER_AGENT.split("/")[0] + "/"
        return [(a, code) for a, code in audited(log, self.user) if a.user_agent.startswith(agent)]


@pytest.fixture(scope="module")
def job(control_plane: ControlPlane, admin_api: client.ApiClient, world: World, operator: OperatorRunner,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Job]:
    import uuid

    namespace = f"job-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(admin_api)
    core.create_namespace({"metadata": {"name": namespace}})
    service_account(admin_api, namespace, JOB_SA)
    role_binding(admin_api, namespace, "trainer-gpuvm", cluster_role="gpuvm-claimer", service_account=JOB_SA)
    token = service_account_token(admin_api, namespace, JOB_SA)
    kubeconfig = control_plane.token_kubeconfig(tmp_path_factory.mktemp("job") / "kubeconfig", token, namespace=namespace)
    admin = Cluster(config.new_client_from_config(str(control_plane.kubeconfig)), namespace=namespace)
    try:
        yield Job(namespace, f"system:serviceaccount:{namespace}:{JOB_SA}", kubeconfig, admin)
        clean_up(admin, namespace)
    finally:
        admin.close()
        core.delete_namespace(namespace)


def wait_no_claims(job: Job) -> None:
    wait_for(lambda: job.claims() == [], 30, interval=0.1, what="the wrapper's claim deleted")


# ------------------------------------------------------------------ the job, end to end


def test_a_job_as_gpuvm_claimer_gets_its_vm_from_the_real_operator_but_cannot_switch_one(
    job: Job, world: World, tmp_path: Path
) -> None:
    assert world.azure is not None
    gpuvm(job.admin, "a10", "vm-job", idleTimeout="0s")
    seen = tmp_path / "seen"
    # The command looks, as the job, at the GpuVm it was given: running when the command starts.
    script = (
        "import sys; from kubernetes import client, config\n"
        "api = client.CustomObjectsApi(config.new_client_from_config())\n"
        f"vm = api.get_namespaced_custom_object({GROUP!r}, {VERSION!r}, {job.namespace!r}, {PLURAL!r}, 'a10')\n"
        f"open({str(seen)!r}, 'w').write(vm['status']['powerState'])\n"
        "print('training'); sys.exit(7)\n"
    )
    done = subprocess.run([CLI, "claim", "a10", "-n", job.namespace, "--timeout", "90s", "--", sys.executable, "-c", script],
                          env=job.env(), capture_output=True, text=True, timeout=150)
    assert done.returncode == 7, done.stderr
    assert done.stdout == "training\n"
    assert seen.read_text() == "Running"
    assert done.stderr.splitlines()[-1] == "gpuvm-claim a10: VmRunning: the VM of GpuVm a10 is running"
    wait_no_claims(job)
    wait_for(lambda: world.azure.power("vm-job") == "deallocated", 60, interval=0.1, what="the VM idle and off")

    # The same identity wants VMs; it never switches one, nor writes what only the operator writes.
    with config.new_client_from_config(str(job.kubeconfig)) as api:
        custom = client.CustomObjectsApi(api)
        refused = {
            "patch a GpuVm's spec": lambda: custom.patch_namespaced_custom_object(
                GROUP, VERSION, job.namespace, PLURAL, "a10", {"spec": {"desiredState": "Running"}}),
            "patch a GpuVm's status": lambda: custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, job.namespace, PLURAL, "a10", {"status": {"powerState": "Running"}}),
            "delete a GpuVm": lambda: custom.delete_namespaced_custom_object(GROUP, VERSION, job.namespace, PLURAL, "a10"),
            "claim in another namespace": lambda: custom.create_namespaced_custom_object(
                GROUP, VERSION, "default", CLAIM_PLURAL, {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuVmClaim",
                                                         "metadata": {"name": "x"}, "spec": {"gpuVm": "a10"}}),
        }
        for what, call in refused.items():
            with pytest.raises(client.ApiException) as e:
                call()
            assert e.value.status == 403, f"{what}: {e.value.status} {e.value.reason}"
        assert custom.get_namespaced_custom_object(GROUP, VERSION, job.namespace, PLURAL, "a10")["spec"]["desiredState"] == "Auto"
    assert world.azure.power("vm-job") == "deallocated"


def test_the_job_hears_when_its_claim_stops_counting(job: Job, world: World, tmp_path: Path) -> None:
    """The job's Pod is reported Failed while the command still runs (the kubelet's report of an
    OOM-killed container): the operator, through its watch of Pods labelled as claimants (list and
    watch on pods, as its role allows), releases the claim and lets the VM go; the wrapper, as
    the job, hears it on its claim's watch."""
    assert world.azure is not None
    gpuvm(job.admin, "pod-vm", "vm-pod", idleTimeout="0s")
    pod = owner_pod(job.admin, "train-1", labels={"gpuvm.dev/claimant": "true"})
    go_on = tmp_path / "go-on"
    proc = subprocess.Popen([CLI, "claim", "pod-vm", "--", sys.executable, "-c",
                             f"import os, time\nwhile not os.path.exists({str(go_on)!r}): time.sleep(0.05)"],
                            env=job.env(POD_NAME="train-1", POD_UID=pod["metadata"]["uid"], POD_NAMESPACE=job.namespace),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        (held,) = wait_for(lambda: [c for c in job.claims() if (ready_of(c) or ("",))[0] == "True"], 60, interval=0.1,
                           what="the job's claim Ready")
        name = held["metadata"]["name"]
        job.admin.pod_phase("train-1", "Failed")
        wait_for(lambda: (job.admin.claim_ready(name) or ("",))[0] == "Released", 60, interval=0.1, what="the claim released")
        wait_for(lambda: world.azure.power("vm-pod") == "deallocated", 60, interval=0.1,
                 what="the VM off while the command still runs")
        go_on.touch()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert ("gpuvm-claim pod-vm: OwnerFinished: owner Pod train-1 has finished (phase Failed); "
            "the claim no longer counts as demand") in err
    wait_no_claims(job)


# ------------------------------------------------------------------ gpuvm-claimer, enforced, compared with the requests


@pytest.fixture(scope="module")
def enforced_run(job: Job, world: World, control_plane: ControlPlane) -> tuple[list[dict[str, Any]], list[tuple[Access, int]]]:
    """The wrapper's three ways through, as the job, against the real operator: a lease renewed
    and let go; owned by its Pod; a VM that never comes (the wait times out)."""
    log = audit_log(control_plane)
    before = len(job.requests(log))
    gpuvm(job.admin, "a100", "vm-a100")
    gpuvm(job.admin, "stuck", STUCK_VM)
    env = job.env()
    workdir = Path(job.kubeconfig).parent

    # 1. held by a lease, renewed while the command runs (patch), then let go (delete)
    go_on = workdir / "go-on"
    proc = subprocess.Popen([CLI, "claim", "a100", "--lease", "2s", "--", sys.executable, "-c",
                             f"import os, time\nwhile not os.path.exists({str(go_on)!r}): time.sleep(0.05)"],
                            env=env, stderr=subprocess.PIPE, text=True)
    renewals: set[str] = set()

    def renewed() -> bool:
        renewals.update(c["spec"].get("renewTime", "") for c in job.claims())
        return len(renewals) >= 2

    try:
        wait_for(renewed, 60, interval=0.2, what="a lease renewal")
    finally:
        go_on.touch()
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    wait_no_claims(job)

    # 2. owned by its Pod, in the job's Pod (downward API)
    pod = owner_pod(job.admin, "job-x")
    done = subprocess.run([CLI, "claim", "a100", "--", "true"], capture_output=True, text=True, timeout=150,
                          env={**env, "POD_NAME": "job-x", "POD_UID": pod["metadata"]["uid"], "POD_NAMESPACE": job.namespace})
    assert done.returncode == 0, done.stderr
    wait_no_claims(job)

    # 3. a VM that never comes: the wait times out (and reads the claim's last state)
    done = subprocess.run([CLI, "claim", "stuck", "--timeout", "4s", "--", "true"], capture_output=True, text=True,
                          timeout=150, env=env)
    assert done.returncode == 124, done.stderr
    assert "AllocationFailed" in done.stderr, done.stderr
    wait_no_claims(job)
    return render("default"), job.requests(log)[before:]


def test_the_wrapper_needs_nothing_the_claimer_role_does_not_grant(enforced_run: Any, job: Job) -> None:
    objects, made = enforced_run
    assert made, "no request of the wrapper was audited"
    assert [(a, code) for a, code in made if code in (401, 403)] == [], "the real authorizer refused the wrapper"
    assert denied(claimer_grants(objects, job.namespace), {a for a, _ in made}) == []


def test_every_grant_is_used_but_the_two_kept_for_kubectl(enforced_run: Any, job: Job) -> None:
    objects, made = enforced_run
    idle = unused(claimer_grants(objects, job.namespace), [a for a, _ in made])
    via = f"ClusterRole/gpuvm-claimer (RoleBinding {job.namespace}/trainer-gpuvm)"
    assert idle == [f"{via}: list {GROUP}/{PLURAL}", f"{via}: watch {GROUP}/{PLURAL}"]


def test_the_wrappers_requests_spelled_out(enforced_run: Any, job: Job) -> None:
    _, made = enforced_run
    requests = [a for a, _ in made]
    kinds = {(a.verb, a.resource, a.subresource) for a in requests if a.is_resource_request}
    assert kinds == {
        ("get", PLURAL, ""),  # the GpuVm exists
        ("create", CLAIM_PLURAL, ""),
        ("list", CLAIM_PLURAL, ""),  # then watch from the list's resourceVersion
        ("watch", CLAIM_PLURAL, ""),
        ("patch", CLAIM_PLURAL, ""),  # the lease
        ("get", CLAIM_PLURAL, ""),  # the last state on a timeout
        ("delete", CLAIM_PLURAL, ""),
    }
    assert {a.namespace for a in requests if a.is_resource_request} == {job.namespace}
    watched = {a.name for a in requests if a.verb in ("list", "watch")}
    assert all(watched), "the wrapper lists and watches its own claim by name, never all claims"


# ------------------------------------------------------------------ the real garbage collector


def test_a_claim_owned_by_a_pod_is_collected_with_it_by_the_real_gc(cluster: Cluster, world: World) -> None:
    """No kubelet: the Pod's status says Running because the test patched it, as a kubelet would.
    The operator's role cannot delete claims: once the Pod is gone, only the GC can.

    Last in the module on purpose: the garbage collector learns of a new CRD's resources at its
    discovery resync (every 30 s), so a claim of a CRD installed moments ago waits for that."""
    assert world.azure is not None
    gpuvm(cluster, "gc", "vm-gc", idleTimeout="0s")
    pod = owner_pod(cluster, "train-0")
    cluster.claim("train-0-claim", "gc", owner=pod)
    wait_for(lambda: cluster.claim_ready("train-0-claim") == ("Bound", "True", "VmRunning", "the VM of GpuVm gc is running"),
             60, interval=0.1, what="the Pod's claim Ready")
    assert world.azure.power("vm-gc") == "running"
    cluster.core.delete_namespaced_pod("train-0", cluster.default_namespace)
    wait_for(lambda: cluster.get_claim("train-0-claim") is None, 90, interval=0.1,
             what="the claim deleted by kube-controller-manager's garbage collector")
    wait_for(lambda: world.azure.power("vm-gc") == "deallocated", 60, interval=0.1, what="the VM idle and off")
    assert (cluster.status("gc").get("demand") or {}).get("activeClaims", 0) == 0
