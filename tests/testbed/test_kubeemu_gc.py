"""core/v1 Pods and the garbage collector (ownerReferences across kinds; background, orphan, foreground).

Semantics from https://kubernetes.io/docs/concepts/architecture/garbage-collection/ and
https://kubernetes.io/docs/tasks/administer-cluster/use-cascading-deletion/, and the sources named
in testbed/kubeemu/collector.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from tests.testbed.conftest import RawHttp, wait_for

G, V = "test.kubeemu.dev", "v1"


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}], **spec}}


def ref(owner: Any, *, block: bool = False) -> dict[str, Any]:
    """An ownerReference to ``owner`` (a dict or a client model)."""
    if isinstance(owner, dict):
        meta, api_version, kind = owner["metadata"], owner["apiVersion"], owner["kind"]
        name, uid = meta["name"], meta["uid"]
    else:
        api_version, kind, name, uid = "v1", "Pod", owner.metadata.name, owner.metadata.uid
    out = {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid}
    if block:
        out["blockOwnerDeletion"] = True
    return out


def widget(name: str, *owners: dict[str, Any], finalizers: list[str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "ownerReferences": list(owners)}
    if finalizers:
        meta["finalizers"] = finalizers
    return {"apiVersion": f"{G}/{V}", "kind": "Widget", "metadata": meta, "spec": {"size": 1}}


def gone(read: Any) -> bool:
    try:
        read()
        return False
    except client.ApiException as e:
        return e.status == 404


# ------------------------------------------------------------------ pods
def test_pods_are_served_with_defaults_status_and_validation(core: client.CoreV1Api, kube_raw: RawHttp) -> None:
    resources = {r.name: r for r in core.get_api_resources().resources}
    assert resources["pods"].namespaced and resources["pods"].short_names == ["po"]
    assert resources["pods/status"].verbs == ["get", "patch", "update"]

    created = core.create_namespaced_pod("default", {**pod("p"), "status": {"phase": "Running"}})
    assert created.status.phase == "Pending" and created.status.qos_class == "BestEffort"  # the client's status is dropped
    assert created.metadata.generation == 1
    c = created.spec.containers[0]
    assert (created.spec.restart_policy, created.spec.dns_policy, created.spec.scheduler_name) == ("Always", "ClusterFirst", "default-scheduler")
    assert (c.image_pull_policy, c.termination_message_path) == ("IfNotPresent", "/dev/termination-log")
    assert "f:restartPolicy" in json.dumps(created.metadata.managed_fields[0].fields_v1)  # defaults belong to the creator

    running = core.patch_namespaced_pod_status("p", "default", {"status": {"phase": "Running"}})
    assert running.status.phase == "Running" and running.metadata.generation == 1
    assert [p.metadata.name for p in core.list_namespaced_pod("default", field_selector="status.phase=Running").items] == ["p"]
    assert core.list_namespaced_pod("default", field_selector="status.phase=Pending").items == []

    with pytest.raises(client.ApiException) as e:
        core.create_namespaced_pod("default", {"metadata": {"name": "bad"}, "spec": {"containers": []}})
    assert json.loads(e.value.body)["message"] == 'Pod "bad" is invalid: spec.containers: Required value'
    with pytest.raises(client.ApiException) as e:
        core.patch_namespaced_pod("p", "default", {"spec": {"restartPolicy": "Never"}})
    assert json.loads(e.value.body)["message"].startswith('Pod "p" is invalid: spec: Forbidden: pod updates may not change fields')
    image = core.patch_namespaced_pod("p", "default", {"spec": {"containers": [{"name": "main", "image": "busybox:1.37"}]}})
    assert image.spec.containers[0].image == "busybox:1.37" and image.metadata.generation == 2
    with pytest.raises(client.ApiException) as e:
        core.patch_namespaced_pod_status("p", "default", {"status": {"phase": "Done"}})
    assert e.value.status == 422


# ------------------------------------------------------------------ background
def test_deleting_a_pod_deletes_the_custom_resources_it_owns(core: client.CoreV1Api, co: client.CustomObjectsApi) -> None:
    owner = core.create_namespaced_pod("default", pod("job-pod"))
    w = co.create_namespaced_custom_object(G, V, "default", "widgets", widget("claim", ref(owner)))
    cm = core.create_namespaced_config_map("default", {"metadata": {"name": "cm", "ownerReferences": [ref(w)]}})
    other = core.create_namespaced_pod("default", pod("other"))
    both = co.create_namespaced_custom_object(G, V, "default", "widgets", widget("shared", ref(owner), ref(other)))
    assert cm.metadata.name == "cm" and both

    core.delete_namespaced_pod("job-pod", "default")
    # The claim goes, and with it what it owned (a cascade across three kinds)...
    wait_for(lambda: gone(lambda: co.get_namespaced_custom_object(G, V, "default", "widgets", "claim")), 10, what="claim collected")
    wait_for(lambda: gone(lambda: core.read_namespaced_config_map("cm", "default")), 10, what="configmap collected")
    # ...while an object with another owner left only loses the reference to the deleted one.
    shared = wait_for(lambda: (o := co.get_namespaced_custom_object(G, V, "default", "widgets", "shared"))
                      and len(o["metadata"]["ownerReferences"]) == 1 and o, 10, what="dangling reference removed")
    assert shared["metadata"]["ownerReferences"] == [ref(other)]
    assert ("kube-controller-manager", "Update") not in [(e["manager"], e["operation"]) for e in shared["metadata"]["managedFields"]]


def test_dependents_with_finalizers_and_owners_with_finalizers_wait(core: client.CoreV1Api, co: client.CustomObjectsApi) -> None:
    owner = core.create_namespaced_pod("default", pod("held"))
    core.patch_namespaced_pod("held", "default", {"metadata": {"finalizers": ["example.com/hold"]}})
    co.create_namespaced_custom_object(G, V, "default", "widgets", widget("w", ref(owner), finalizers=["example.com/keep"]))
    core.delete_namespaced_pod("held", "default")
    # The owner is not gone from storage while its finalizer holds it: the dependent is untouched.
    assert core.read_namespaced_pod("held", "default").metadata.deletion_timestamp is not None
    assert co.get_namespaced_custom_object(G, V, "default", "widgets", "w")["metadata"].get("deletionTimestamp") is None
    core.patch_namespaced_pod("held", "default", {"metadata": {"finalizers": None}})
    # Now it is: the dependent is deleted, and waits for its own finalizer.
    wait_for(lambda: co.get_namespaced_custom_object(G, V, "default", "widgets", "w")["metadata"].get("deletionTimestamp"),
             10, what="dependent marked for deletion")
    co.patch_namespaced_custom_object(G, V, "default", "widgets", "w", {"metadata": {"finalizers": None}})
    assert gone(lambda: co.get_namespaced_custom_object(G, V, "default", "widgets", "w"))


def test_references_that_resolve_to_nothing(core: client.CoreV1Api, co: client.CustomObjectsApi, kube_emulator: Any) -> None:
    other_ns = core.create_namespace({"metadata": {"name": "elsewhere"}})
    assert other_ns
    far = core.create_namespaced_pod("elsewhere", pod("far"))
    missing = {"apiVersion": "v1", "kind": "Pod", "name": "nobody", "uid": "00000000-0000-0000-0000-000000000000"}
    co.create_namespaced_custom_object(G, V, "default", "widgets", widget("orphaned-at-birth", missing))
    co.create_namespaced_custom_object(G, V, "default", "widgets", widget("cross-namespace", ref(far)))
    unknown = {"apiVersion": "example.com/v1", "kind": "Nothing", "name": "x", "uid": "11111111-1111-1111-1111-111111111111"}
    co.create_namespaced_custom_object(G, V, "default", "widgets", widget("unresolvable", unknown))
    wrong_name = {**ref(far), "name": "not-far"}
    co.create_namespaced_custom_object(G, V, "elsewhere", "widgets", widget("wrong-name", wrong_name))
    gadget = co.create_cluster_custom_object(G, V, "gadgets", {"apiVersion": f"{G}/{V}", "kind": "Gadget", "metadata": {
        "name": "cluster-scoped", "ownerReferences": [ref(far)]}})
    assert gadget
    for ns, name in (("default", "orphaned-at-birth"), ("default", "cross-namespace"), ("elsewhere", "wrong-name")):
        wait_for(lambda ns=ns, name=name: gone(lambda: co.get_namespaced_custom_object(G, V, ns, "widgets", name)), 10,
                 what=f"{name} collected")
    # A reference to a kind nobody serves, and a cluster-scoped dependent of a namespaced owner, never resolve.
    assert co.get_namespaced_custom_object(G, V, "default", "widgets", "unresolvable")
    assert co.get_cluster_custom_object(G, V, "gadgets", "cluster-scoped")
    assert kube_emulator.store.gc.deleted == 3


# ------------------------------------------------------------------ orphan and foreground
def test_orphan_propagation_keeps_the_dependents(core: client.CoreV1Api, co: client.CustomObjectsApi) -> None:
    owner = core.create_namespaced_pod("default", pod("o"))
    co.create_namespaced_custom_object(G, V, "default", "widgets", widget("kept", ref(owner)))
    deleting = core.delete_namespaced_pod("o", "default", propagation_policy="Orphan")
    assert deleting.metadata.finalizers == ["orphan"] and deleting.metadata.deletion_timestamp is not None
    wait_for(lambda: gone(lambda: core.read_namespaced_pod("o", "default")), 10, what="owner deleted after orphaning")
    kept = co.get_namespaced_custom_object(G, V, "default", "widgets", "kept")
    assert "ownerReferences" not in kept["metadata"] and kept["metadata"].get("deletionTimestamp") is None
    assert "kube-controller-manager" not in [e["manager"] for e in kept["metadata"]["managedFields"]]


def test_foreground_propagation_waits_for_blocking_dependents(core: client.CoreV1Api, co: client.CustomObjectsApi) -> None:
    owner = core.create_namespaced_pod("default", pod("fg"))
    co.create_namespaced_custom_object(G, V, "default", "widgets", widget("blocker", ref(owner, block=True), finalizers=["example.com/slow"]))
    co.create_namespaced_custom_object(G, V, "default", "widgets", widget("quick", ref(owner)))
    core.delete_namespaced_pod("fg", "default", body=client.V1DeleteOptions(propagation_policy="Foreground"))
    wait_for(lambda: gone(lambda: co.get_namespaced_custom_object(G, V, "default", "widgets", "quick")), 10, what="quick dependent")
    blocker = wait_for(lambda: (o := co.get_namespaced_custom_object(G, V, "default", "widgets", "blocker"))
                       ["metadata"].get("deletionTimestamp") and o, 10, what="blocker marked")
    assert blocker
    fg = core.read_namespaced_pod("fg", "default")
    assert fg.metadata.finalizers == ["foregroundDeletion"] and fg.metadata.deletion_timestamp is not None
    co.patch_namespaced_custom_object(G, V, "default", "widgets", "blocker", {"metadata": {"finalizers": None}})
    wait_for(lambda: gone(lambda: core.read_namespaced_pod("fg", "default")), 10, what="owner gone after its dependents")


def test_delete_options_are_validated(kube_raw: RawHttp, core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", pod("v"))
    r = kube_raw("DELETE", "/api/v1/namespaces/default/pods/v", {"propagationPolicy": "Sideways"})
    assert (r.status, r.body["message"]) == (422, 'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: '
                                                  '"Sideways": supported values: "Foreground", "Background", "Orphan", "nil"')
    r = kube_raw("DELETE", "/api/v1/namespaces/default/pods/v", {"propagationPolicy": "Orphan", "orphanDependents": True})
    assert r.status == 422 and "cannot be both set" in r.body["message"]
