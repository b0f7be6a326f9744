"""Optional bearer-token authentication, RBAC and SelfSubjectAccessReviews, through the official client
and the CLI. (kubectl cannot be used here: client-go does not send bearer tokens over plain HTTP.)

Messages follow staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go
(``forbiddenMessage``) and plugin/pkg/auth/authorizer/rbac/rbac.go (allow reasons).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client

from controller.cli import main
from testbed.kubeemu import Identity, KubeEmulator, Rule
from testbed.sandbox import api_client
from testbed.serving import ServerThread
from tests.testbed.conftest import DATA, PROJECT_CRDS, emulator_process

G, V = "test.kubeemu.dev", "v1"  # the widgets of tests/testbed/data
OPERATOR = Identity.service_account_name("gpuvm-system", "gpuvm-operator")
RULES = (
    Rule(verbs=("get", "list", "watch"), api_groups=("gpuvm.dev",), resources=("gpuvms",), namespaces=("ml",)),
    Rule(verbs=("patch",), api_groups=("gpuvm.dev",), resources=("*/status",)),
    Rule(verbs=("get", "list"), api_groups=("",), resources=("configmaps",), resource_names=("cfg",), namespaces=("ml",)),
)
IDENTITIES = [Identity(OPERATOR, token="operator-token", rules=RULES), Identity("alice", token="alice-token",
                                                                                rules=(Rule(verbs=("*",), api_groups=("*",), resources=("*",)),))]


@pytest.fixture
def secured() -> Iterator[KubeEmulator]:
    emu = KubeEmulator(PROJECT_CRDS, identities=IDENTITIES)
    with ServerThread(emu, name="kube-emulator"):
        admin = api(emu, "alice-token")
        client.CoreV1Api(admin).create_namespace({"metadata": {"name": "ml"}})
        admin.close()
        yield emu


def api(emu: KubeEmulator, token: str | None) -> client.ApiClient:
    return api_client(emu.url, token=token)


def refused(call: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(client.ApiException) as e:
        call()
    return e.value.status, json.loads(e.value.body)


def gpuvm(name: str) -> dict[str, Any]:
    rid = f"/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}"
    return {"apiVersion": "gpuvm.dev/v1alpha1", "kind": "GpuVm", "metadata": {"name": name}, "spec": {"vm": {"resourceId": rid}}}


def test_requests_are_authorized_by_the_identitys_rules(secured: KubeEmulator) -> None:
    admin = client.CustomObjectsApi(api(secured, "alice-token"))
    admin.create_namespaced_custom_object("gpuvm.dev", "v1alpha1", "ml", "gpuvms", gpuvm("g"))
    client.CoreV1Api(api(secured, "alice-token")).create_namespaced_config_map("ml", {"metadata": {"name": "cfg"}})
    op_client = api(secured, "operator-token")
    op, core = client.CustomObjectsApi(op_client), client.CoreV1Api(op_client)

    assert [o["metadata"]["name"] for o in op.list_namespaced_custom_object("gpuvm.dev", "v1alpha1", "ml", "gpuvms")["items"]] == ["g"]
    assert op.patch_namespaced_custom_object_status("gpuvm.dev", "v1alpha1", "ml", "gpuvms", "g", {"status": {"powerState": "Running"}})
    assert core.read_namespaced_config_map("cfg", "ml").metadata.name == "cfg"
    assert core.list_namespaced_config_map("ml", field_selector="metadata.name=cfg").items  # resourceNames: a list pinned by name

    who = f'User "{OPERATOR}"'
    assert refused(lambda: op.list_namespaced_custom_object("gpuvm.dev", "v1alpha1", "default", "gpuvms")) == (403, {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'gpuvms.gpuvm.dev is forbidden: {who} cannot list resource "gpuvms" in API group "gpuvm.dev" in the namespace "default"',
        "reason": "Forbidden", "details": {"group": "gpuvm.dev", "kind": "gpuvms"}, "code": 403})
    assert refused(lambda: op.list_cluster_custom_object("gpuvm.dev", "v1alpha1", "gpuvms"))[1]["message"] == (
        f'gpuvms.gpuvm.dev is forbidden: {who} cannot list resource "gpuvms" in API group "gpuvm.dev" at the cluster scope')
    code, body = refused(lambda: op.patch_namespaced_custom_object("gpuvm.dev", "v1alpha1", "ml", "gpuvms", "g", {"spec": {}}))
    assert body["message"] == (f'gpuvms.gpuvm.dev "g" is forbidden: {who} cannot patch resource "gpuvms" in API group "gpuvm.dev" '
                               'in the namespace "ml"')
    assert body["details"] == {"name": "g", "group": "gpuvm.dev", "kind": "gpuvms"}
    assert refused(lambda: core.create_namespaced_pod("ml", {"metadata": {"name": "p"}}))[1]["message"] == (
        f'pods is forbidden: {who} cannot create resource "pods" in API group "" in the namespace "ml"')
    assert refused(lambda: core.read_namespaced_config_map("other", "ml"))[0] == 403
    assert refused(lambda: core.list_namespaced_config_map("ml"))[0] == 403
    assert refused(lambda: client.CustomObjectsApi(api(secured, "nobody-knows-me")).list_cluster_custom_object(
        "gpuvm.dev", "v1alpha1", "gpuvms")) == (401, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized",
            "reason": "Unauthorized", "code": 401})
    # Every authenticated identity may read discovery; the anonymous user only /version and health.
    assert client.ApisApi(op_client).get_api_versions().groups
    anonymous = api(secured, None)
    assert client.VersionApi(anonymous).get_code().git_version.startswith("v1.36")
    assert refused(lambda: client.ApisApi(anonymous).get_api_versions())[1]["message"] == (
        'forbidden: User "system:anonymous" cannot get path "/apis/"')  # the client asks for /apis/
    # The access record keeps working, refused requests included.
    assert any(a.verb == "create" and a.resource == "pods" for a in secured.access_log())


def review(api_client: client.ApiClient, **attrs: Any) -> client.V1SubjectAccessReviewStatus:
    spec = client.V1SelfSubjectAccessReviewSpec(**attrs)
    return client.AuthorizationV1Api(api_client).create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(spec=spec)).status


def test_self_subject_access_reviews_answer_from_the_rules(secured: KubeEmulator) -> None:
    op = api(secured, "operator-token")
    groups = {g.name: g for g in client.ApisApi(op).get_api_versions().groups}
    assert "authorization.k8s.io" in groups
    ssar = {r.name: r for r in client.AuthorizationV1Api(op).get_api_resources().resources}["selfsubjectaccessreviews"]
    assert (ssar.verbs, ssar.namespaced, ssar.kind) == (["create"], False, "SelfSubjectAccessReview")

    allowed = review(op, resource_attributes=client.V1ResourceAttributes(verb="watch", group="gpuvm.dev", resource="gpuvms", namespace="ml"))
    assert allowed.allowed and allowed.reason == f'RBAC: allowed by rule 0 of User "{OPERATOR}"'
    denied = review(op, resource_attributes=client.V1ResourceAttributes(verb="watch", group="gpuvm.dev", resource="gpuvms"))
    assert denied.allowed is False and denied.reason is None
    status = review(op, resource_attributes=client.V1ResourceAttributes(verb="patch", group="gpuvm.dev", resource="gpuvms",
                                                                         subresource="status", namespace="x"))
    assert status.allowed
    assert review(op, non_resource_attributes=client.V1NonResourceAttributes(path="/apis/gpuvm.dev", verb="get")).allowed
    assert not review(op, non_resource_attributes=client.V1NonResourceAttributes(path="/metrics", verb="get")).allowed

    pool = urllib3.PoolManager()
    r = pool.request("POST", secured.url + "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                     body=json.dumps({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {}}),
                     headers={"Authorization": "Bearer operator-token", "Content-Type": "application/json"})
    assert r.status == 422 and json.loads(r.data)["message"] == (
        'SelfSubjectAccessReview.authorization.k8s.io "" is invalid: spec.resourceAttributes: Invalid value: "null": '
        "exactly one of nonResourceAttributes or resourceAttributes must be specified")
    r = pool.request("GET", secured.url + "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                     headers={"Authorization": "Bearer alice-token"})
    assert r.status == 405


def whoami(api_client: client.ApiClient) -> dict[str, Any]:
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    return client.AuthenticationV1Api(api_client).create_self_subject_review(body).to_dict()


def test_self_subject_reviews_tell_who_is_asking(secured: KubeEmulator) -> None:
    """``kubectl auth whoami``: the user as authenticated, with the groups the authenticators add."""
    review = whoami(api(secured, "operator-token"))
    assert (review["kind"], review["api_version"]) == ("SelfSubjectReview", "authentication.k8s.io/v1")
    assert review["metadata"]["creation_timestamp"] is not None
    assert review["status"]["user_info"] == {"username": OPERATOR, "uid": None, "extra": None, "groups": [
        "system:serviceaccounts", "system:serviceaccounts:gpuvm-system", "system:authenticated"]}
    assert whoami(api(secured, "alice-token"))["status"]["user_info"]["groups"] == ["system:authenticated"]
    resources = {r.name: r for r in client.AuthenticationV1Api(api(secured, "alice-token")).get_api_resources().resources}
    assert (resources["selfsubjectreviews"].verbs, resources["selfsubjectreviews"].namespaced) == (["create"], False)
    # The anonymous user may not ask (system:basic-user is bound to system:authenticated only).
    assert refused(lambda: whoami(api(secured, None)))[1]["message"] == (
        'selfsubjectreviews.authentication.k8s.io is forbidden: User "system:anonymous" cannot create resource '
        '"selfsubjectreviews" in API group "authentication.k8s.io" at the cluster scope')


def test_with_rbac_off_nobody_is_authenticated(kube_api: client.ApiClient) -> None:
    assert whoami(kube_api)["status"]["user_info"] == {"username": None, "uid": None, "extra": None, "groups": None}


def test_rules_from_the_shipped_rbac_manifests() -> None:
    """Identity.from_rbac over the rendered base install: what the operator's ServiceAccount may do."""
    from tests.deploy.conftest import render

    identity = Identity.from_rbac(render("base"), name=OPERATOR, token="t")
    emu = KubeEmulator(PROJECT_CRDS, identities=[identity])
    with ServerThread(emu, name="kube-emulator"):
        op = api(emu, "t")
        listing = review(op, resource_attributes=client.V1ResourceAttributes(verb="list", group="gpuvm.dev", resource="gpuvms"))
        assert listing.allowed and listing.reason == (
            'RBAC: allowed by ClusterRoleBinding "gpuvm-operator" of ClusterRole "gpuvm-operator" to ServiceAccount '
            '"gpuvm-operator/gpuvm-system"')
        assert not review(op, resource_attributes=client.V1ResourceAttributes(verb="get", group="gpuvm.dev", resource="gpuvms")).allowed
        assert review(op, resource_attributes=client.V1ResourceAttributes(verb="create", resource="events", namespace="ml")).allowed
    other = Identity.from_rbac(render("base"), name="system:serviceaccount:other:gpuvm-operator", token="t")
    assert not any(r.resources for r in other.rules)


def test_identities_set_on_a_running_emulator_refuse_and_change_nothing(kube_thread: ServerThread,
                                                                         co: client.CustomObjectsApi) -> None:
    """RBAC turned on and off at run time (on the emulator's loop); a refused write leaves the object as it was."""
    emu: KubeEmulator = kube_thread.server  # type: ignore[assignment]
    co.create_namespaced_custom_object(G, V, "default", "widgets", {"apiVersion": f"{G}/{V}", "kind": "Widget",
                                                                    "metadata": {"name": "w"}, "spec": {"size": 1}})
    reader = Identity(Identity.service_account_name("default", "reader"), token="reader-token",
                      rules=[Rule(verbs=["get", "list", "watch"], api_groups=["*"], resources=["*"])])
    assert kube_thread.run_sync(emu.identities) is None
    kube_thread.run_sync(emu.set_identities, [reader])
    assert kube_thread.run_sync(emu.identities) == (reader,)
    as_reader = client.CustomObjectsApi(api(emu, "reader-token"))
    assert as_reader.get_namespaced_custom_object(G, V, "default", "widgets", "w")["metadata"]["name"] == "w"
    status, body = refused(lambda: as_reader.patch_namespaced_custom_object(G, V, "default", "widgets", "w", {"spec": {"size": 2}}))
    assert (status, body["message"]) == (403, 'widgets.test.kubeemu.dev "w" is forbidden: User "system:serviceaccount:default:reader" '
                                              'cannot patch resource "widgets" in API group "test.kubeemu.dev" in the namespace "default"')
    r = urllib3.PoolManager().request("POST", emu.url + "/api", headers={"Authorization": "Bearer reader-token"})
    assert r.status == 403 and json.loads(r.data)["message"] == (
        'forbidden: User "system:serviceaccount:default:reader" cannot post path "/api"')
    assert as_reader.get_namespaced_custom_object(G, V, "default", "widgets", "w")["spec"]["size"] == 1  # nothing written
    assert refused(lambda: co.get_namespaced_custom_object(G, V, "default", "widgets", "w"))[0] == 403  # no token: anonymous
    kube_thread.run_sync(emu.set_identities, None)
    assert co.patch_namespaced_custom_object(G, V, "default", "widgets", "w", {"spec": {"size": 2}})["spec"]["size"] == 2
    assert any(a.verb == "patch" and a.resource == "widgets" for a in kube_thread.run_sync(emu.access_log))


def test_without_identities_everything_is_allowed(kube_api: client.ApiClient) -> None:
    assert review(kube_api, resource_attributes=client.V1ResourceAttributes(verb="delete", resource="namespaces")).allowed


def test_cli_rbac_file(tmp_path: Path, capsys: Any) -> None:
    config = tmp_path / "rbac.yaml"
    config.write_text(json.dumps({"identities": [
        {"serviceAccount": "gpuvm-system/gpuvm-operator", "token": "tok", "rules": [
            {"apiGroups": ["gpuvm.dev"], "resources": ["gpuvms"], "verbs": ["list"]}]},
        {"name": "bob", "token": "bob-token", "rbac": ["rbac-objects.yaml"]}]}))
    (tmp_path / "rbac-objects.yaml").write_text(json.dumps({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "b"},
        "roleRef": {"kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "User", "name": "bob"}]}) + "\n---\n" + json.dumps({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "view"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}))
    with emulator_process("--crds", str(DATA), *map(str, PROJECT_CRDS), "--rbac", str(config)) as url:
        pool = urllib3.PoolManager()

        def get(path: str, token: str) -> int:
            return pool.request("GET", url + path, headers={"Authorization": f"Bearer {token}"}).status

        assert get("/apis/gpuvm.dev/v1alpha1/gpuvms", "tok") == 200
        assert get("/apis/gpuvm.dev/v1alpha1/namespaces/default/gpuvms/x", "tok") == 403
        assert get("/api/v1/namespaces/default/pods/x", "bob-token") == 404  # allowed, and absent
        assert get("/api/v1/namespaces/default/pods", "bob-token") == 403
        assert get("/api/v1/namespaces", "wrong") == 401

    for content, message in (
        ("identities: {}", "expected a mapping with a list under 'identities'"),
        ("identities: [{name: a}]", "identities[0]: a token (string) is required"),
        ("identities: [{name: a, serviceAccount: b/c, token: t}]", "identities[0]: give either name or serviceAccount (NAMESPACE/NAME)"),
        ("identities: [{name: a, token: t}, {name: b, token: t}]", "two identities share a token ('a', 'b')"),
        ("identities: [{name: a, token: t, rules: [{resources: [pods]}]}]", "identities[0].rules[0]: expected a PolicyRule with verbs"),
    ):
        config.write_text(content)
        assert main(["kube-emulator", "--rbac", str(config)]) == 2
        assert capsys.readouterr().err.strip() == f"gpuvm-operator kube-emulator: error: --rbac {config}: {message}"
