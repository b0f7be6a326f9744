"""deploy/examples: valid for Kubernetes 1.36 and for the project's CRDs, and the jobs in them
run the claim wrapper the way the contract says (downward API, claimant label, a parsable
command line, a ServiceAccount bound to gpuvm-claimer)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from controller.cli import build_parser
from controller.demand import CLAIMANT_LABEL
from controller.gpuvm import GROUP
from testbed.kubeemu import KubeEmulator
from testbed.sandbox import crd_files
from testbed.serving import ServerThread
from tests.deploy.conftest import ROOT, of_kind
from tests.deploy.test_manifests import KUBERNETES_VERSION

EXAMPLES = ROOT / "deploy" / "examples"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict) and "kind" in d]


KUBE_EXAMPLES = sorted(p for p in EXAMPLES.glob("*.yaml") if documents(p))
ALL = [d for p in KUBE_EXAMPLES for d in documents(p)]
BUILTIN = [d for d in ALL if not d["apiVersion"].startswith(GROUP)]
CUSTOM = [d for d in ALL if d["apiVersion"].startswith(GROUP)]


def test_every_example_file_is_checked() -> None:
    """Each document goes to one of the two validations below, one case per document: a file of
    GpuVms only has no Kubernetes kinds to validate, and so no case of its own there."""
    names = {p.name for p in KUBE_EXAMPLES}
    assert {"ai-job.yaml", "two-jobs-one-vm.yaml", "gpuvm-auto.yaml", "gpuvm-by-name.yaml"} <= names
    assert BUILTIN and CUSTOM and len(BUILTIN) + len(CUSTOM) == len(ALL)


@pytest.mark.parametrize("doc", BUILTIN, ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_builtin_kinds_are_valid_kubernetes(doc: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.fixture(scope="module")
def crd_api() -> Iterator[client.CustomObjectsApi]:
    thread = ServerThread(KubeEmulator(crd_files(ROOT / "deploy" / "crds")), name="kube-emulator").start()
    configuration = client.Configuration()
    configuration.host = thread.server.url  # type: ignore[attr-defined]
    api_client = client.ApiClient(configuration)
    client.CoreV1Api(api_client).create_namespace({"metadata": {"name": "ml"}})
    try:
        yield client.CustomObjectsApi(api_client)
    finally:
        api_client.close()
        thread.stop()


@pytest.mark.parametrize("doc", CUSTOM, ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_custom_objects_are_valid_for_the_crds(doc: dict[str, Any], crd_api: client.CustomObjectsApi) -> None:
    group, version = doc["apiVersion"].split("/")
    plural = {"GpuVm": "gpuvms", "GpuVmClaim": "gpuvmclaims"}[doc["kind"]]
    crd_api.create_namespaced_custom_object(group, version, doc["metadata"]["namespace"], plural, doc,
                                            dry_run="All", field_validation="Strict")


JOBS = of_kind(ALL, "Job")


def test_examples_have_jobs() -> None:
    assert len(JOBS) == 3


@pytest.mark.parametrize("job", JOBS, ids=lambda j: j["metadata"]["name"])
def test_jobs_claim_with_the_downward_api(job: dict[str, Any]) -> None:
    template = job["spec"]["template"]
    assert template["metadata"]["labels"][CLAIMANT_LABEL] == "true"
    (container,) = template["spec"]["containers"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_UID": "metadata.uid", "POD_NAMESPACE": "metadata.namespace"}
    argv = [*container["command"], *container.get("args", [])]
    assert argv[:2] == ["gpuvm-operator", "claim"]
    split = argv.index("--")
    args = build_parser("claim").parse_args(argv[1:split])
    assert args.command == "claim" and argv[split + 1:], "a GpuVm and a command after --"
    gpuvms = {d["metadata"]["name"]: d for d in of_kind(ALL, "GpuVm")}
    assert gpuvms[args.gpuvm]["spec"]["desiredState"] == "Auto", "claims start only a GpuVm in Auto"
    account = template["spec"]["serviceAccountName"]
    bindings = [b for b in of_kind(ALL, "RoleBinding")
                if b["roleRef"]["name"] == "gpuvm-claimer"
                and any(s["name"] == account for s in b["subjects"])]
    assert bindings and all(b["metadata"]["namespace"] == job["metadata"]["namespace"] for b in bindings)


def test_two_jobs_share_one_vm() -> None:
    shared = documents(EXAMPLES / "two-jobs-one-vm.yaml")
    targets = []
    for job in of_kind(shared, "Job"):
        command = job["spec"]["template"]["spec"]["containers"][0]["command"]
        targets.append(command[2])
    assert targets == ["a100-shared", "a100-shared"]
