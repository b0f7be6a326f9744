"""Bad specs: rejected by the apiserver through the real CRD, and reported when one gets through."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from testbed.kubeemu import KubeEmulator
from testbed.serving import ServerThread
from tests.integration.conftest import CRDS, NS, Azure, Cluster, replace_flag, vm_id

CRD = Path(__file__).parents[2] / "deploy" / "crds" / "gpuvms.gpuvm.dev.yaml"


def rejection(e: client.ApiException) -> tuple[int, str, list[str]]:
    import json

    body = json.loads(e.body)
    return e.status, body["reason"], [c.get("field") for c in body.get("details", {}).get("causes", [])]


def test_the_crd_makes_the_server_reject_an_invalid_desired_state(cluster: Cluster) -> None:
    # "<nil>": an enum error keeps the CRD's CEL rules from running, and the server says so.
    with pytest.raises(client.ApiException) as e:
        cluster.create("bad", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "On"})
    assert rejection(e.value) == (422, "Invalid", ["spec.desiredState", "<nil>"])
    cluster.create("good", {"vm": {"resourceId": vm_id("vm-1")}})
    with pytest.raises(client.ApiException) as e:
        cluster.patch_spec("good", {"desiredState": "Stopped"})
    assert rejection(e.value) == (422, "Invalid", ["spec.desiredState", "<nil>"])


def test_the_crd_rule_wants_one_way_to_name_the_vm(cluster: Cluster) -> None:
    with pytest.raises(client.ApiException) as e:
        cluster.create("both", {"vm": {"resourceId": vm_id("vm-1"), "name": "vm-1"}})
    status, reason, fields = rejection(e.value)
    assert (status, reason, fields) == (422, "Invalid", ["spec.vm"])
    assert "give either resourceId, or resourceGroup and name" in e.value.body
    with pytest.raises(client.ApiException) as e:
        cluster.create("half", {"vm": {"resourceGroup": "rg-gpu"}})
    assert rejection(e.value)[:2] == (422, "Invalid")
    with pytest.raises(client.ApiException) as e:
        cluster.create("badid", {"vm": {"resourceId": "/subscriptions/nope"}})
    assert rejection(e.value) == (422, "Invalid", ["spec.vm.resourceId"])


def test_the_crd_defaults_and_prunes(cluster: Cluster) -> None:
    obj = cluster.create("d", {"vm": {"resourceId": vm_id("vm-1")}, "colour": "blue"})
    assert obj["spec"] == {
        "vm": {"resourceId": vm_id("vm-1")},
        "desiredState": "Deallocated",
        "driftPolicy": "Enforce",
        "deletionPolicy": "Retain",
    }


def permissive_crd() -> dict:
    """The GpuVm CRD as an apiserver without validation would treat it: anything goes in spec."""
    crd = yaml.safe_load(CRD.read_text())
    version = crd["spec"]["versions"][0]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    schema["properties"]["spec"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    version["schema"]["openAPIV3Schema"] = schema
    return crd


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "On"}, "spec.desiredState"),
        ({"vm": {"resourceGroup": "rg-gpu"}, "desiredState": "Running"}, "spec.vm.name"),
        ({"desiredState": "Running"}, "spec.vm"),
    ],
)
def test_an_invalid_spec_that_gets_through_is_reported(azure: Azure, start_operator, operator_flags, spec: dict, field: str) -> None:
    crds = [p for p in CRDS if p.name != CRD.name]
    thread = ServerThread(KubeEmulator([*crds, permissive_crd()]), name="lax-emulator").start()
    lax = Cluster(thread, namespace=NS)
    try:
        lax.namespace(NS)
        start_operator(flags=replace_flag(operator_flags, "--kube-server", lax.url))
        lax.create("lax", spec)
        lax.wait_reason("lax", "InvalidSpec")
        message = lax.ready("lax")[2]
        assert message.startswith(f"{field}:")
        assert "Traceback" not in message
        assert azure.requests() == []
        lax.patch_spec("lax", {"vm": {"resourceId": vm_id("vm-1"), "resourceGroup": None, "name": None}, "desiredState": "Running"})
        lax.wait_reason("lax", "Reconciled")
        assert azure.power("vm-1") == "running"
    finally:
        lax.close()
        thread.stop()
