"""Bad input from both sides, through the real operator: never a crash, always a defined reason.

Kubernetes side: an apiserver without the CRD's validation (the emulator loaded with a
permissive copy of the real CRD, made here from deploy/crds) hands the operator GpuVms of any
shape. Azure side: the simulator answers like a broken gateway or proxy would (HTML pages,
truncated or empty JSON, redirects, VMs without properties, power codes nobody knows). Each
case ends in a Ready reason with a short readable message, a healthy GpuVm converges meanwhile,
and once the fault stops the GpuVm converges too. docs/reliability.md tabulates these cases.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from testbed.azuresim import SimVm
from testbed.kubeemu import KubeEmulator
from testbed.kubeemu.schema import StructuralSchema
from testbed.sandbox import Azure, Cluster, History, reason_of, ready_of, settled, wait_for
from testbed.serving import ServerThread
from tests.integration.conftest import CRDS, MANAGED, NS, RG, SUB, default_vms, replace_flag, vm_id

CRD = Path(__file__).parents[2] / "deploy" / "crds" / "gpuvms.gpuvm.dev.yaml"
MAX_MESSAGE = 1024  # what status keeps of a message (controller.status.MAX_MESSAGE)


def permissive_crd() -> dict:
    """The real GpuVm CRD as an apiserver without its validation would serve it: spec and
    status may be any JSON value, and spec may be missing."""
    crd = yaml.safe_load(CRD.read_text())
    version = crd["spec"]["versions"][0]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    schema.pop("required", None)
    schema["properties"]["spec"] = {"x-kubernetes-preserve-unknown-fields": True}
    schema["properties"]["status"] = {"x-kubernetes-preserve-unknown-fields": True}
    version["schema"]["openAPIV3Schema"] = schema
    return crd


@pytest.fixture
def lax(world) -> Iterator[Cluster]:
    """A second emulator serving the permissive CRD (and the other CRDs as they are)."""
    thread = ServerThread(KubeEmulator([*[p for p in CRDS if p.name != CRD.name], permissive_crd()]), name="lax-emulator").start()
    cluster = Cluster(thread, namespace=NS)
    cluster.namespace(NS)
    try:
        yield cluster
    finally:
        cluster.close()
        thread.stop()


def create_raw(cluster: Cluster, name: str, body_spec: object, *, with_spec: bool = True) -> None:
    body = {"apiVersion": "gpuvm.dev/v1alpha1", "kind": "GpuVm", "metadata": {"name": name}}
    if with_spec:
        body["spec"] = body_spec
    cluster.custom.create_namespaced_custom_object("gpuvm.dev", "v1alpha1", NS, "gpuvms", body)


HUGE = "x" * 1_000_000  # 1 MB: the apiserver's request limit is 3 MB, etcd's object limit 1.5 MB

# name -> (spec, or the marker NO_SPEC; the field InvalidSpec names; a fragment of its message)
NO_SPEC = object()
SPEC_CASES = {
    "no-spec": (NO_SPEC, "spec", "required"),
    "spec-string": ("Running", "spec", "must be an object, got string"),
    "spec-list": ([{"vm": "vm-1"}], "spec", "must be an object, got array"),
    "no-vm": ({"desiredState": "Running"}, "spec.vm", "required: give resourceId, or resourceGroup and name"),
    "vm-number": ({"vm": 7, "desiredState": "Running"}, "spec.vm", "must be an object with resourceId"),
    "id-number": ({"vm": {"resourceId": 42}}, "spec.vm.resourceId", "must be a string, got integer"),
    "name-null": ({"vm": {"resourceGroup": RG, "name": None}}, "spec.vm.name", "must be a string, got null"),
    "state-list": ({"vm": {"resourceId": vm_id("vm-2")}, "desiredState": ["Running"]}, "spec.desiredState",
                   "unsupported value \"['Running']\""),
    "state-object": ({"vm": {"resourceId": vm_id("vm-2")}, "desiredState": {"on": True}}, "spec.desiredState",
                     "unsupported value"),
    "policy-bool": ({"vm": {"resourceId": vm_id("vm-2")}, "driftPolicy": True}, "spec.driftPolicy", "unsupported value \"True\""),
    "huge-group": ({"vm": {"resourceGroup": HUGE, "name": "vm-2"}}, "spec.vm.resourceGroup", "(1000000 characters)"),
    "huge-state": ({"vm": {"resourceId": vm_id("vm-2")}, "desiredState": HUGE}, "spec.desiredState", "(1000000 characters)"),
    "unicode-name": ({"vm": {"resourceGroup": RG, "name": "vm-ü-😀"}}, "spec.vm.name", '"vm-ü-😀" is not a VM name'),
    "unicode-id": ({"vm": {"resourceId": vm_id("vm-2").replace("vm-2", "vm-２")}}, "spec.vm.resourceId", "is not a VM resource id"),
    "newline-group": ({"vm": {"resourceGroup": "rg\nDROP", "name": "vm-2"}}, "spec.vm.resourceGroup", '"rg DROP" is not'),
    "both-ways": ({"vm": {"resourceId": vm_id("vm-2"), "name": "vm-2"}}, "spec.vm", "not both"),
}


def test_gpuvms_that_bypass_the_schema_end_in_invalid_spec(lax: Cluster, azure: Azure, start_operator, operator_flags,
                                                          caplog) -> None:
    caplog.set_level(logging.WARNING)
    start_operator(flags=replace_flag(operator_flags, "--kube-server", lax.url))
    for name, (spec, _, _) in SPEC_CASES.items():
        create_raw(lax, name, spec, with_spec=spec is not NO_SPEC)
    # Extra fields are ignored, not refused: this one is served like any other.
    create_raw(lax, "extra-fields", {"vm": {"resourceId": vm_id("vm-5"), "zone": 3}, "desiredState": "Running",
                                     "colour": "blue", "vm2": {"name": "vm-6"}})
    lax.create("healthy", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running"})
    for name, (_, field, fragment) in SPEC_CASES.items():
        obj = lax.wait_object(name, lambda o: reason_of(o) == "InvalidSpec", what=f"{name} InvalidSpec")
        status, message = ready_of(obj)[0], ready_of(obj)[2]
        assert status == "False" and message.startswith(f"{field}: ") and fragment in message, (name, message)
        assert len(message) <= 300 and "\n" not in message and "Traceback" not in message, (name, len(message))
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    lax.wait_object("extra-fields", settled, what="extra-fields Reconciled")
    lax.wait_object("healthy", settled, what="the healthy GpuVm Reconciled")
    assert azure.power("vm-1") == azure.power("vm-5") == "running"
    assert azure.power_requests("vm-2", "start") == []  # no invalid spec led to an Azure call
    assert [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()] == []
    # Fixed, an invalid one converges like any other.
    lax.custom.patch_namespaced_custom_object("gpuvm.dev", "v1alpha1", NS, "gpuvms", "spec-string",
                                               {"spec": {"vm": {"resourceId": vm_id("vm-3")}, "desiredState": "Running"}})
    lax.wait_object("spec-string", settled, what="the fixed GpuVm Reconciled")
    assert azure.power("vm-3") == "running"


def test_status_garbage_is_rebuilt_not_trusted(lax: Cluster, azure: Azure, start_operator, operator_flags) -> None:
    """Whatever status an object carries (hand edits, an old version, another writer), the
    operator reads what it can, ignores the rest and writes a valid status."""
    garbage = {
        "conditions": 5,
        "convergedGeneration": True,
        "lastOperation": {"action": "Explode", "startedAt": "yesterday"},
        "startFailures": {"count": "many", "lastCode": 7, "nextRetryAt": "0001-01-01T00:00:00+14:00"},
        "powerState": {"nested": ["junk"]},
        "vm": "vm-1",
        "unknownField": "x" * 10_000,
    }
    for name, vm in (("garbage", "vm-2"), ("list-status", "vm-3")):
        lax.create(name, {"vm": {"resourceId": vm_id(vm)}, "desiredState": "Running"})
        lax.custom.patch_namespaced_custom_object_status(
            "gpuvm.dev", "v1alpha1", NS, "gpuvms", name, {"status": garbage if name == "garbage" else None})
    lax.custom.replace_namespaced_custom_object_status(
        "gpuvm.dev", "v1alpha1", NS, "gpuvms", "list-status",
        {**lax.get("list-status"), "status": ["not", "an", "object"]})
    start_operator(flags=replace_flag(operator_flags, "--kube-server", lax.url))
    for name, vm in (("garbage", "vm-2"), ("list-status", "vm-3")):
        obj = lax.wait_object(name, settled, what=f"{name} Reconciled")
        status = obj["status"]
        assert isinstance(status["conditions"], list) and status["convergedGeneration"] == 1
        assert status["lastOperation"]["action"] == "Start" and status["lastOperation"]["result"] == "Succeeded"
        assert status["powerState"] == "Running" and status["vm"]["name"] == vm
        assert azure.power(vm) == "running"
    # The status the operator left is one the real CRD's schema accepts, nothing pruned: the
    # operator owns status and wrote every key of it (the foreign one is gone).
    real = StructuralSchema.build(yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    obj = lax.get("garbage")
    assert "unknownField" not in obj["status"]
    assert real.prune(obj) == [] and real.validate(obj, only="status") == []


# ---- Azure answers that are malformed --------------------------------------------------------

# Each on its own VM: (VM, fault spec, the reason shown while it holds, a fragment of its message).
VM_FAULTS = [
    ("bad-1", "kind=html op=get status=502", "AzureError", "an HTML page, not ARM's JSON"),
    ("bad-2", "kind=truncated op=get", "AzureError", "could not be read (not valid JSON: cut short or empty)"),
    ("bad-3", "kind=empty op=get", "AzureError", "could not be read"),
    ("bad-4", "kind=redirect op=get status=307", "AzureError", "redirected a request about VM bad-4"),
    ("bad-5", "kind=no-properties op=get", "WaitingForTransition", "Azure reported no power state"),
    ("bad-6", "kind=power-code power=frozen op=get", "WaitingForTransition",
     "Azure reported PowerState/frozen, a power state this operator does not know"),
    ("bad-7", "kind=html op=start", "AzureError", "an HTML page, not ARM's JSON"),
    ("bad-8", "kind=empty op=start", "AzureError", "could not be read (no operation to follow)"),
    ("bad-9", "kind=redirect op=start", "AzureError", "with a redirect (302"),
    ("bad-10", "kind=html op=deallocate", "AzureError", "an HTML page, not ARM's JSON"),
]


@pytest.fixture
def azure_vms() -> list[SimVm]:
    vms = default_vms()
    vms += [SimVm(subscription_id=SUB, resource_group=RG, name=vm, tags=MANAGED,
                  power_state="running" if "deallocate" in fault else "deallocated") for vm, fault, _, _ in VM_FAULTS]
    return vms


def test_malformed_answers_about_one_vm(cluster: Cluster, azure: Azure, start_operator, caplog) -> None:
    caplog.set_level(logging.WARNING)
    histories: dict[str, History] = {}
    for vm, fault, _, _ in VM_FAULTS:
        azure.fault(f"{fault} vm={vm}")
        histories[vm] = cluster.history(vm)
    # VMs are read in bulk (list pages) where possible, so faults of single-VM reads strike only
    # where a VM is read alone. Here the list pages fail (a 500 each): after three failed walks the
    # operator reads every VM on its own, and meets each VM's own malformed answer.
    azure.fault("kind=http op=list,listAll status=500")
    try:
        start_operator()
        for vm, fault, _, _ in VM_FAULTS:
            cluster.create(vm, {"vm": {"resourceId": vm_id(vm)}, "desiredState": "Deallocated" if "deallocate" in fault else "Running"})
        cluster.create("healthy", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running"})
        for vm, fault, reason, fragment in VM_FAULTS:
            shown = histories[vm].wait(lambda o, r=reason, f=fragment: reason_of(o) == r and f in ready_of(o)[2],
                                       timeout=45, what=f"{vm} ({fault}): {reason} '{fragment}'")
            message = ready_of(shown)[2]
            assert len(message) <= MAX_MESSAGE and "\n" not in message and "Traceback" not in message and "<" not in message
        cluster.wait_object("healthy", settled, what="the healthy GpuVm Reconciled while the others fail")
        azure.call(azure.sim.clear_faults)
        for vm, fault, _, _ in VM_FAULTS:
            cluster.wait_object(vm, settled, timeout=60, what=f"{vm} Reconciled once '{fault}' stopped")
            assert azure.power(vm) == ("deallocated" if "deallocate" in fault else "running")
    finally:
        for history in histories.values():
            history.stop()
    assert azure.overlaps() == []
    # Not one traceback in the log, the SDK's own "failsafe deserialization" warning included.
    assert [r.getMessage()[:200] for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()] == []


def test_a_lost_answer_to_a_start_is_not_a_second_start(cluster: Cluster, azure: Azure, start_operator) -> None:
    """The connection closes after Azure accepted the start: the operator cannot know, looks
    again, finds the VM starting and waits for it; it never asks twice."""
    azure.fault("kind=lost-answer op=start vm=vm-4 times=1")
    start_operator()
    with cluster.history("t") as history:
        cluster.create("t", {"vm": {"resourceId": vm_id("vm-4")}, "desiredState": "Running"})
        history.wait(lambda o: reason_of(o) == "AzureError" and "could not reach Azure Resource Manager" in ready_of(o)[2])
    status = cluster.wait_reason("t", "Reconciled")
    assert azure.power("vm-4") == "running" and len(azure.power_requests("vm-4", "start")) == 1
    assert status["powerState"] == "Running"


@pytest.mark.parametrize("op", ["listAll", "operationStatus"])
def test_malformed_walks_and_status_polls(cluster: Cluster, azure: Azure, start_operator, op: str) -> None:
    """Faults on every bulk walk page, or on every operation status poll: the operator keeps
    converging GpuVms (per-VM reads stand in for the walk; a poll that cannot be read says
    nothing about the operation, which ends as Succeeded, requested once)."""
    kinds = ["html status=502", "truncated", "empty", "redirect status=307"]
    if op == "listAll":
        kinds += ["no-properties", "power-code power=frozen"]
    start_operator()
    for i, kind in enumerate(kinds, start=1):
        fault = azure.fault(f"kind={kind} op={op}")
        name = f"g{i}"
        cluster.create(name, {"vm": {"resourceId": vm_id(f"vm-{i}")}, "desiredState": "Running"})
        wait_for(lambda f=fault: [x["fired"] for x in azure.call(azure.sim.faults) if x["id"] == f] > [0], 30,
                 what=f"kind={kind} op={op} to strike (else the case proves nothing)")
        status = cluster.wait_object(name, settled, timeout=60, what=f"{name} Reconciled under kind={kind} op={op}")["status"]
        assert status["lastOperation"]["result"] == "Succeeded", (kind, status["lastOperation"])
        assert len(azure.power_requests(f"vm-{i}", "start")) == 1, kind
        assert azure.call(lambda f=fault: azure.sim.remove_fault(f))
    wait_for(lambda: all(settled(o) for o in cluster.all_objects()), 60, what="all Reconciled")
