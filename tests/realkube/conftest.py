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
from pathlib import Path

import pytest
from kubernetes import client, config

from testbed.controlplane import ENV, AssetsMissing, ControlPlane, assets
from testbed.realcluster import audit_flags
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
