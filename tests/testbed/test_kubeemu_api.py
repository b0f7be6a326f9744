"""Discovery, CRUD, patches, status subresource, finalizers, namespaces and CRDs over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.testbed.conftest import NOT_CHECKED, PROJECT_CRDS, RawHttp

G, V = "test.kubeemu.dev", "v1"
W = f"/apis/{G}/{V}/namespaces/default/widgets"


def widget(name: str = "w", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{G}/{V}", "kind": "Widget", "metadata": {"name": name}, "spec": {"size": 1, **spec}}


def error(e: pytest.ExceptionInfo[client.ApiException]) -> dict[str, Any]:
    import json

    return json.loads(e.value.body)


# ------------------------------------------------------------------ discovery
def test_discovery(kube_api: client.ApiClient, kube_raw: RawHttp) -> None:
    assert kube_raw("GET", "/version").body["gitVersion"].startswith("v1.36")
    assert client.CoreApi(kube_api).get_api_versions().versions == ["v1"]
    core = {r.name: r for r in client.CoreV1Api(kube_api).get_api_resources().resources}
    assert {"namespaces", "events", "configmaps", "secrets", "serviceaccounts"} <= set(core)
    assert core["namespaces"].namespaced is False and core["events"].namespaced is True
    assert core["namespaces/status"].verbs == ["get", "patch", "update"]
    groups = {g.name: g for g in client.ApisApi(kube_api).get_api_versions().groups}
    assert {"coordination.k8s.io", "apiextensions.k8s.io", G, "gpuvm.dev", "kopf.dev"} <= set(groups)
    body = kube_raw("GET", f"/apis/{G}/{V}").body
    assert body["kind"] == "APIResourceList" and body["groupVersion"] == f"{G}/{V}"
    res = {r["name"]: r for r in body["resources"]}
    assert res["widgets"] == {"name": "widgets", "singularName": "widget", "namespaced": True, "kind": "Widget",
                              "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                              "shortNames": ["wd"], "categories": ["all", "kubeemu"]}
    assert res["widgets/status"]["verbs"] == ["get", "patch", "update"]
    assert res["gadgets"]["namespaced"] is False and "gadgets/status" not in res
    kopf = {r["name"]: r for r in kube_raw("GET", "/apis/kopf.dev/v1").body["resources"]}
    assert kopf["kopfpeerings"]["namespaced"] is True and kopf["clusterkopfpeerings"]["namespaced"] is False
    assert kube_raw("GET", f"/apis/{G}").body["preferredVersion"] == {"groupVersion": f"{G}/{V}", "version": V}
    assert kube_raw("GET", "/apis/nope.dev/v1").status == 404


# ------------------------------------------------------------------ CRUD
def test_create_get_list_delete_bookkeeping(co: client.CustomObjectsApi) -> None:
    a = co.create_namespaced_custom_object(G, V, "default", "widgets", widget("a"))
    m = a["metadata"]
    assert m["generation"] == 1 and m["uid"] and m["creationTimestamp"].endswith("Z")
    assert int(m["resourceVersion"]) > 0 and m["namespace"] == "default"
    b = co.create_namespaced_custom_object(G, V, "default", "widgets", widget("b"))
    assert int(b["metadata"]["resourceVersion"]) > int(m["resourceVersion"])
    assert co.get_namespaced_custom_object(G, V, "default", "widgets", "a") == a
    lst = co.list_namespaced_custom_object(G, V, "default", "widgets")
    assert lst["kind"] == "WidgetList" and [i["metadata"]["name"] for i in lst["items"]] == ["a", "b"]
    assert lst["metadata"]["resourceVersion"] == b["metadata"]["resourceVersion"]
    status = co.delete_namespaced_custom_object(G, V, "default", "widgets", "a")
    assert status["status"] == "Success" and status["details"] == {
        "name": "a", "group": G, "kind": "widgets", "uid": m["uid"]}
    with pytest.raises(client.ApiException) as e:
        co.get_namespaced_custom_object(G, V, "default", "widgets", "a")
    assert e.value.status == 404
    assert error(e) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": f'widgets.{G} "a" not found', "reason": "NotFound",
                        "details": {"name": "a", "group": G, "kind": "widgets"}, "code": 404}


def test_duplicate_create_and_missing_namespace(co: client.CustomObjectsApi, core: client.CoreV1Api) -> None:
    co.create_namespaced_custom_object(G, V, "default", "widgets", widget("a"))
    with pytest.raises(client.ApiException) as e:
        co.create_namespaced_custom_object(G, V, "default", "widgets", widget("a"))
    assert e.value.status == 409 and error(e)["reason"] == "AlreadyExists"
    assert error(e)["message"] == f'widgets.{G} "a" already exists'
    with pytest.raises(client.ApiException) as e:
        co.create_namespaced_custom_object(G, V, "nowhere", "widgets", widget("a"))
    assert e.value.status == 404 and error(e)["message"] == 'namespaces "nowhere" not found'
    assert error(e)["details"] == {"name": "nowhere", "kind": "namespaces"}
    with pytest.raises(client.ApiException) as e:
        core.read_namespaced_config_map("nope", "default")
    assert error(e)["message"] == 'configmaps "nope" not found'


def test_generate_name_and_events(core: client.CoreV1Api) -> None:
    names = set()
    for _ in range(20):
        ev = core.create_namespaced_event("default", client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name="kopf-event-"),
            involved_object=client.V1ObjectReference(kind="Widget", name="w", namespace="default"),
            reason="Testing", message="hello", type="Normal"))
        assert ev.metadata.name.startswith("kopf-event-") and len(ev.metadata.name) == len("kopf-event-") + 5
        names.add(ev.metadata.name)
    assert len(names) == 20
    listed = core.list_namespaced_event("default", field_selector="involvedObject.name=w,reason=Testing")
    assert len(listed.items) == 20


def test_name_validation(co: client.CustomObjectsApi) -> None:
    with pytest.raises(client.ApiException) as e:
        co.create_namespaced_custom_object(G, V, "default", "widgets", widget("Bad_Name"))
    body = error(e)
    assert e.value.status == 422 and body["reason"] == "Invalid"
    assert body["message"].startswith(f'Widget.{G} "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
                                      "a lowercase RFC 1123 subdomain must consist of")
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    nameless = widget()
    del nameless["metadata"]["name"]
    with pytest.raises(client.ApiException) as e:
        co.create_namespaced_custom_object(G, V, "default", "widgets", nameless)
    assert error(e)["details"]["causes"] == [{"reason": "FieldValueRequired", "field": "metadata.name",
                                             "message": "Required value: name or generateName is required"},
                                            {"reason": "FieldValueInvalid", "field": "<nil>", "message": NOT_CHECKED}]


def test_put_replace_and_conflicts(co: client.CustomObjectsApi, kube_raw: RawHttp) -> None:
    a = co.create_namespaced_custom_object(G, V, "default", "widgets", widget("a"))
    a["spec"]["size"] = 2
    b = co.replace_namespaced_custom_object(G, V, "default", "widgets", "a", a)
    assert b["spec"]["size"] == 2 and b["metadata"]["generation"] == 2
    with pytest.raises(client.ApiException) as e:
        co.replace_namespaced_custom_object(G, V, "default", "widgets", "a", a)  # stale resourceVersion
    assert e.value.status == 409 and error(e)["reason"] == "Conflict"
    assert error(e)["message"] == (f'Operation cannot be fulfilled on widgets.{G} "a": the object has been modified; '
                                   "please apply your changes to the latest version and try again")
    del b["metadata"]["resourceVersion"]
    r = kube_raw("PUT", f"{W}/a", b)
    assert r.status == 422 and r.body["details"]["causes"][0]["field"] == "metadata.resourceVersion"
    assert r.body["message"].endswith("metadata.resourceVersion: Invalid value: 0x0: must be specified for an update")
    r = kube_raw("PUT", f"{W}/zzz", {**b, "metadata": {"name": "zzz", "resourceVersion": "1"}})
    assert r.status == 404
    r = kube_raw("PUT", f"{W}/a", {**b, "metadata": {"name": "other"}})
    assert r.status == 400 and r.body["message"] == "the name of the object (other) does not match the name on the URL (a)"
    # metadata-only change: no generation bump; stale rv in a patch body -> 409
    c = co.patch_namespaced_custom_object(G, V, "default", "widgets", "a", {"metadata": {"labels": {"x": "y"}}})
    assert c["metadata"]["generation"] == 2
    r = kube_raw("PATCH", f"{W}/a", {"metadata": {"resourceVersion": a["metadata"]["resourceVersion"]}},
                 content_type="application/merge-patch+json")
    assert r.status == 409 and r.body["reason"] == "Conflict"


def test_patch_types(co: client.CustomObjectsApi, core: client.CoreV1Api, kube_raw: RawHttp) -> None:
    a = co.create_namespaced_custom_object(G, V, "default", "widgets", widget("a", tags=["x"]))
    rv = a["metadata"]["resourceVersion"]
    ok = kube_raw("PATCH", f"{W}/a", [{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                                      {"op": "add", "path": "/metadata/finalizers", "value": ["a.dev/f"]},
                                      {"op": "add", "path": "/spec/tags/-", "value": "y"}],
                  content_type="application/json-patch+json")
    assert ok.status == 200 and ok.body["spec"]["tags"] == ["x", "y"]
    failed = kube_raw("PATCH", f"{W}/a", [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}],
                      content_type="application/json-patch+json")
    assert failed.status == 422 and failed.body == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "the server rejected our request due to an error in our request", "reason": "Invalid",
        "details": {}, "code": 422}  # v1.36 gives no cause
    assert kube_raw("PATCH", f"{W}/a", {"op": "x"}, content_type="application/json-patch+json").status == 400
    smp = kube_raw("PATCH", f"{W}/a", {"spec": {}}, content_type="application/strategic-merge-patch+json")
    assert smp.status == 415 and smp.body["reason"] == "UnsupportedMediaType"
    assert "application/strategic-merge-patch+json" not in smp.body["message"]
    core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"),
                                                                    data={"a": "1", "b": "2"}))
    cm = core.patch_namespaced_config_map("c", "default", {"data": {"a": None, "c": "3"}})  # strategic merge
    assert cm.data == {"b": "2", "c": "3"}
    assert kube_raw("PATCH", "/api/v1/namespaces/default/configmaps/c", {}, content_type="text/plain").status == 415


def test_noop_patch_keeps_resource_version(co: client.CustomObjectsApi) -> None:
    a = co.create_namespaced_custom_object(G, V, "default", "widgets", widget("a"))
    b = co.patch_namespaced_custom_object(G, V, "default", "widgets", "a", {"spec": {"size": 1}})
    assert b["metadata"]["resourceVersion"] == a["metadata"]["resourceVersion"]
    c = co.patch_namespaced_custom_object(G, V, "default", "widgets", "a", {"spec": {"size": 2}})
    assert int(c["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])


def test_server_side_apply(kube_raw: RawHttp) -> None:
    doc = f"apiVersion: {G}/{V}\nkind: Widget\nmetadata:\n  name: ap\nspec:\n  size: 4\n"
    r = kube_raw("PATCH", f"{W}/ap", raw=doc.encode(), content_type="application/apply-patch+yaml")
    assert r.status == 422 and "fieldManager: Required value" in r.body["message"]
    r = kube_raw("PATCH", f"{W}/ap?fieldManager=t", raw=doc.encode(), content_type="application/apply-patch+yaml")
    assert r.status == 201 and r.body["spec"]["size"] == 4
    r = kube_raw("PATCH", f"{W}/ap?fieldManager=t", raw=doc.replace("4", "5").encode(),
                 content_type="application/apply-patch+yaml")
    assert r.status == 200 and r.body["spec"]["size"] == 5


def test_status_subresource(co: client.CustomObjectsApi) -> None:
    a = co.create_namespaced_custom_object(G, V, "default", "widgets", {**widget("a"), "status": {"phase": "Ready"}})
    assert "status" not in a  # dropped on create
    b = co.patch_namespaced_custom_object_status(G, V, "default", "widgets", "a", {
        "status": {"phase": "Ready", "junk": 1}, "spec": {"size": 7}, "metadata": {"labels": {"l": "v"}}})
    assert b["status"] == {"phase": "Ready"} and b["spec"]["size"] == 1 and "labels" not in b["metadata"]
    assert b["metadata"]["generation"] == 1
    c = co.patch_namespaced_custom_object(G, V, "default", "widgets", "a", {"status": {"phase": "Pending"}, "spec": {"size": 3}})
    assert c["status"] == {"phase": "Ready"} and c["spec"]["size"] == 3 and c["metadata"]["generation"] == 2
    assert co.get_namespaced_custom_object_status(G, V, "default", "widgets", "a")["status"] == {"phase": "Ready"}
    with pytest.raises(client.ApiException) as e:
        co.patch_namespaced_custom_object_status(G, V, "default", "widgets", "a", {"status": {"phase": "Bogus"}})
    assert e.value.status == 422 and error(e)["details"]["causes"][0]["field"] == "status.phase"
    c["status"] = {"phase": "Pending", "count": 3}
    d = co.replace_namespaced_custom_object_status(G, V, "default", "widgets", "a", c)
    assert d["status"] == {"phase": "Pending", "count": 3}
    # without a status subresource, status is ordinary content
    g = co.create_cluster_custom_object(G, V, "gadgets", {"apiVersion": f"{G}/{V}", "kind": "Gadget",
                                                           "metadata": {"name": "g"}, "status": {"seen": True}})
    assert g["status"] == {"seen": True}
    g2 = co.patch_cluster_custom_object(G, V, "gadgets", "g", {"status": {"seen": False}})
    assert g2["metadata"]["generation"] == 2


def test_finalizers_and_deletion(co: client.CustomObjectsApi, kube_raw: RawHttp) -> None:
    a = co.create_namespaced_custom_object(G, V, "default", "widgets", {**widget("a"), "metadata": {
        "name": "a", "finalizers": ["example.com/hold"]}})
    deleting = co.delete_namespaced_custom_object(G, V, "default", "widgets", "a")
    assert deleting["metadata"]["deletionTimestamp"] and deleting["metadata"]["deletionGracePeriodSeconds"] == 0
    assert deleting["metadata"]["generation"] == a["metadata"]["generation"] + 1
    with pytest.raises(client.ApiException) as e:
        co.patch_namespaced_custom_object(G, V, "default", "widgets", "a",
                                          {"metadata": {"finalizers": ["example.com/hold", "example.com/new"]}})
    assert e.value.status == 422
    cause = error(e)["details"]["causes"][0]
    assert cause["field"] == "metadata.finalizers" and cause["reason"] == "FieldValueForbidden"
    assert 'found new finalizers []string{"example.com/new"}' in cause["message"]
    gone = co.patch_namespaced_custom_object(G, V, "default", "widgets", "a", {"metadata": {"finalizers": None}})
    assert gone["metadata"]["name"] == "a"
    assert kube_raw("GET", f"{W}/a").status == 404


def test_namespace_lifecycle(core: client.CoreV1Api, co: client.CustomObjectsApi) -> None:
    ns = core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="tmp")))
    assert ns.status.phase == "Active"
    co.create_namespaced_custom_object(G, V, "tmp", "widgets", {**widget("held"), "metadata": {
        "name": "held", "finalizers": ["example.com/hold"]}})
    core.create_namespaced_config_map("tmp", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c")))
    core.delete_namespace("tmp")
    assert core.read_namespace("tmp").status.phase == "Terminating"
    with pytest.raises(client.ApiException):
        core.read_namespaced_config_map("c", "tmp")  # deleted by the namespace "controller"
    with pytest.raises(client.ApiException) as e:
        core.create_namespaced_config_map("tmp", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="d")))
    assert e.value.status == 403 and error(e)["details"]["causes"][0]["reason"] == "NamespaceTerminating"
    assert core.read_namespace("tmp").status.phase == "Terminating"
    co.patch_namespaced_custom_object(G, V, "tmp", "widgets", "held", {"metadata": {"finalizers": []}})
    with pytest.raises(client.ApiException) as e:
        core.read_namespace("tmp")
    assert e.value.status == 404
    with pytest.raises(client.ApiException) as e:
        core.delete_namespace("default")
    assert e.value.status == 403


def test_crd_lifecycle_through_api(kube_api: client.ApiClient, kube_raw: RawHttp) -> None:
    ext = client.ApiextensionsV1Api(kube_api)
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "things.late.dev"},
           "spec": {"group": "late.dev", "scope": "Namespaced",
                    "names": {"plural": "things", "singular": "thing", "kind": "Thing"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                        "type": "object", "properties": {"spec": {"type": "object", "properties": {
                            "n": {"type": "integer", "default": 3}}}}}}}]}}
    created = ext.create_custom_resource_definition(crd)
    assert [c.type for c in created.status.conditions] == ["NamesAccepted", "Established"]
    assert kube_raw("GET", "/apis/late.dev/v1").status == 200
    co = client.CustomObjectsApi(kube_api)
    t = co.create_namespaced_custom_object("late.dev", "v1", "default", "things", {
        "apiVersion": "late.dev/v1", "kind": "Thing", "metadata": {"name": "t"}, "spec": {}})
    assert t["spec"] == {"n": 3}
    ext.delete_custom_resource_definition("things.late.dev")
    assert kube_raw("GET", "/apis/late.dev/v1").status == 404
    assert kube_raw("GET", "/apis/late.dev/v1/namespaces/default/things").status == 404
    bad = {**crd, "metadata": {"name": "wrong.late.dev"}}
    with pytest.raises(client.ApiException) as e:
        ext.create_custom_resource_definition(bad)
    assert e.value.status == 422 and error(e)["details"]["causes"][0]["field"] == "metadata.name"


def test_selectors_and_paging(co: client.CustomObjectsApi, kube_raw: RawHttp) -> None:
    for i, (tier, env) in enumerate([("a", "prod"), ("b", "prod"), ("c", "dev"), ("a", None)]):
        labels = {"tier": tier, **({"env": env} if env else {})}
        co.create_namespaced_custom_object(G, V, "default", "widgets", {**widget(f"w{i}"), "metadata": {
            "name": f"w{i}", "labels": labels}})

    def names(**kw: Any) -> list[str]:
        return [i["metadata"]["name"] for i in co.list_namespaced_custom_object(G, V, "default", "widgets", **kw)["items"]]

    assert names(label_selector="env=prod") == ["w0", "w1"]
    assert names(label_selector="env!=prod") == ["w2", "w3"]
    assert names(label_selector="tier in (a,c)") == ["w0", "w2", "w3"]
    assert names(label_selector="tier notin (a)") == ["w1", "w2"]
    assert names(label_selector="env") == ["w0", "w1", "w2"]
    assert names(label_selector="!env") == ["w3"]
    assert names(label_selector="tier=a,env=prod") == ["w0"]
    assert names(field_selector="metadata.name=w2") == ["w2"]
    assert names(field_selector="metadata.name!=w2,metadata.namespace=default") == ["w0", "w1", "w3"]
    r = kube_raw("GET", f"{W}?fieldSelector=spec.size%3D1")
    assert r.status == 400 and r.body["message"] == '"spec.size" is not a known field selector: only "metadata.name", "metadata.namespace"'
    assert kube_raw("GET", f"{W}?labelSelector=a%20in%20").status == 400
    page1 = co.list_namespaced_custom_object(G, V, "default", "widgets", limit=3)
    assert [i["metadata"]["name"] for i in page1["items"]] == ["w0", "w1", "w2"]
    assert page1["metadata"]["remainingItemCount"] == 1
    page2 = co.list_namespaced_custom_object(G, V, "default", "widgets", limit=3, _continue=page1["metadata"]["continue"])
    assert [i["metadata"]["name"] for i in page2["items"]] == ["w3"] and "continue" not in page2["metadata"]
    assert kube_raw("GET", f"{W}?limit=2&continue=garbage").status == 400
    co.create_namespaced_custom_object(G, V, "kube-system", "widgets", widget("other"))
    everywhere = co.list_cluster_custom_object(G, V, "widgets")
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in everywhere["items"]][0] == ("default", "w0")
    assert len(everywhere["items"]) == 5


def test_project_crds_load(co: client.CustomObjectsApi) -> None:
    assert PROJECT_CRDS, "deploy/crds has the project's CRDs"
    g = co.create_namespaced_custom_object("gpuvm.dev", "v1alpha1", "default", "gpuvms", {
        "apiVersion": "gpuvm.dev/v1alpha1", "kind": "GpuVm", "metadata": {"name": "g"},
        "spec": {"vm": {"resourceGroup": "rg", "name": "vm1"}}})
    assert g["spec"]["desiredState"] == "Deallocated"
    with pytest.raises(client.ApiException) as e:
        co.create_namespaced_custom_object("gpuvm.dev", "v1alpha1", "default", "gpuvms", {
            "apiVersion": "gpuvm.dev/v1alpha1", "kind": "GpuVm", "metadata": {"name": "h"},
            "spec": {"vm": {"resourceGroup": "rg", "name": "vm1"}, "desiredState": "Foo"}})
    assert error(e)["message"] == ('GpuVm.gpuvm.dev "h" is invalid: [spec.desiredState: Unsupported value: "Foo": '
                                   f'supported values: "Running", "Deallocated", "Auto", <nil>: {NOT_CHECKED}]')
    assert error(e)["details"]["causes"] == [{"reason": "FieldValueNotSupported", "field": "spec.desiredState",
                                             "message": 'Unsupported value: "Foo": supported values: "Running", "Deallocated", "Auto"'},
                                            {"reason": "FieldValueInvalid", "field": "<nil>", "message": NOT_CHECKED}]


def test_stats_count_requests(kube_emulator: Any, co: client.CustomObjectsApi) -> None:
    co.create_namespaced_custom_object(G, V, "default", "widgets", widget("a"))
    with pytest.raises(client.ApiException):
        co.get_namespaced_custom_object(G, V, "default", "widgets", "zz")
    reqs = kube_emulator.stats()["requests"]
    assert reqs[("CREATE", "widgets", 201)] == 1 and reqs[("GET", "widgets", 404)] == 1


def test_other_builtins_and_methods(kube_api: client.ApiClient, core: client.CoreV1Api, kube_raw: RawHttp) -> None:
    leases = client.CoordinationV1Api(kube_api)
    lease = leases.create_namespaced_lease("default", client.V1Lease(
        metadata=client.V1ObjectMeta(name="l"), spec=client.V1LeaseSpec(holder_identity="me")))
    assert lease.spec.holder_identity == "me" and lease.metadata.generation is None
    lease.spec.holder_identity = "you"
    assert leases.replace_namespaced_lease("l", "default", lease).spec.holder_identity == "you"
    core.create_namespaced_secret("default", client.V1Secret(metadata=client.V1ObjectMeta(name="s"), type="Opaque"))
    assert [s.metadata.name for s in core.list_namespaced_secret("default", field_selector="type=Opaque").items] == ["s"]
    core.create_namespaced_service_account("default", client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="sa")))
    assert core.read_namespaced_service_account("sa", "default").metadata.name == "sa"
    assert kube_raw("POST", "/api/v1/namespaces/default/configmaps/x", {}).status == 405
    assert kube_raw("GET", "/api/v1/namespaces/default/configmaps/x/status").status == 404
    assert kube_raw("GET", "/api/v1/nothings").status == 404


def test_crd_with_objects_terminates(kube_api: client.ApiClient, co: client.CustomObjectsApi, kube_raw: RawHttp) -> None:
    co.create_cluster_custom_object(G, V, "gadgets", {"apiVersion": f"{G}/{V}", "kind": "Gadget",
                                                      "metadata": {"name": "g", "finalizers": ["example.com/f"]}})
    client.ApiextensionsV1Api(kube_api).delete_custom_resource_definition(f"gadgets.{G}")
    assert co.get_cluster_custom_object(G, V, "gadgets", "g")["metadata"]["deletionTimestamp"]
    r = kube_raw("POST", f"/apis/{G}/{V}/gadgets", {"apiVersion": f"{G}/{V}", "kind": "Gadget", "metadata": {"name": "h"}})
    assert r.status == 405 and r.body["reason"] == "MethodNotAllowed"
    co.patch_cluster_custom_object(G, V, "gadgets", "g", {"metadata": {"finalizers": None}})
    assert kube_raw("GET", f"/apis/{G}/{V}/gadgets").status == 404
    assert kube_raw("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.{G}").status == 404
    assert kube_raw("GET", f"/apis/{G}/{V}/namespaces/default/widgets").status == 200
