"""The real-control-plane tier: kube-apiserver, etcd and kube-controller-manager on loopback.

What depends on the API server's own semantics or speed is tested here, on the real binaries
(``testbed/controlplane.py``), not on the emulator. The binaries come from the directory named
by ``GPUVM_KUBE_ASSETS`` (the envtest convention). Unset, every test of this tier skips and says
why, so a fresh clone without the assets still passes ``./dev test``; set but unusable, the tier
fails instead of skipping: CI sets it, and a tier that silently skipped there would prove nothing.

One control plane serves the whole session (starting one takes about 10 s); tests keep out of
each other's way by namespace.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from testbed.controlplane import ENV, AssetsMissing, ControlPlane, assets
from testbed.kubeemu import KubeEmulator
from testbed.realcluster import audit_flags
from testbed.sandbox import crd_files, wait_for, write_kubeconfig
from testbed.serving import ServerThread
from tests.realkube.endpoints import API, Answer, Endpoint, emulator_endpoint, kubectl, real_endpoint
from tests.realkube.operated import cluster, world_factory  # noqa: F401 - fixtures for the operator's tests

ROOT = Path(__file__).parents[2]


def _assets_or_skip() -> None:
    """Skip when the variable is unset; when set, a broken directory is an error, not a skip."""
    if not os.environ.get(ENV):
        try:
            assets()
        except AssetsMissing as e:
            pytest.skip(f"real control plane tier: {e}")


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    _assets_or_skip()
    workdir = tmp_path_factory.mktemp("control-plane")
    # The audit log shows what each ServiceAccount under test asked for and was answered.
    plane = ControlPlane(workdir, extra_apiserver_flags=audit_flags(workdir / "audit"))
    try:
        plane.start()
    except BaseException:
        plane.stop()
        raise
    yield plane
    plane.stop()


@pytest.fixture(scope="session")
def admin_api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    """An official-client ApiClient as cluster-admin (client certificates of ``system:masters``)."""
    api = config.new_client_from_config(str(control_plane.kubeconfig))
    yield api
    api.close()


@pytest.fixture
def namespace(admin_api: client.ApiClient) -> Iterator[str]:
    """A namespace of the test's own, deleted afterwards (the namespace controller empties it)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(admin_api)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def crds(control_plane: ControlPlane) -> ControlPlane:
    """deploy/crds/ applied to the real server with the real kubectl, as a user installs them, and
    served: Established, and a list of each answers (the first request after Established may still
    race the new API's registration on a busy machine)."""
    kubectl(control_plane.kubeconfig, "apply", "-f", "deploy/crds/")
    kubectl(control_plane.kubeconfig, "wait", "--for=condition=Established", "--timeout=120s",
            "crd/gpuvms.gpuvm.dev", "crd/gpuvmclaims.gpuvm.dev")
    api = config.new_client_from_config(str(control_plane.kubeconfig))
    try:
        custom = client.CustomObjectsApi(api)

        def served() -> bool:
            try:
                return all(custom.list_cluster_custom_object("gpuvm.dev", "v1alpha1", plural) is not None
                           for plural in ("gpuvms", "gpuvmclaims"))
            except client.ApiException:
                return False

        wait_for(served, 60, interval=0.2, what=f"{API} to be served")
    finally:
        api.close()
    return control_plane


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    """The emulator with the same CRDs, to compare its answers with the real server's. Bookmarks
    every second (the shipped default is 30 s) so a bookmark test need not wait long."""
    thread = ServerThread(KubeEmulator(crd_files(ROOT / "deploy" / "crds"), bookmark_interval=1.0), name="kube-emulator").start()
    try:
        url = thread.server.url  # type: ignore[attr-defined]
        yield emulator_endpoint(url, write_kubeconfig(tmp_path_factory.mktemp("emulator") / "kubeconfig", url))
    finally:
        thread.stop()


@pytest.fixture(scope="session")
def real(crds: ControlPlane) -> Endpoint:
    return real_endpoint(crds.url, crds.certs, crds.kubeconfig)


@dataclass
class Pair:
    """The real server and the emulator, each with a namespace of the same name for this test."""

    real: Endpoint
    emulator: Endpoint
    namespace: str

    def both(self, method: str, path: str, body: Any = None, **kwargs: Any) -> dict[str, Answer]:
        """The same request to both; ``{ns}`` in ``path`` is the test's namespace."""
        path = path.format(ns=self.namespace)
        return {e.name: e.call(method, path, body, **kwargs) for e in (self.real, self.emulator)}


@pytest.fixture
def pair(real: Endpoint, emulator: Endpoint, namespace: str) -> Pair:
    created = emulator.call("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
    assert created.status == 201, created
    return Pair(real, emulator, namespace)
