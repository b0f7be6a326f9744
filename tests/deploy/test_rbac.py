"""The shipped RBAC, derived from real calls and held to them both ways.

The real operator (kopf + the status writer) runs against the Kubernetes emulator, configured
from the *rendered* manifests (ConfigMap and Deployment env of each install), through a scenario
that makes every kind of call it has: watch, finalizer and annotation patches, status writes,
events, deletion under both deletion policies, and HA peering with a takeover. The emulator
records each request's RBAC attributes; then

  (a) every operator request must be allowed by the rendered roles bound to its ServiceAccount
      (and the defaults every authenticated client has, for discovery);
  (b) every (apiGroup, resource, verb) those roles grant must have been used.

The same is done for an AI job bound to ``gpuvm-requester``, and for the Azure custom role
against the Azure simulator, which enforces the role's actions per request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import kopf._core.engines.peering as kopf_peering
import pytest
from kubernetes import client

from testbed.azuresim import SimulatorConfig, SimVm, Timings
from testbed.azuresim.wire import REQUIRED_ACTION, OpName
from controller.check import CLAIM_ACTIONS
from controller.gpuvm import GROUP, PLURAL, VERSION
from controller.kube import OPERATOR_ACCESS, KubeAccess, peering_access
from testbed.kubeemu.access import Access, request_attributes
from testbed.sandbox import Cluster, Sandbox, free_port, probe, wait_for
from tests.deploy.conftest import (
    AZURE,
    OPERATOR_SA,
    Grant,
    denied,
    grants_for,
    named,
    of_kind,
    operator_accesses,
    operator_env,
    render,
    rule_allows,
    unused,
)

SUB = "3f2c1a7e-0d4b-4c52-9a51-6f0e1d2c3b4a"
RG = "rg-gpu"
NS = "ml"
MANAGED = {"gpuvm-managed": "true"}
FAST = Timings(start=0.3, deallocate=0.2, power_off=0.2, restart=0.2, hibernate=0.2)
TIMING_FLAGS = ("--resync-interval", "1", "--transition-poll", "0.2", "--operation-poll", "0.05",
                "--error-retry", "0.5", "--denied-retry", "1")
JOB_AGENT = "ai-job/1.0"


def vm_id(name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/{name}"


def vms() -> list[SimVm]:
    return [SimVm(subscription_id=SUB, resource_group=RG, name=f"vm-{i}", tags=MANAGED) for i in range(1, 9)] + [
        SimVm(subscription_id=SUB, resource_group=RG, name="vm-untagged")
    ]


def crds_of(objects: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The emulator serves exactly the CRDs an install brings: a missing one would show."""
    return of_kind(objects, "CustomResourceDefinition")


@pytest.fixture(scope="module")
def distinct_kopf_ids() -> Iterator[None]:
    """Each operator thread of one test process gets its own peer id (kopf uses host + pid)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kopf_peering, "detect_own_id", lambda manual: kopf_peering.Identity(f"test-{uuid.uuid4().hex[:8]}"))
        yield


def sandbox_for(objects: Sequence[Mapping[str, Any]], tmp: Path, *, simulator: SimulatorConfig | None = None) -> Sandbox:
    config = simulator or SimulatorConfig(timings=FAST, retry_after=0.05)
    return Sandbox(crds=crds_of(objects), simulator=config, vms=vms(), workdir=tmp, namespace=NS).start()


def flags(sb: Sandbox, *, token_file: Path | None = None) -> list[str]:
    out = sb.operator_flags(subscription=SUB, timing=TIMING_FLAGS)
    if token_file is not None:
        out[out.index("--simulator-token-file") + 1] = str(token_file)
    return out


def accesses(sb: Sandbox) -> frozenset[Access]:
    assert sb.cluster is not None
    emulator = sb.cluster.emulator
    return sb.cluster.thread.run_sync(emulator.access_log)


def settled(c: Cluster, name: str, generation: int = 1) -> bool:
    status = c.status(name)
    return c.reason(name) == "Reconciled" and status.get("observedGeneration") == generation


def wait_settled(c: Cluster, name: str, generation: int = 1, timeout: float = 60) -> None:
    try:
        wait_for(lambda: settled(c, name, generation), timeout)
    except AssertionError:
        raise AssertionError(f"{name} not Reconciled at generation {generation} within {timeout} s: {c.status(name)}") from None


def lifecycle(sb: Sandbox, prefix: str = "", vms: tuple[str, str, str] = ("vm-1", "vm-2", "vm-3")) -> None:
    """Every call kind of the operator: create, spec change, status, events, deletion x2."""
    c, az = sb.cluster, sb.azure
    assert c is not None and az is not None
    keep, drop, flip, refused = (f"{prefix}{n}" for n in ("keep", "drop", "flip", "refused"))
    c.create(keep, {"vm": {"resourceId": vm_id(vms[0])}, "desiredState": "Running", "deletionPolicy": "Retain"})
    c.create(drop, {"vm": {"resourceId": vm_id(vms[1])}, "desiredState": "Running", "deletionPolicy": "Deallocate"})
    c.create(flip, {"vm": {"resourceGroup": RG, "name": vms[2]}, "desiredState": "Deallocated"})
    c.create(refused, {"vm": {"resourceId": vm_id("vm-untagged")}, "desiredState": "Running"})
    for name in (keep, drop, flip):
        wait_settled(c, name)
    c.wait_reason(refused, "NotManaged")
    c.patch_spec(flip, {"desiredState": "Running"})
    wait_settled(c, flip, 2)
    c.wait_events(keep, "StartRequested", "Started")
    for name in (keep, drop, flip, refused):
        c.delete(name)
    for name in (keep, drop, flip, refused):
        wait_for(lambda name=name: c.get(name) is None, 60, what=f"{name} deleted")
    assert az.power(vms[0]) == "running"  # Retain
    assert az.power(vms[1]) == "deallocated"  # Deallocate
    claimed(sb, prefix, vms[2])


def claimed(sb: Sandbox, prefix: str, vm: str) -> None:
    """A job's claim on a GpuVm in Auto, owned by a Pod without the claimant label: the operator
    watches claims, writes their status and reads the owner Pod by a GET."""
    c = sb.cluster
    assert c is not None
    auto, job = f"{prefix}auto", f"{prefix}job"
    c.create(auto, {"vm": {"resourceId": vm_id(vm)}, "desiredState": "Auto", "idleTimeout": "0s"})
    pod = c.pod(f"{job}-pod")
    c.claim(job, auto, owner=pod)
    wait_for(lambda: (c.claim_ready(job) or ("", ""))[1] == "True", 30, what=f"{job} Ready")
    c.pod_phase(f"{job}-pod", "Succeeded")
    wait_for(lambda: (c.claim_ready(job) or ("",))[0] == "Released", 30, what=f"{job} released")
    c.core.delete_namespaced_pod(f"{job}-pod", c.default_namespace)
    wait_for(lambda: c.get_claim(job) is None, 30, what=f"{job} garbage-collected")
    c.delete(auto)
    wait_for(lambda: c.get(auto) is None, 20, what=f"{auto} deleted")


def ai_job(sb: Sandbox) -> None:
    """What an AI job bound to gpuvm-requester does: switch its VM on, wait for Ready, switch it off."""
    c = sb.cluster
    assert c is not None
    c.create("job-vm", {"vm": {"resourceId": vm_id("vm-5")}, "desiredState": "Deallocated"})
    wait_settled(c, "job-vm")
    configuration = client.Configuration()
    configuration.host = c.url
    with client.ApiClient(configuration) as api_client:
        api_client.user_agent = JOB_AGENT
        api = client.CustomObjectsApi(api_client)
        api.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "job-vm", {"spec": {"desiredState": "Running"}})
        api.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, watch=True, timeout_seconds=1,
                                          field_selector="metadata.name=job-vm", _preload_content=False).release_conn()
        wait_for(lambda: settled_obj(api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "job-vm")), 60,
                 what="the job's VM Ready")
        api.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
        api.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "job-vm", {"spec": {"desiredState": "Deallocated"}})
    c.delete("job-vm")
    wait_for(lambda: c.get("job-vm") is None, 60, what="job-vm deleted")


def settled_obj(obj: Mapping[str, Any]) -> bool:
    ready = [x for x in (obj.get("status") or {}).get("conditions") or [] if x.get("type") == "Ready"]
    return bool(ready) and ready[0]["status"] == "True" and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]


def assert_exact(objects: Sequence[Mapping[str, Any]], seen: set[Access]) -> list[Grant]:
    grants = grants_for(objects, OPERATOR_SA)
    assert seen, "no operator request was recorded"
    refused = denied(grants, seen)
    assert refused == [], "operator requests the shipped RBAC does not allow:\n" + "\n".join(map(str, refused))
    idle = unused(grants, seen)
    assert idle == [], "grants no operator request needed:\n" + "\n".join(idle)
    return grants


# ------------------------------------------------------------------ recordings (one run each)

@pytest.fixture(scope="module")
def standalone_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], frozenset[Access]]:
    """The default install: one operator, every namespace; plus an AI job."""
    objects = render("default")
    sb = sandbox_for(objects, tmp_path_factory.mktemp("standalone"))
    try:
        sb.start_operator(flags(sb), operator_env(objects, "gpuvm-operator"))
        lifecycle(sb)
        ai_job(sb)
        for op in sb.operators:
            op.stop()
        return objects, accesses(sb)
    finally:
        sb.stop()


@pytest.fixture(scope="module")
def ha_run(tmp_path_factory: pytest.TempPathFactory, distinct_kopf_ids: None) -> tuple[list[dict[str, Any]], frozenset[Access], dict[str, Any]]:
    """overlays/ha: both replicas as rendered, the lifecycle, then replica a stops and b takes over."""
    objects = render("ha")
    sb = sandbox_for(objects, tmp_path_factory.mktemp("ha"))
    try:
        c = sb.cluster
        assert c is not None
        for peering in of_kind(objects, "ClusterKopfPeering"):
            c.custom.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", dict(peering))
        a = sb.start_operator(flags(sb), operator_env(objects, "gpuvm-operator-a"))
        b_health = f"http://127.0.0.1:{free_port()}/healthz"  # a port of its own: says whether b is active
        b = sb.start_operator(flags(sb), {**operator_env(objects, "gpuvm-operator-b"), "GPUVM_RESUME_CONFIRM_SECONDS": "1",
                                          "GPUVM_LIVENESS": b_health})
        name = operator_env(objects, "gpuvm-operator-a")["GPUVM_PEERING"]

        def peers() -> dict[str, Any]:
            obj = c.custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name)
            return obj.get("status") or {}

        wait_for(lambda: len(peers()) == 2, 60, what="both replicas in the peering object")
        seen_peers = peers()
        lifecycle(sb)
        a.stop()  # a clean stop signs a off; b, the only live peer left, resumes at once
        lifecycle(sb, prefix="after-", vms=("vm-6", "vm-7", "vm-8"))
        # a comes back and b pauses; a GpuVm b knew is deleted meanwhile; when a leaves again, b
        # resumes and GETs what the re-list did not show it again (the peering role's `get`).
        c.create("paused-away", {"vm": {"resourceId": vm_id("vm-4")}, "desiredState": "Deallocated"})
        wait_settled(c, "paused-away")
        a = sb.start_operator(flags(sb), {**operator_env(objects, "gpuvm-operator-a"), "GPUVM_RESUME_CONFIRM_SECONDS": "1"})
        wait_for(lambda: len(peers()) == 2, 20, what="a back in the peering object")
        # Delete only once b has paused: a busy machine can leave b active for a few seconds after a
        # is back, and an active b handles the deletion itself and has nothing to GET later.
        wait_for(lambda: probe(b_health)["operator"]["active"] is False, 25, what="b to pause")
        c.delete("paused-away")
        wait_for(lambda: c.get("paused-away") is None, 20, what="paused-away deleted by a")
        a.stop()
        wait_for(lambda: any(x.verb == "get" and x.resource == PLURAL and x.name == "paused-away"
                             for x in operator_accesses(accesses(sb))), 30, what="b's GET of the GpuVm deleted while it paused")
        b.stop()
        return objects, accesses(sb), seen_peers
    finally:
        sb.stop()


@pytest.fixture(scope="module")
def namespaced_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], frozenset[Access]]:
    objects = render("namespaced")
    env = operator_env(objects, "gpuvm-operator")
    assert env["GPUVM_NAMESPACES"].split(",") == [NS], "the scenario runs in the namespace the overlay serves"
    sb = sandbox_for(objects, tmp_path_factory.mktemp("namespaced"))
    try:
        c = sb.cluster
        assert c is not None
        c.namespace("elsewhere")
        c.create("outside", {"vm": {"resourceId": vm_id("vm-4")}, "desiredState": "Running"}, ns="elsewhere")
        sb.start_operator(flags(sb), env)
        lifecycle(sb)
        assert c.status("outside", ns="elsewhere") == {}, "a namespaced operator touched another namespace"
        for op in sb.operators:
            op.stop()
        return objects, accesses(sb)
    finally:
        sb.stop()


# ------------------------------------------------------------------ the operator's RBAC

def test_default_install_rbac_is_exactly_what_the_operator_uses(standalone_run: Any) -> None:
    objects, log = standalone_run
    assert_exact(objects, operator_accesses(log))


def kinds_of(accesses: Iterable[KubeAccess]) -> set[tuple[str, str, str, str]]:
    return {(a.verb, a.group, a.resource, a.subresource) for a in accesses}


def recorded_kinds(log: Iterable[Access], *resources: str) -> set[tuple[str, str, str, str]]:
    return {(a.verb, a.api_group, a.resource, a.subresource) for a in operator_accesses(log)
            if a.is_resource_request and (not resources or a.resource in resources)}


def test_standalone_operator_calls(standalone_run: Any) -> None:
    """The recorded request kinds are exactly controller.kube.OPERATOR_ACCESS, the list
    `gpuvm-operator check` asks the API server about: what the ClusterRole comments claim."""
    _, log = standalone_run
    assert recorded_kinds(log) == kinds_of(OPERATOR_ACCESS) == {
        ("list", GROUP, PLURAL, ""),
        ("watch", GROUP, PLURAL, ""),
        ("patch", GROUP, PLURAL, ""),  # kopf: finalizer, progress annotations
        ("patch", GROUP, PLURAL, "status"),  # the operator's status writer
        ("create", "", "events", ""),
        ("list", GROUP, "gpuvmclaims", ""),  # kopf's watch of the claims
        ("watch", GROUP, "gpuvmclaims", ""),
        ("patch", GROUP, "gpuvmclaims", "status"),  # each claim's phase and Ready
        ("list", "", "pods", ""),  # the watch of claimant Pods (label selector)
        ("watch", "", "pods", ""),
        ("get", "", "pods", ""),  # an owner Pod without the claimant label
    }
    agents = {a.user_agent.split("/")[0] for a in operator_accesses(log) if a.subresource == "status"}
    assert agents == {"gpuvm-operator"}, "status is written by the operator's own client, not kopf"
    # Reads of single objects only for owner Pods; never an update or a delete of anything.
    assert not any(a.verb in ("update", "delete") or (a.verb == "get" and a.resource != "pods")
                   for a in operator_accesses(log) if a.is_resource_request)


def test_ha_rbac_is_exactly_what_peering_operators_use(ha_run: Any) -> None:
    objects, log, _ = ha_run
    grants = assert_exact(objects, operator_accesses(log))
    assert any(g.via.startswith("ClusterRole/gpuvm-operator-peering") for g in grants)
    name = operator_env(objects, "gpuvm-operator-a")["GPUVM_PEERING"]
    peering = peering_access(name, clusterwide=True)
    assert recorded_kinds(log, "clusterkopfpeerings") == kinds_of(a for a in peering if a.resource == "clusterkopfpeerings")
    assert recorded_kinds(log) == kinds_of(OPERATOR_ACCESS) | kinds_of(peering_access(name, clusterwide=True))


def test_ha_replicas_peer_with_distinct_priorities(ha_run: Any) -> None:
    objects, _, peers = ha_run
    priorities = sorted(p["priority"] for p in peers.values())
    rendered = sorted(int(operator_env(objects, d["metadata"]["name"])["GPUVM_PRIORITY"]) for d in of_kind(objects, "Deployment"))
    assert priorities == rendered == [90, 100]


def test_ha_peering_patch_is_limited_to_the_peering_object(ha_run: Any) -> None:
    objects, log, _ = ha_run
    name = operator_env(objects, "gpuvm-operator-a")["GPUVM_PEERING"]
    patches = {a.name for a in operator_accesses(log) if a.resource == "clusterkopfpeerings" and a.verb == "patch"}
    assert patches == {name}
    rule = next(r for r in named(objects, "ClusterRole", "gpuvm-operator-peering")["rules"] if "patch" in r["verbs"])
    assert rule["resourceNames"] == [name]
    other = Access("kopf/x", "patch", "kopf.dev", "clusterkopfpeerings", name="someone-elses")
    assert not rule_allows(rule, other)


def test_namespaced_rbac_is_exactly_what_the_operator_uses(namespaced_run: Any) -> None:
    objects, log = namespaced_run
    seen = operator_accesses(log)
    grants = assert_exact(objects, seen)
    assert all(g.namespace == NS for g in grants if not g.via.startswith("system:"))
    assert {a.namespace for a in seen if a.is_resource_request} == {NS}


# ------------------------------------------------------------------ gpuvm-requester

def requester_grants(objects: Sequence[Mapping[str, Any]], namespace: str = NS) -> list[Grant]:
    """gpuvm-requester as docs/install.md binds it: a RoleBinding in the job's namespace."""
    binding = {
        "kind": "RoleBinding",
        "metadata": {"name": "trainer-gpuvm", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gpuvm-requester"},
        "subjects": [{"kind": "ServiceAccount", "name": "trainer", "namespace": namespace}],
    }
    return grants_for([*objects, binding], ("ServiceAccount", "trainer", namespace))


def test_requester_role_allows_what_an_ai_job_does(standalone_run: Any) -> None:
    objects, log = standalone_run
    job = {a for a in log if a.user_agent == JOB_AGENT}
    grants = requester_grants(objects)
    assert {a.verb for a in job if a.is_resource_request} == {"get", "list", "watch", "patch"}
    assert denied(grants, job) == []
    assert unused(grants, job) == []


def test_requester_role_has_no_status_and_no_other_namespace(standalone_run: Any) -> None:
    objects, _ = standalone_run
    grants = requester_grants(objects)
    forbidden = [
        Access(JOB_AGENT, "patch", GROUP, PLURAL, "status", NS, "job-vm"),
        Access(JOB_AGENT, "update", GROUP, PLURAL, "status", NS, "job-vm"),
        Access(JOB_AGENT, "get", GROUP, PLURAL, "status", NS, "job-vm"),
        Access(JOB_AGENT, "update", GROUP, PLURAL, "", NS, "job-vm"),
        Access(JOB_AGENT, "create", GROUP, PLURAL, "", NS),
        Access(JOB_AGENT, "delete", GROUP, PLURAL, "", NS, "job-vm"),
        Access(JOB_AGENT, "patch", GROUP, PLURAL, "", "research", "other"),
        Access(JOB_AGENT, "list", GROUP, PLURAL, "", ""),  # all namespaces
        Access(JOB_AGENT, "create", "", "events", "", NS),
    ]
    assert denied(grants, forbidden) == sorted(forbidden)


# ------------------------------------------------------------------ request attributes

@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/apis/gpuvm.dev/v1alpha1/gpuvms", {}, ("list", GROUP, PLURAL, "", "", "")),
        ("GET", "/apis/gpuvm.dev/v1alpha1/gpuvms", {"watch": "true"}, ("watch", GROUP, PLURAL, "", "", "")),
        ("GET", "/apis/gpuvm.dev/v1alpha1/namespaces/ml/gpuvms", {"watch": "1", "fieldSelector": "metadata.name=a"},
         ("watch", GROUP, PLURAL, "", NS, "a")),
        ("GET", "/apis/gpuvm.dev/v1alpha1/namespaces/ml/gpuvms/a", {}, ("get", GROUP, PLURAL, "", NS, "a")),
        ("PATCH", "/apis/gpuvm.dev/v1alpha1/namespaces/ml/gpuvms/a/status", {}, ("patch", GROUP, PLURAL, "status", NS, "a")),
        ("PUT", "/apis/gpuvm.dev/v1alpha1/namespaces/ml/gpuvms/a", {}, ("update", GROUP, PLURAL, "", NS, "a")),
        ("POST", "/api/v1/namespaces/ml/events", {}, ("create", "", "events", "", NS, "")),
        ("DELETE", "/api/v1/namespaces/ml/events", {}, ("deletecollection", "", "events", "", NS, "")),
        ("DELETE", "/api/v1/namespaces/ml", {}, ("delete", "", "namespaces", "", "ml", "ml")),
        ("PUT", "/api/v1/namespaces/ml/finalize", {}, ("update", "", "namespaces", "finalize", "ml", "ml")),
        ("GET", "/api/v1/watch/namespaces/ml/configmaps", {}, ("watch", "", "configmaps", "", NS, "")),
        ("PATCH", "/apis/kopf.dev/v1/clusterkopfpeerings/p", {}, ("patch", "kopf.dev", "clusterkopfpeerings", "", "", "p")),
    ],
)
def test_request_attributes_like_the_apiserver(method: str, path: str, query: dict[str, str], expected: tuple[str, ...]) -> None:
    a = request_attributes(method, path, query)
    assert a.is_resource_request
    assert (a.verb, a.api_group, a.resource, a.subresource, a.namespace, a.name) == expected


@pytest.mark.parametrize("path", ["/api", "/api/v1", "/apis", "/apis/gpuvm.dev", "/apis/gpuvm.dev/v1alpha1", "/version", "/healthz"])
def test_discovery_is_non_resource(path: str) -> None:
    a = request_attributes("GET", path, {})
    assert not a.is_resource_request and a.path == path and a.verb == "get"


def test_access_log_is_bounded() -> None:
    from testbed.kubeemu.access import AccessLog

    log = AccessLog(limit=3)
    for i in range(10):
        log.record(Access("ua", "get", name=str(i)))
    log.record(Access("ua", "get", name="0"))
    assert len(log.snapshot()) == 3 and log.dropped == 7


# ------------------------------------------------------------------ Azure custom role

def role() -> dict[str, Any]:
    return json.loads((AZURE / "gpuvm-power-operator.role.json").read_text())


@pytest.mark.parametrize("claims", [False, True], ids=["no-claims", "claims"])
def test_azure_role_is_enough_and_used_against_the_simulator(tmp_path: Path, claims: bool) -> None:
    """The simulator refuses any action the token lacks (403 AuthorizationFailed naming it).
    The operator's lifecycle and then `gpuvm-operator check` (which reads the identity's own
    permissions) together use every action of the role."""
    actions = role()["Actions"]
    token = "sim-token-gpuvm-power-operator"
    objects = render("default")
    config = SimulatorConfig(timings=FAST, retry_after=0.05, restricted_tokens={token: actions})
    sb = sandbox_for(objects, tmp_path, simulator=config)
    try:
        extra = ["--cluster-name", "aks-test"] if claims else []
        operator_flags = [*flags(sb, token_file=sb.token_file(token)), *extra]
        env = operator_env(objects, "gpuvm-operator")
        sb.start_operator(operator_flags, env)
        lifecycle(sb)
        assert sb.azure is not None
        check = subprocess.run([sys.executable, "-m", "controller", "check", *operator_flags, "--resource-group", RG],
                               env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
        log = sb.azure.requests()
    finally:
        sb.stop()
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"OK   permissions at /subscriptions/{SUB}/resourceGroups/{RG}: the {5 + 2 * claims} actions" in check.stdout
    assert [(r.method, r.path, r.status) for r in log if r.status in (401, 403)] == []
    used = {REQUIRED_ACTION[OpName(r.operation)] for r in log if OpName(r.operation) in REQUIRED_ACTION}
    assert used <= set(actions)
    expected_idle = set() if claims else CLAIM_ACTIONS
    assert set(actions) - used == expected_idle, f"granted, not used: {set(actions) - used}"
